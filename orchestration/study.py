"""`hexa study`: methods x seeds at a stated budget, each cell a pre-training run plus the transfer suite,
and for every metric the difference HEXA - baseline with its confidence intervals and a verdict.

    hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 1 \\
        --data embedded --suite embedded --out studies/moco_pair [--resume auto]

Budget: `budget x EPOCHS_AT_BUDGET_1` epochs of pre-training for each HEXA method (as the demo counts).
Modes:
- `equal-epochs` (what the paper compares): every method trains those epochs.
- `equal-compute`: a baseline trains as long as its HEXA variant did, in the step-ideal units of
  `pretrain.cost.ideal_step_cost` (the units `bench/pretrain_step.py` measures against): its epochs are the
  HEXA epochs x cost(HEXA) / cost(baseline), rounded. The summary records the unit and each cell's cost.

Layout of `--out`: `runs/<method>_s<seed>/` (the pre-training run), `zoo/` (its published trunk),
`records/` (the suite's result records), `cells/<method>_s<seed>.json` (a finished cell: what ran, where,
how long) and `summary.json`. A cell is done when its cell file exists; `--resume auto` skips those, resumes
an interrupted pre-training from its checkpoint and reruns the suite of an unfinished cell. Without
`--resume`, an `--out` that already holds cells is refused.

Statistics (`hexa_zoo.stats`): per metric and HEXA/baseline pair, the per-seed values of each method, the
mean difference, a paired t-interval over seeds, a paired bootstrap over the evaluation samples where the
records hold per-sample values (few-shot episodes, low-shot samples), and a verdict in words.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from hexa_zoo.catalog import METHODS
from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_write_json
from hexa_zoo.records import read_records
from hexa_zoo.stats import paired_bootstrap_interval, paired_t_interval, verdict

from .demo import EPOCHS_AT_BUDGET_1  # a budget means the same epochs in the demo and in a study

MODES = ("equal-epochs", "equal-compute")


@dataclass(frozen=True)
class Cell:
    method: str
    seed: int
    epochs: int
    cost_per_step: float   # pretrain.cost.ideal_step_cost of its recipe, in supervised steps

    @property
    def name(self) -> str:
        return f"{self.method}_s{self.seed}"


def pairs_in(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(baseline, HEXA) pairs among `methods`; every HEXA method needs its baseline and vice versa."""
    pairs = []
    for name in methods:
        entry = METHODS[name]
        if entry.is_hexa:
            if entry.baseline not in methods:
                raise ConfigError(f"{name} is compared with its baseline {entry.baseline}, which is not in --methods",
                                  f"add {entry.baseline} to --methods")
            pairs.append((entry.baseline, name))
    if not pairs:
        raise ConfigError(f"--methods {' '.join(methods)} holds no HEXA method and its baseline",
                          "e.g. --methods moco_v2 hexa_moco")
    return pairs


