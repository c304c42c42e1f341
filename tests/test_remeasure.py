"""Re-measuring published rows (issue 29, item 4): each published row whose model the zoo serves shows the one
`hexa transfer` command that measures it here, every such command parses with `hexa transfer`'s own parser and
resolves its preset and overrides, the record it writes lands in the published row's cell; the ssl-transfer suite
runs what it has data for and names the rest; its `--plan` prices the runs and runs nothing."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hexa_zoo import cli
from hexa_zoo.releases import release_for
from leaderboards import remeasure
from leaderboards.collect import table_of
from leaderboards.placement import place
from leaderboards.published import PUBLISHED_CSV, published_entries
from leaderboards.variants import our_variant
from transfer import ssl_transfer_suite
from transfer.cli import _parser


def _commands(entries) -> dict[tuple, tuple[str, list[str], str]]:
    """{(table, row_id): (row command, per-benchmark commands, why none)} of the published entries."""
    return {(e["table"], e["row_id"]): (e["remeasure"], [c for c in e["remeasure_each"].split("\n") if c],
                                        e["remeasure_why"]) for e in entries}


@pytest.fixture(scope="module")
def entries():
    return published_entries(PUBLISHED_CSV)


def test_every_published_row_whose_model_loads_has_its_command(entries):
    rows = list(csv.DictReader(open(PUBLISHED_CSV, newline="", encoding="utf-8")))
    commands = _commands(entries)
    by_row = {}
    for e in entries:
        by_row.setdefault((e["table"], e["row_id"]), []).append(e)
    expected_with = 0
    for key, group in by_row.items():
        cmd, each, why = commands[key]
        first = group[0]
        release = release_for(first["model"], first["epochs"])
        runnable = all(remeasure.runner_for(first["protocol"], e["benchmark"]) for e in group)
        if release is not None and runnable:
            expected_with += 1
            assert each and not why, key
            assert all(f"--model {release.name}" in c for c in [cmd, *each] if c), key
            assert len(each) == len({e["benchmark"] for e in group})
        else:
            assert not cmd and not each and why, key
    # the 14 models of ssl-transfer each have their many-shot linear, fine-tuning and CD-FSL rows re-measurable;
    # MoCo's README rows (linear, detection) and the SwAV paper's semi-supervised rows add theirs
    assert expected_with >= 14 * 3 + 5
    assert len(rows) > 1000
    byol = [commands[k] for k, g in by_row.items() if g[0]["model"] == "BYOL" and k[0] == "manyshot"]
    assert len(byol) == 1
    cmd, each, _ = byol[0]
    assert ("hexa transfer manyshot --model byol_r50.in1k_ep1000 --dataset dtd --data /datasets/dtd --out results/ "
            "--preset paper") in each
    assert cmd.startswith("hexa transfer suite --suite ssl-transfer --model byol_r50.in1k_ep1000 --out results/ "
                          "--only manyshot --data-for aircraft=/datasets/aircraft")
    assert len(each) == 11 and cmd.count("--data-for") == 11
    # rows whose protocol is not run here say why, briefly
    why = {commands[k][2] for k, g in by_row.items() if g[0]["protocol"] == "ssl-transfer-detection"}
    assert why == {"not implemented here: " + ssl_transfer_suite.EVALUATIONS[4].missing}
    kornblith = {commands[k][2] for k, g in by_row.items() if k[0] == "fewshot_kornblith"}
    assert len(kornblith) == 1 and "many-shot datasets" in kornblith.pop()


def _resolve(protocol: str, preset: str, overrides: list[str]) -> None:
    """A protocol's preset and `--set` overrides resolved as its run would (unknown keys raise)."""
    from transfer.common import resolve_config
    from transfer.protocols import PROTOCOLS

    module = PROTOCOLS[protocol].module
    resolve_config(type(module.PRESETS[preset]), module.PRESETS, preset, overrides)


def benchmark_of(args) -> str:
    """The benchmark a parsed `hexa transfer` command's record is named, computed as each protocol's run() does."""
    from transfer.common import benchmark_name, dataset_name, resolve_config
    from transfer.protocols.detection import PRESETS as DETECTION
    from transfer.protocols.detection.config import benchmark_for

    name = getattr(args, "dataset", None) or dataset_name(args.data)
    if args.protocol == "fewshot":  # the CD-FSL layout under --data names it (readers/cdfsl.py)
        return benchmark_name(name, "cdfsl")
    if args.protocol == "semisup":
        labels = next((o.split("=")[1] for o in args.overrides if o.startswith("labels=")), "1percent")
        return benchmark_name(name, "semisup_" + labels.replace("percent", "pct"))
    if args.protocol == "detection":
        cfg = resolve_config(type(DETECTION[args.preset]), DETECTION, args.preset, args.overrides)
        return benchmark_for(args.data, "voc", cfg, "resnet50")
    return benchmark_name(name, args.protocol)


