"""The ssl-transfer suite: each evaluation of ssl-transfer's tables (Ericsson et al., CVPR 2021) that this project
implements, on every dataset it is given.

    hexa transfer suite --suite ssl-transfer --model byol_r50.in1k_ep1000 --out results/ \\
        --data-for dtd=/datasets/dtd --data-for eurosat=/datasets/EuroSAT

`--data-for DATASET=PATH` names one of the paper's datasets (as our readers name them: `dtd`, `eurosat`, ...) and
where it is; `--data-for embedded=embedded` runs each implemented evaluation's CPU-size preset on the embedded
dataset instead. For each dataset given, every evaluation of the paper on that dataset runs (many-shot linear and
fine-tuning on a many-shot dataset, CD-FSL episodes on a CD-FSL one), each writing the record its protocol
writes, so `hexa leaderboard` places it beside the paper's row of the same model. What cannot run is named:
evaluations this project does not implement (`Evaluation.missing`) and datasets not given.

`EVALUATIONS` is the one place that says which `hexa transfer` command measures each of the paper's
evaluations; the leaderboard's re-measure commands (leaderboards/remeasure.py) read it too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

from hexa_zoo.errors import ConfigError, HexaError

from .readers.manyshot import LAYOUTS

log = logging.getLogger(__name__)

MANYSHOT = tuple(name for name in LAYOUTS if name != "embedded")
CDFSL = ("cropdiseases", "eurosat", "isic", "chestx")  # the names transfer/readers/cdfsl.py gives them
EMBEDDED = "embedded"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the paper's tables and the `hexa transfer` protocol that runs it here."""

    name: str                    # as leaderboards/ssl_transfer.py PROTOCOLS names the paper's evaluations
    datasets: tuple[str, ...]    # the paper's datasets for it, as our readers name them
    protocol: str = ""           # the `hexa transfer` protocol that runs it; "" where none does
    preset: str = "paper"
    dataset_flag: bool = False   # the protocol reads several layouts: `--dataset NAME` says which
    embedded_preset: str = ""    # its CPU-size preset, run on --data-for embedded=embedded
    missing: str = ""            # why no protocol here runs it

    def overrides(self, dataset: str) -> list[str]:
        return [f"dataset={dataset}"] if self.dataset_flag else []


EVALUATIONS: tuple[Evaluation, ...] = (
    Evaluation("manyshot_linear", MANYSHOT, "manyshot", "paper", True, "embedded"),
    Evaluation("manyshot_finetune", MANYSHOT, "finetune", "paper", True, "embedded"),
    Evaluation("fewshot_kornblith", tuple(d for d in MANYSHOT if d != "voc2007"),
               missing="few_shot.py's episodes on the many-shot datasets: our fewshot protocol reads class folders "
                       "and the CD-FSL layouts, not the many-shot ones"),
    Evaluation("fewshot_cdfsl", CDFSL, "fewshot", "cdfsl", False, "cdfsl_embedded"),
    Evaluation("detection_voc_frozen", ("voc0712",),
               missing="detectron2 Faster R-CNN R50-FPN, 144k iterations: our detection presets are MoCo's R50-C4"),
    Evaluation("detection_voc_finetune", ("voc0712",),
               missing="detectron2 Faster R-CNN R50-FPN, 144k iterations: our detection presets are MoCo's R50-C4"),
)
# The paper's Table 1 ImageNet column quotes each method's own paper: nothing of ssl-transfer's to run.
QUOTED = "imagenet_linear_reported"


@dataclass(frozen=True)
class SuiteRun:
    label: str            # "manyshot dtd"
    evaluation: str
    dataset: str
    protocol: str
    preset: str
    data: str
    overrides: tuple[str, ...]


def datasets() -> tuple[str, ...]:
    """Every dataset name `--data-for` takes, in the tables' order."""
    return tuple(dict.fromkeys(d for e in EVALUATIONS for d in e.datasets)) + (EMBEDDED,)


