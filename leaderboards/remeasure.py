"""The one command that re-measures a published row on the user's machine, with this project's copy of its protocol.

A published number is re-measured by the `hexa transfer` protocol and preset that reproduce its protocol variant
(`variants.OUR_PRESETS`), on the zoo's release of its method and epochs (`hexa_zoo.releases`). `RUNNERS` is the one
place that maps a published benchmark to its command: ssl-transfer's evaluations come from the suite that runs
them (`transfer.ssl_transfer_suite.EVALUATIONS`), the other variants are listed here. The record such a command
writes has the benchmark and variant of the published row, so `hexa leaderboard` places it beside that row with
its difference (tests/test_remeasure.py holds every command to that).

A row whose protocol variant no preset here reproduces, or whose method the zoo serves no release of, gets no
command; `Remeasure.why` says which. Data paths in the commands are placeholders under `/datasets/`, named so
that the record's benchmark comes out as the published one (`/datasets/imagenet` -> `imagenet_linear`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from hexa_zoo.releases import release_for
from transfer.ssl_transfer_suite import EVALUATIONS

from . import ssl_transfer

DATA = "/datasets"
OUT = "results/"


@dataclass(frozen=True)
class Runner:
    """How one variant's benchmark is measured here: `hexa transfer PROTOCOL --preset PRESET --data DATA ...`."""

    variant: str
    pattern: str                   # the published benchmark; named groups fill `data` and `extra`
    protocol: str
    preset: str
    data: str                      # the --data path, e.g. "/datasets/{ds}"
    dataset_flag: bool = False     # add --dataset {ds}
    extra: tuple[str, ...] = ()    # more arguments, e.g. ("--set", "labels={pct}percent")
    in_suite: bool = False         # one of the ssl-transfer suite's evaluations (`--suite ssl-transfer` runs it)


def _ssl_transfer_runners() -> tuple[Runner, ...]:
    runners = []
    for ev in EVALUATIONS:
        if not ev.protocol:
            continue
        benchmark, variant = ssl_transfer.PROTOCOLS[ev.name]
        pattern = re.escape(benchmark).replace(re.escape("{ds}"), f"(?P<ds>{'|'.join(ev.datasets)})")
        runners.append(Runner(variant, pattern, ev.protocol, ev.preset, f"{DATA}/{{ds}}", ev.dataset_flag,
                              in_suite=True))
    return tuple(runners)


RUNNERS: tuple[Runner, ...] = (
    Runner("moco-lincls", r"imagenet_linear", "linear", "paper", f"{DATA}/imagenet"),
    Runner("swav-semisup", r"imagenet_semisup_(?P<pct>1|10)pct", "semisup", "paper", f"{DATA}/imagenet",
           extra=("--set", "labels={pct}percent")),
    Runner("moco-detectron2", r"voc0712_det_r50c4", "detection", "paper", f"{DATA}/VOCdevkit"),
    *_ssl_transfer_runners(),
)

# Why a variant has no runner: the code that measured it is not the one our presets follow.
NOT_HERE = {
    "swav-eval_linear": "not run here: swav's eval_linear.py recipe (our linear preset follows MoCo's main_lincls)",
    "simclr": "not run here: SimCLR's own TensorFlow linear evaluation and fine-tuning",
    "pcl": "not run here: PCL's eval_svm_voc.py low-shot SVMs (ours follow VISSL's)",
    "esvit": "not run here: COCO Mask R-CNN R50-C4 1x as EsViT quotes it",
    "ssl-transfer-quoted": "each method's own linear protocol, as the paper quotes it (the moco-lincls rows of "
                           "`imagenet_linear` give our linear command)",
    "hexa-paper": "the protocol behind these numbers is not stated, so nothing can re-measure them",
}
@dataclass(frozen=True)
class Remeasure:
    """A published row's command(s), or why it has none."""

    command: str = ""                  # the one command measuring the whole row
    each: tuple[str, ...] = ()         # one `hexa transfer PROTOCOL` command per benchmark of the row
    why: str = ""                      # why there is no command ("" when there is one)


def runner_for(variant: str, benchmark: str) -> tuple[Runner, dict[str, str]] | None:
    for runner in RUNNERS:
        if runner.variant == variant and (m := re.fullmatch(runner.pattern, benchmark)):
            return runner, m.groupdict()
    return None


def why_not(variant: str, benchmark: str) -> str:
    """Why no command here measures `benchmark` as `variant` did."""
    for ev in EVALUATIONS:
        bench, ev_variant = ssl_transfer.PROTOCOLS[ev.name]
        if ev_variant == variant and not ev.protocol and re.fullmatch(bench.replace("{ds}", r"[a-z0-9]+"), benchmark):
            return f"not implemented here: {ev.missing}"
    return NOT_HERE.get(variant, f"not run here: no preset reproduces {variant}")


def protocol_command(runner: Runner, groups: dict[str, str], model: str) -> str:
    argv = ["hexa", "transfer", runner.protocol, "--model", model]
    if runner.dataset_flag:
        argv += ["--dataset", groups["ds"]]
    argv += ["--data", runner.data.format(**groups), "--out", OUT, "--preset", runner.preset]
    argv += [a.format(**groups) for a in runner.extra]
    return shlex.join(argv)


def suite_command(protocol: str, datasets: list[str], model: str) -> str:
    """The ssl-transfer suite on `datasets` with one protocol: the one command for a row folded across datasets."""
    argv = ["hexa", "transfer", "suite", "--suite", "ssl-transfer", "--model", model, "--out", OUT,
            "--only", protocol]
    for ds in datasets:
        argv += ["--data-for", f"{ds}={DATA}/{ds}"]
    return shlex.join(argv)


def remeasure_row(method: str, epochs: str, variant: str, benchmarks: list[str]) -> Remeasure:
    """The command(s) of one published row: its method and epochs, variant, and the benchmarks its cells hold."""
    found = [runner_for(variant, b) for b in benchmarks]
    missing = [b for b, f in zip(benchmarks, found) if f is None]
    if missing:
        return Remeasure(why=why_not(variant, missing[0]))
    release = release_for(method, epochs)  # spellings (MoCo v2, MoCo-v2) and aliases folded there
    if release is None:
        return Remeasure(why=f"the zoo serves no release of {method}" + (f" ({epochs} epochs)" if epochs else ""))
    each = tuple(protocol_command(r, g, release.name) for r, g in found)
    if len(each) == 1:
        return Remeasure(each[0], each)
    protocols = {r.protocol for r, _ in found}
    if len(protocols) == 1 and all(r.in_suite for r, _ in found):
        return Remeasure(suite_command(protocols.pop(), [g["ds"] for _, g in found], release.name), each)
    return Remeasure("", each, why="its cells are measured by several commands (below)")


def annotate(entries: list[dict]) -> list[dict]:
    """Give each published entry its row's `remeasure` command, `remeasure_each` (one per line) and
    `remeasure_why`; entries of one row are those sharing table and row_id."""
    rows: dict[tuple, list[dict]] = {}
    for e in entries:
        rows.setdefault((e["table"], e["row_id"]), []).append(e)
    for group in rows.values():
        first = group[0]
        benchmarks = list(dict.fromkeys(e["benchmark"] for e in group))
        r = remeasure_row(first["model"], first["epochs"], first["protocol"], benchmarks)
        for e in group:
            e.update(remeasure=r.command, remeasure_each="\n".join(r.each), remeasure_why=r.why)
    return entries