def test_each_command_parses_with_hexa_transfers_parser_and_its_record_lands_in_the_rows_cell(entries):
    parser = _parser()
    seen = 0
    for e in entries:
        each = [c for c in e["remeasure_each"].split("\n") if c]
        if not each:
            continue
        mine = []
        for line in each:
            argv = shlex.split(line)
            assert argv[:2] == ["hexa", "transfer"]
            args = parser.parse_args(argv[2:])  # argparse exits on an unknown flag or a --dataset it does not know
            overrides = ([f"dataset={args.dataset}"] if getattr(args, "dataset", None) else []) + args.overrides
            _resolve(args.protocol, args.preset, overrides)
            if benchmark_of(args) == e["benchmark"]:
                mine.append(args)
        assert len(mine) == 1, (e["table"], e["row_id"], e["benchmark"])
        variant = our_variant(mine[0].protocol, mine[0].preset)
        assert variant == e["protocol"]
        # the record that command writes goes where `hexa leaderboard` puts records: the published number's cell
        record = {"benchmark": benchmark_of(mine[0]), "protocol": mine[0].protocol, "preset": mine[0].preset,
                  "dataset": {"name": getattr(mine[0], "dataset", None) or Path(mine[0].data).name.lower()}}
        assert (e["table"], e["metric"]) in place(table_of(record), e["metric"].split(" ")[-1], variant)
        seen += 1
    assert seen > 400
    for e in entries:
        if e["remeasure"]:
            args = parser.parse_args(shlex.split(e["remeasure"])[2:])
            if args.protocol == "suite":
                assert args.suite == "ssl-transfer"
                runs, _ = ssl_transfer_suite.plan_runs(ssl_transfer_suite.parse_data_for(args.data_for),
                                                       args.only.split(","))
                assert {r.dataset for r in runs} == {d.split("=")[0] for d in args.data_for}


def test_every_runner_reproduces_its_variant_and_the_suite_covers_the_papers_tables():
    from leaderboards import ssl_transfer

    for runner in remeasure.RUNNERS:
        assert our_variant(runner.protocol, runner.preset) == runner.variant, runner
    names = {ev.name for ev in ssl_transfer_suite.EVALUATIONS} | {ssl_transfer_suite.QUOTED}
    assert names == set(ssl_transfer.PROTOCOLS)
    # the suite's dataset names are the ones the transcription's datasets become in the published benchmarks
    transcribed = {}
    for row in csv.DictReader(open(ssl_transfer.__file__.replace("ssl_transfer.py", "sources/ssl_transfer_tables.csv"),
                                   newline="", encoding="utf-8")):
        transcribed.setdefault(row["protocol"], set()).add(ssl_transfer.dataset_key(row["dataset"]))
    for ev in ssl_transfer_suite.EVALUATIONS:
        if ev.name.startswith("detection"):
            assert transcribed[ev.name] == {"voc07+12"} and ev.datasets == ("voc0712",)
        else:
            assert transcribed[ev.name] == set(ev.datasets), ev.name


# ------------------------------------------------------------------------------------ the ssl-transfer suite

