"""Every example in every `--help` runs as written (issue 20).

The examples are read from the help texts themselves. Each runs in a temporary folder (its relative paths
land there) with the embedded data: the cheap ones for real, with tiny sizes appended (`TINY`); those that
need a real dataset, the network or many minutes are parsed and their configuration resolved (recipe keys,
preset names, `--set` keys), with the training or evaluation itself stubbed out (`_dry`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hexa_zoo import cli

HELP_PATHS = [[], ["zoo"], *[["zoo", c] for c in ("list", "info", "fetch", "convert", "publish", "mirror")], ["pretrain"],
              ["transfer"], *[["transfer", p] for p in ("linear", "knn", "lowshot-svm", "semisup", "fewshot",
                                                          "detection", "manyshot", "adversarial", "robustness",
                                                          "finetune", "suite")],
              ["leaderboard"], ["demo"], ["study"]]

# Sizes appended to the examples that run for real, so each takes a few seconds on a CPU.
TINY = {
    "pretrain": ["--epochs", "1", "--batch-size", "8", "--set", "limit_images=16", "workers=0", "threads=1",
                 "augment.image_size=32", "moco.queue_size=16", "moco.hidden_dim=32", "monitor.every=0",
                 "tensorboard=false", "progress=false"],
    "knn": ["--set", "resize=32", "crop=32", "max_per_class=10", "ks=[5]"],
    "linear": ["--set", "resize=32", "crop=32", "max_per_class=10", "fast_weight_decays=[0.001]", "fast_max_iter=20"],
    "fewshot": ["--set", "resize=32", "crop=32", "max_per_class=10", "episodes=4", "shots=[1]", "queries=5",
                "classifiers=[centroid]"],
}
# Minutes on a CPU even at tiny sizes (features of every image, training): arguments and configuration only.
HEAVY_TRANSFER = {"lowshot-svm", "semisup", "detection", "manyshot", "adversarial", "robustness", "finetune", "suite"}
REAL_DATA = re.compile(r"(^|=)/(data|datasets|shared)/")


def help_text(path: list[str], capsys) -> str:
    if not path:
        cli.main(["--help"])
    else:
        with pytest.raises(SystemExit):
            cli.main([*path, "--help"])
    return capsys.readouterr().out


def examples(text: str) -> list[list[str]]:
    """The commands in a help text: lines (joined over trailing backslashes) that are `hexa ...` or
    `torchrun ...`, at the start of a line or after 'Example: ' / 'report: '."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        m = re.search(r"(?:^\s*|(?:Example|report): )((?:hexa|torchrun) .*)$", line)
        if m:
            found.append(shlex.split(m[1], comments=True))
    return found


def all_examples(capsys) -> list[list[str]]:
    seen, ordered = set(), []
    for path in HELP_PATHS:
        for argv in examples(help_text(path, capsys)):
            if tuple(argv) not in seen:
                seen.add(tuple(argv))
                ordered.append(argv)
    return ordered


def test_every_help_names_examples_and_the_top_level_lists_every_protocol(capsys):
    from transfer.suite import PROTOCOLS

    for path in HELP_PATHS:
        assert examples(help_text(path, capsys)), f"hexa {' '.join(path)} --help has no example"
    top = help_text([], capsys)
    assert all(name in top for name in PROTOCOLS) and "suite" in top
    assert "limit_images" in help_text(["pretrain"], capsys)
    study = help_text(["study"], capsys)
    assert "and for every metric the difference HEXA - baseline with its confidence intervals and a verdict." in study