def parse_data_for(data_for: Sequence[str], data: str | None = None) -> dict[str, str]:
    """{dataset: path} of `--data-for DATASET=PATH` (and `--data embedded`, which is `--data-for embedded=embedded`)."""
    if data is not None and data != EMBEDDED:
        raise ConfigError(f"--data {data}: the ssl-transfer suite reads one dataset per name",
                          "pass --data-for DATASET=PATH for each, e.g. --data-for dtd=/datasets/dtd "
                          "(or --data embedded for the CPU-size run)")
    paths = {EMBEDDED: EMBEDDED} if data == EMBEDDED else {}
    for item in data_for:
        name, sep, path = item.partition("=")
        if not sep or not path or name not in datasets():
            raise ConfigError(f"--data-for {item!r} is not DATASET=PATH for the ssl-transfer suite",
                              f"DATASET is one of {', '.join(datasets())}")
        paths[name] = path
    if not paths:
        raise ConfigError("the ssl-transfer suite was given no dataset",
                          f"pass --data-for DATASET=PATH (DATASET one of {', '.join(datasets())})")
    return paths


def plan_runs(paths: dict[str, str], only: Sequence[str] = (),
              skip: Sequence[str] = ()) -> tuple[list[SuiteRun], list[str]]:
    """(the runs for the datasets in `paths`, a line for each evaluation or dataset left out and why).
    `only` / `skip` name protocols (manyshot, finetune, fewshot)."""
    runs, left_out = [], []
    for ev in EVALUATIONS:
        if not ev.protocol:
            left_out.append(f"{ev.name}: not implemented here ({ev.missing})")
            continue
        if (only and ev.protocol not in only) or ev.protocol in skip:
            left_out.append(f"{ev.name}: left out by --only/--skip")
            continue
        for ds in ev.datasets:
            if ds in paths:
                runs.append(SuiteRun(f"{ev.protocol} {ds}", ev.name, ds, ev.protocol, ev.preset, paths[ds],
                                     tuple(ev.overrides(ds))))
        if EMBEDDED in paths and ev.embedded_preset:
            runs.append(SuiteRun(f"{ev.protocol} {EMBEDDED}", ev.name, EMBEDDED, ev.protocol, ev.embedded_preset,
                                 paths[EMBEDDED], tuple(ev.overrides(EMBEDDED))))
        absent = [ds for ds in ev.datasets if ds not in paths]
        if absent:
            left_out.append(f"{ev.name}: no data for {', '.join(absent)} (--data-for DATASET=PATH)")
    return runs, left_out


def run_suite(model: str, out: str, paths: dict[str, str], *, only: Sequence[str] = (), skip: Sequence[str] = (),
              routed: dict[str, list[str]] | None = None,
              seed: int = 0) -> tuple[list[dict], dict[str, str], list[str]]:
    """Run `model` through plan_runs(paths); returns (records, failures by run label, the lines left out).
    `routed` holds each protocol's `--set` overrides (suite.route). A user-fixable failure is reported and the
    suite goes on with the next run."""
    from .suite import run_protocol, summary

    runs, left_out = plan_runs(paths, only, skip)
    records, failures = [], {}
    for r in runs:
        start = time.perf_counter()
        log.info("== %s (%s, %s preset) on %s", r.label, r.evaluation, r.preset, r.data)
        try:
            record = run_protocol(r.protocol, model, r.data, out, preset=r.preset,
                                  overrides=[*r.overrides, *(routed or {}).get(r.protocol, ())], seed=seed)
        except HexaError as err:
            failures[r.label] = err.message + (f" (fix: {err.fix})" if err.fix else "")
            log.error("%s failed: %s", r.label, failures[r.label])
            continue
        if record is not None:  # None: handed off elsewhere (nothing ran here)
            records.append(record)
            log.info("%s  [%.0f s]", summary(record), time.perf_counter() - start)
    return records, failures, left_out