def _jpg(path: Path, rng, size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """DTD's layout (3 classes, 6/3/3 images) and EuroSAT's (5 classes of 22)."""
    from test_transfer_manyshot import make_dtd

    root = tmp_path_factory.mktemp("ssl_transfer_data")
    rng = np.random.default_rng(1)
    for c in range(5):
        for i in range(22):
            _jpg(root / "EuroSAT" / "2750" / f"Class{c}" / f"{i}.jpg", rng, size=(24, 24))
    return {"dtd": make_dtd(root / "dtd_root"), "eurosat": root / "EuroSAT"}


TINY = ["manyshot.resize=32", "manyshot.crop=32", "manyshot.wd_values=3", "finetune.steps=2", "finetune.batch_size=4",
        "finetune.lrs=[0.01]", "finetune.ws=[0.0]", "finetune.image_size=32", "finetune.workers=0",
        "fewshot.shots=[5]", "fewshot.episodes=6", "fewshot.resize=37", "fewshot.crop=32"]


def test_the_ssl_transfer_suite_runs_what_it_has_data_for_and_names_the_rest(datasets, r18_file, tmp_path,
                                                                           monkeypatch, capsys):
    import json

    from leaderboards.compiler import compile_leaderboard

    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    code = cli.main(["transfer", "suite", "--suite", "ssl-transfer", "--model", str(r18_file), "--out", str(out),
                     "--data-for", f"dtd={datasets['dtd']}", "--data-for", f"eurosat={datasets['eurosat']}",
                     "--set", *TINY])
    printed = capsys.readouterr().out
    assert code == 0, printed
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted(r["benchmark"] for r in records) == ["dtd_finetune", "dtd_manyshot", "eurosat_cdfsl"]
    for name in ("fewshot_kornblith: not implemented here", "detection_voc_frozen: not implemented here",
                 "detection_voc_finetune: not implemented here", "manyshot_linear: no data for aircraft",
                 "fewshot_cdfsl: no data for cropdiseases, isic, chestx"):
        assert f"not run: {name}" in printed
    # the records land beside ssl-transfer's rows; as a release (its name in the record) they show their difference
    for path in out.glob("*.json"):
        rec = json.loads(path.read_text())
        rec["model"].update(name="byol_r50.in1k_ep1000", arch="resnet50")
        path.write_text(json.dumps(rec))
    board = compile_leaderboard([out], tmp_path / "board", plots=False)
    for table, column in (("manyshot", "dtd top1"), ("finetune", "dtd top1"),
                          ("cdfsl", "eurosat acc_5w5s_centroid")):
        frame = board.tables[table]
        ours = frame[frame["kind"] == "ours"]
        assert len(ours) == 1 and np.isfinite(ours[column].iloc[0]), table
        byol = frame[(frame["kind"] == "published") & (frame["model"] == "BYOL")]
        delta = f"{ours[column].iloc[0] - byol[column].iloc[0]:+.2f} vs published"
        section = board.site.read_text().split(f'data-table="{table}"')[1].split("</table>")[0]
        assert delta in section, table


def test_the_suite_refuses_a_dataset_it_does_not_know(capsys):
    assert cli.main(["transfer", "suite", "--suite", "ssl-transfer", "--model", "x", "--out", "o",
                     "--data-for", "imagenet=/datasets/imagenet"]) == 1
    assert "DATASET is one of aircraft" in capsys.readouterr().err


def test_plan_prices_the_runs_from_the_measured_rates_and_runs_nothing(datasets, tmp_path, monkeypatch, capsys):
    import transfer.suite
    from orchestration.step_rates import read_rates, workload_rate

    def refuse(*a, **k):
        raise AssertionError("--plan ran a protocol")

    monkeypatch.setattr(transfer.suite, "run_protocol", refuse)
    out = tmp_path / "never"
    code = cli.main(["transfer", "suite", "--suite", "ssl-transfer", "--model", "byol_r50.in1k_ep1000", "--out",
                     str(out), "--data-for", f"dtd={datasets['dtd']}", "--data-for", "cifar10=/nowhere/cifar10",
                     "--plan"])
    printed = capsys.readouterr().out
    assert code == 0 and not out.exists()
    rates = read_rates()
    forward, train = workload_rate(rates, "features"), workload_rate(rates, "supervised")
    # by hand: DTD counted (18 train, 9 val, 9 test), CIFAR-10 at its standard 50000 / 10000; finetune's grid is
    # 4 lr x 5 wd = 20 points of 5000 steps of 64, plus the refit, each scored on val (20% of train without one)
    images = {"manyshot dtd": (36, 0), "manyshot cifar10": (60000, 0),
              "finetune dtd": (20 * 9 + 9, 21 * 5000 * 64), "finetune cifar10": (20 * 10000 + 10000, 21 * 5000 * 64)}
    total = sum(f / forward + t / train for f, t in images.values()) / 3600
    assert f"Total: **{total:.2f} GPU-hours** for 4 run(s)" in printed
    assert "| manyshot dtd | paper |" in printed and "| counted |" in printed and "| standard splits |" in printed
    assert "not run: fewshot_kornblith: not implemented here" in printed


def test_plan_goes_up_a_floor_only_through_the_router(tmp_path):
    """transfer/ never imports orchestration: `hexa` sends --plan there; transfer's own main refuses it."""
    from hexa_zoo.errors import ConfigError
    from transfer.cli import main

    with pytest.raises(ConfigError, match="--plan is answered by the `hexa` command"):
        main(["suite", "--suite", "ssl-transfer", "--model", "x", "--out", str(tmp_path), "--plan"])
    assert cli.PLAN == "orchestration.suite_plan"
    source = Path(ssl_transfer_suite.__file__).read_text() + Path(_parser.__code__.co_filename).read_text()
    assert not re.search(r"^\s*(from|import) (orchestration|leaderboards)", source, flags=re.M)