def _dry(monkeypatch) -> None:
    """Stub what runs long, keeping what checks the arguments (recipes, presets, --set keys)."""
    import orchestration.demo
    import orchestration.study
    import pretrain.trainer
    import transfer.suite
    from pretrain.trainer import TrainResult
    from transfer.common import resolve_config

    def resolve_only(name, model, data, out, *, preset, overrides=(), seed=0):
        module = transfer.suite.protocol_module(name)
        if preset not in module.PRESETS:
            raise AssertionError(f"{name} has no preset {preset}")
        resolve_config(type(module.PRESETS[preset]), module.PRESETS, preset, overrides)

    monkeypatch.setattr(transfer.suite, "run_protocol", resolve_only)
    monkeypatch.setattr(transfer.suite, "run_suite", lambda *a, **k: ([], {}))
    monkeypatch.setattr(pretrain.trainer, "train", lambda cfg, resume=None: TrainResult(Path(cfg.out), None, {}))
    monkeypatch.setattr(orchestration.demo, "_run", lambda args, methods, out: 0)
    monkeypatch.setattr(orchestration.study, "run_study",
                        lambda *a, **k: {"comparisons": {}, "mode": "", "seeds": [], "cells_done": 0,
                                         "cells_planned": 0})


def _dry_leaderboard(argv: list[str]) -> None:
    from leaderboards.cli import build_parser

    build_parser().parse_args(argv)


def _dry_zoo(argv: list[str]) -> None:
    from hexa_zoo.zoo_cli import _parser

    _parser().parse_args(argv)


def test_every_help_example_runs(tmp_path, monkeypatch, capsys, r18_file):
    from safetensors.torch import load_file

    from hexa_zoo.publish import publish

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "features"))
    publish(load_file(r18_file), "hexa_moco_r18", tag="embedded")  # what the transfer examples evaluate
    commands = all_examples(capsys)
    real, dry = [], []
    for argv in commands:
        if argv[0] == "torchrun":
            dry.append(argv[argv.index("hexa_zoo") + 1:])
            continue
        argv = argv[1:]
        heavy = (any(REAL_DATA.search(a) for a in argv) and argv[:2] != ["zoo", "list"]) \
            or argv[0] in ("demo", "study") or argv[:2] == ["zoo", "fetch"] or "--push-to-hub" in argv or "--push" in argv \
            or "--published" in argv \
            or any(a.endswith(".pth.tar") for a in argv) or "--studies" in argv or "--refresh-published" in argv \
            or (argv[0] == "transfer" and argv[1] in HEAVY_TRANSFER) or (argv[0] == "leaderboard" and "--out" not in argv) \
            or any(a.startswith("hexa_demo/") for a in argv)  # after a `hexa demo`
        (dry if heavy else real).append(argv)
    # the order a user would follow: train, then convert / publish its checkpoint, evaluate, compile
    order = {"pretrain": 0, "zoo": 1, "transfer": 2, "leaderboard": 3}
    real.sort(key=lambda a: order.get(a[0], 1))
    assert len(real) >= 10 and len(dry) >= 15, (real, dry)

    for argv in real:
        if argv[0] == "pretrain":
            argv = argv + TINY["pretrain"]
        if argv[0] == "transfer":
            argv = argv + TINY[argv[1]]
        if any("runs/hexa_moco_r18/checkpoints/" in a for a in argv):  # the newest checkpoint the example run wrote
            newest = sorted((tmp_path / "runs" / "hexa_moco_r18" / "checkpoints").glob("checkpoint_*.pt"))[-1]
            argv = [str(newest) if "runs/hexa_moco_r18/checkpoints/" in a else a for a in argv]
        code = cli.main(argv)
        out = capsys.readouterr()
        assert code == 0, f"hexa {shlex.join(argv)} failed:\n{out.err[-2000:]}"

    _dry(monkeypatch)
    for argv in dry:
        if argv[0] == "leaderboard":
            _dry_leaderboard(argv[1:])
        elif argv[0] == "zoo":
            _dry_zoo(argv[1:])
        else:
            code = cli.main(argv)
            err = capsys.readouterr().err
            assert code == 0, f"hexa {shlex.join(argv)} (arguments only) failed:\n{err[-2000:]}"