def plan(methods: Sequence[str], seeds: Sequence[int], mode: str, budget: float, data: str) -> list[Cell]:
    """Every (method, seed) cell with its epochs, HEXA methods first so an equal-compute baseline follows them."""
    from pretrain.config import load_recipe
    from pretrain.cost import ideal_step_cost

    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}", f"use one of {', '.join(MODES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}", f"use catalog methods: {', '.join(METHODS)}")
    pairs = pairs_in(methods)
    epochs = max(1, round(budget * EPOCHS_AT_BUDGET_1))
    cost = {m: ideal_step_cost(load_recipe(METHODS[m].default_recipe(data))) for m in methods}
    planned = {m: epochs for m in methods}
    if mode == "equal-compute":
        for base, hexa in pairs:
            planned[base] = max(1, round(epochs * cost[hexa] / cost[base]))
    order = sorted(methods, key=lambda m: not METHODS[m].is_hexa)
    return [Cell(m, s, planned[m], round(cost[m], 4)) for s in seeds for m in order]


def pretrain_cell(cell: Cell, data: str, out: Path) -> Path:
    """Pre-train one cell (resuming its checkpoint if any) into out/zoo; returns the published folder."""
    from pretrain.config import load_recipe
    from pretrain.trainer import train

    recipe = METHODS[cell.method].default_recipe(data)
    cfg = load_recipe(recipe, [f"data={data}", f"out={out / 'runs' / cell.name}", f"epochs={cell.epochs}",
                               f"seed={cell.seed}", f"zoo={out / 'zoo'}", f"tag=s{cell.seed}_ep{cell.epochs}",
                               "progress=false"])
    return train(cfg, resume="auto").zoo_dir


def suite_cell(zoo_dir: Path, suite: str, records: Path, seed: int, overrides: Sequence[str],
               only: Sequence[str] = ()) -> None:
    """The transfer suite (its own datasets: the embedded ones for `--suite embedded`) on one cell's trunk."""
    from transfer.cli import run_suite

    _, failures = run_suite(str(zoo_dir), suite, str(records), overrides=overrides, only=only, seed=seed)
    if failures:
        raise ConfigError(f"the transfer suite failed for {zoo_dir.name}: {failures}",
                          "fix the cause above, then rerun with --resume auto (finished cells are kept)")


def run_study(methods: Sequence[str], seeds: Sequence[int], mode: str, budget: float, data: str, suite: str,
              out: Path, *, resume: str | None = None, overrides: Sequence[str] = (), only: Sequence[str] = (),
              pretrain: Callable = pretrain_cell, evaluate: Callable = suite_cell) -> dict:
    """Run (or continue) the study and write its summary; returns the summary."""
    out = Path(out)
    cells_dir = out / "cells"
    if resume is None and cells_dir.is_dir() and any(cells_dir.glob("*.json")):
        raise ConfigError(f"{out} already holds a study", "continue it with --resume auto, or pick another --out")
    cells = plan(methods, seeds, mode, budget, data)
    cells_dir.mkdir(parents=True, exist_ok=True)
    for cell in cells:
        done = cells_dir / f"{cell.name}.json"
        if done.is_file():
            continue
        start = time.perf_counter()
        zoo_dir = pretrain(cell, data, out)
        trained = time.perf_counter() - start
        evaluate(zoo_dir, suite, out / "records", cell.seed, overrides, only)
        atomic_write_json(done, dict(asdict(cell), mode=mode, budget=budget, data=data, suite=suite,
                                     zoo_dir=str(zoo_dir), run_dir=str(out / "runs" / cell.name),
                                     pretrain_wall_s=round(trained, 1),
                                     suite_wall_s=round(time.perf_counter() - start - trained, 1)))
    summary = summarise(out, methods, seeds, mode, budget)
    summary["command"] = study_command(methods, seeds, mode, budget, data, suite, out, overrides, only)
    atomic_write_json(out / "summary.json", summary)
    return summary


def study_command(methods: Sequence[str], seeds: Sequence[int], mode: str, budget: float, data: str, suite: str,
                  out: Path, overrides: Sequence[str] = (), only: Sequence[str] = ()) -> str:
    """The `hexa study` command line that reproduces a study (the report prints it)."""
    parts = ["hexa study --methods", *methods, "--seeds", *map(str, seeds), "--mode", mode,
             "--budget", f"{budget:g}", "--data", data, "--suite", suite]
    if only:
        parts += ["--only", ",".join(only)]
    if overrides:
        parts += ["--set", *overrides]
    return " ".join(parts + ["--out", Path(out).name, "--resume auto"])


def _cell_values(records: list[dict], zoo_dir: str) -> dict[str, list[float]]:
    """metric key (benchmark:metric) -> its per-sample values, for the newest record of each benchmark."""
    name = Path(zoo_dir).name
    mine = [r for r in records if r.get("model", {}).get("name") == name]
    newest: dict[str, dict] = {}
    for r in sorted(mine, key=lambda r: r.get("created", "")):
        newest[r["benchmark"]] = r
    return {f"{bench}:{metric}": [float(v) for v in m.get("values", [m["mean"]])]
            for bench, r in newest.items() for metric, m in r["metrics"].items()}


def summarise(out: Path, methods: Sequence[str], seeds: Sequence[int], mode: str, budget: float) -> dict:
    """Per metric and pair: per-seed means of each method, the paired t-interval, the paired bootstrap
    over evaluation samples where there are several, and the verdict."""
    records = read_records([out / "records"])[0] if (out / "records").is_dir() else []
    cells = {p.stem: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}
    values = {(c["method"], c["seed"]): _cell_values(records, c["zoo_dir"]) for c in cells.values()}
    comparisons = {}
    for base, hexa in pairs_in(methods):
        both = [s for s in seeds if (base, s) in values and (hexa, s) in values]
        metrics = sorted(set.intersection(*(set(values[(m, s)]) for s in both for m in (base, hexa)))) if both else []
        for key in metrics:
            per_seed = {m: [float(sum(values[(m, s)][key]) / len(values[(m, s)][key])) for s in both]
                        for m in (base, hexa)}
            t = paired_t_interval([h - b for h, b in zip(per_seed[hexa], per_seed[base])])
            samples = [(values[(hexa, s)][key], values[(base, s)][key]) for s in both]
            entry = {"seeds": both, "values": per_seed, "mean_difference": t.mean, "t_interval": t.to_dict(),
                     "verdict": verdict(t)}
            if all(len(h) == len(b) and len(h) > 1 for h, b in samples):
                boot = paired_bootstrap_interval([v for h, _ in samples for v in h], [v for _, b in samples for v in b])
                entry["bootstrap_interval"] = boot.to_dict()
                entry["bootstrap_verdict"] = verdict(boot)
            comparisons.setdefault(f"{hexa} - {base}", {})[key] = entry
    compute = {name: {"epochs": c["epochs"], "cost_per_step": c["cost_per_step"],
                      "pretrain_wall_s": c["pretrain_wall_s"]} for name, c in cells.items()}
    return {"study": out.name, "mode": mode, "budget": budget, "methods": list(methods), "seeds": list(seeds),
            "compute_unit": "ideal step cost in supervised steps (pretrain.cost.ideal_step_cost) x steps; "
                            "equal-compute baselines train epochs x cost(HEXA) / cost(baseline)",
            "cells": compute, "comparisons": comparisons,
            "cells_done": len(cells), "cells_planned": len(methods) * len(seeds),
            "finite": all(math.isfinite(e["mean_difference"]) for c in comparisons.values() for e in c.values())}


EPILOG = """\
example (the embedded data, a few minutes a cell on 2 CPU cores):
  hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 0.5 \\
      --data embedded --suite embedded --out studies/moco_pair_equal_epochs
  hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 0.5 \\
      --data embedded --suite embedded --out studies/moco_pair_equal_epochs --resume auto  # after an interruption
then compile the report: hexa leaderboard --studies studies/ (see leaderboards/studies/)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hexa study", description=" ".join(__doc__.split("\n\n")[0].split()),
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", required=True, choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--mode", choices=MODES, default="equal-epochs")
    p.add_argument("--budget", type=float, default=1.0, help=f"x {EPOCHS_AT_BUDGET_1} epochs of pre-training")
    p.add_argument("--data", default="embedded")
    p.add_argument("--suite", choices=("embedded", "paper"), default="embedded")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", choices=("auto",))
    p.add_argument("--only", default="", help="comma-separated suite protocols (default: the whole suite)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="PROTOCOL.KEY=VALUE",
                   help="transfer-suite overrides, e.g. --set knn.max_per_class=50")
    args = p.parse_args(argv)
    summary = run_study(args.methods, args.seeds, args.mode, args.budget, args.data, args.suite, args.out,
                        resume=args.resume, overrides=args.overrides,
                        only=[p for p in args.only.split(",") if p])
    for pair, metrics in summary["comparisons"].items():
        print(f"{pair} ({summary['mode']}, {len(summary['seeds'])} seeds):")
        for key, entry in metrics.items():
            print(f"  {key:40s} {entry['mean_difference']:+8.3f}  {entry['verdict']}")
    print(f"summary: {args.out / 'summary.json'}")
    return 0
