"""`hexa study`: methods x seeds at a stated budget, each cell a pre-training run plus the transfer suite,
and for every metric the difference HEXA - baseline with its confidence intervals and a verdict.

    hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 1 \\
        --data embedded --suite embedded --out studies/moco_pair [--resume auto]

Budget: `--epochs N`, or `budget x EPOCHS_AT_BUDGET_1` epochs of an embedded recipe (as the demo counts), for
each HEXA method; `--recipes paper` and `--recipe [FAMILY=]SCALE` choose other recipes (orchestration/plan.py,
which also prints a plan's GPU-hours with `--plan`). Modes:
- `equal-epochs` (what the paper compares): every method trains those epochs.
- `equal-compute`: a baseline trains as long as its HEXA variant did, in the step-ideal units of
  `pretrain.methods.cost.ideal_step_cost` (the units `bench/pretrain_step.py` measures against): its epochs are the
  HEXA epochs x cost(HEXA) / cost(baseline), rounded. The summary records the unit and each cell's cost.

Layout of `--out`: `runs/<method>_s<seed>/` (the pre-training run), `zoo/` (its published trunk),
`records/` (the suite's result records), `cells/<method>_s<seed>.json` (a finished cell: what ran, where,
how long) and `summary.json`. A cell is done when its cell file exists; `--resume auto` skips those, resumes
an interrupted pre-training from its checkpoint and reruns the suite of an unfinished cell. Without
`--resume`, an `--out` that already holds cells is refused. `--executor local|slurm` runs each cell as a
pre-training job and a suite job (orchestration/executor.py; `jobs/` holds what they reported, `--status`
reads it, `grid.json` the cells' inputs); `inline` runs the cells here, one after another.

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

from hexa_zoo.catalog import EPOCHS_AT_BUDGET_1, METHODS
from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_write_json
from hexa_zoo.records import read_records
from hexa_zoo.stats import paired_bootstrap_interval, paired_t_interval, verdict

from .cells import finish_cell, pretrain_cell, suite_cell
from .plan import FAMILIES, MODES, RECIPE_SETS, Cell, pairs_in, plan_cells, render
from .step_rates import TABLE

@dataclass(frozen=True)
class Grid:
    """What a study trains: the cells' inputs, as the command line gives them."""
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    mode: str = "equal-epochs"
    budget: float = 1.0
    data: str = "embedded"
    recipes: str | None = None          # embedded or paper; None: by --data
    scales: tuple[str, ...] = ()        # --recipe [FAMILY=]SCALE
    epochs: int | None = None
    pretrain_set: tuple[str, ...] = ()  # recipe overrides for every cell's pre-training

    def cells(self) -> list[Cell]:
        return plan_cells(self.methods, self.seeds, self.mode, self.budget, self.data, recipes=self.recipes,
                          scales=self.scales, epochs=self.epochs)


def run_study(grid: Grid, suite: str, out: Path, *, resume: str | None = None, overrides: Sequence[str] = (),
              only: Sequence[str] = (), data_for: Sequence[str] = (), executor: str = "inline", parallel: int = 1, jobs: dict | None = None,
              pretrain: Callable = pretrain_cell, evaluate: Callable = suite_cell) -> dict:
    """Run (or continue) the study's missing cells and write its summary over the finished ones; returns it.

    `executor` inline runs the cells here one after another; local and slurm hand them to
    `orchestration.executor` (`jobs`: its StudyJobs resources).
    """
    out = Path(out)
    cells_dir = out / "cells"
    if resume is None and cells_dir.is_dir() and any(cells_dir.glob("*.json")):
        raise ConfigError(f"{out} already holds a study", "continue it with --resume auto, or pick another --out")
    cells = grid.cells()
    cells_dir.mkdir(parents=True, exist_ok=True)
    if executor == "inline":
        for cell in cells:
            if not (cells_dir / f"{cell.name}.json").is_file():
                start = time.perf_counter()
                zoo_dir = pretrain(cell, grid.data, out, grid.pretrain_set)
                finish_cell(cell, zoo_dir, out, data=grid.data, suite=suite, mode=grid.mode, budget=grid.budget,
                            overrides=overrides, only=only, data_for=data_for,
                            pretrain_wall_s=time.perf_counter() - start,
                            evaluate=evaluate)
    else:
        from .executor import StudyJobs, submit

        submit(cells, StudyJobs(out, grid.data, suite, grid.mode, grid.budget, tuple(overrides), tuple(only),
                                tuple(data_for), grid.pretrain_set, **(jobs or {})), executor, parallel)
    summary = summarise(out, grid.methods, grid.seeds, grid.mode, grid.budget)
    summary["command"] = study_command(grid, suite, out, overrides, only, data_for)
    atomic_write_json(out / "summary.json", summary)
    return summary


def study_command(grid: Grid, suite: str, out: Path, overrides: Sequence[str] = (), only: Sequence[str] = (),
                  data_for: Sequence[str] = ()) -> str:
    """The `hexa study` command line that reproduces a study (the report prints it)."""
    parts = ["hexa study --methods", *grid.methods, "--seeds", *map(str, grid.seeds), "--mode", grid.mode]
    parts += ["--epochs", str(grid.epochs)] if grid.epochs else ["--budget", f"{grid.budget:g}"]
    if grid.recipes:
        parts += ["--recipes", grid.recipes]
    if grid.scales:
        parts += ["--recipe", *grid.scales]
    parts += ["--data", grid.data, "--suite", suite] + [f"--data-for {item}" for item in data_for]
    if only:
        parts += ["--only", ",".join(only)]
    if overrides:
        parts += ["--set", *overrides]
    if grid.pretrain_set:
        parts += ["--pretrain-set", *grid.pretrain_set]
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
            "compute_unit": "ideal step cost in supervised steps (pretrain.methods.cost.ideal_step_cost) x steps; "
                            "equal-compute baselines train epochs x cost(HEXA) / cost(baseline)",
            "cells": compute, "comparisons": comparisons,
            "cells_done": len(cells), "cells_planned": len(methods) * len(seeds),
            "finite": all(math.isfinite(e["mean_difference"]) for c in comparisons.values() for e in c.values())}


EPILOG = """\
examples (the embedded data, a few minutes a cell on 2 CPU cores):
  hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 0.5 \\
      --data embedded --suite embedded --out studies/moco_pair_equal_epochs
  hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 0.5 \\
      --data embedded --suite embedded --out studies/moco_pair_equal_epochs --resume auto  # after an interruption
  hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs --budget 0.5 \\
      --data embedded --suite embedded --out studies/moco_pair_equal_epochs --resume auto \\
      --executor local --parallel 2  # cells as processes, two at a time
  hexa study --status --out studies/moco_pair_equal_epochs  # queued, running, done, failed per cell
the paper scale on SLURM (its plans and GPU-hours: board/studies/paper_r50_200ep_*/plan.md):
  hexa study --methods moco_v2 hexa_moco dcluster_v2 hexa_dcluster swav hexa_swav --seeds 0 1 2 \\
      --mode equal-epochs --epochs 200 --recipes paper --recipe swav=in1k_ep200_bs256 \\
      --data /datasets/imagenet/train --images 1281167 --suite paper --data-for linear=/datasets/imagenet \\
      --data-for knn=/datasets/imagenet --data-for lowshot-svm=/datasets/VOCdevkit \\
      --data-for semisup=/datasets/imagenet --data-for fewshot=/datasets/fewshot_heldout \\
      --data-for detection=/datasets/VOCdevkit --out paper_r50_200ep_equal_epochs --plan
  (then the same without --plan and --images, with --executor slurm --nodes 1 --gpus-per-node 8
   --partition gpu --resume auto)
then compile the report: hexa leaderboard --studies studies/ (see board/studies/)
"""


def main(argv: list[str] | None = None) -> int:
    from cluster.jobs import EXECUTORS, add_cluster_arguments, resources

    p = argparse.ArgumentParser(prog="hexa study", description=" ".join(__doc__.split("\n\n")[0].split()),
                                epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="catalog methods (required but for --status)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--mode", choices=MODES, default="equal-epochs")
    p.add_argument("--budget", type=float, default=1.0,
                   help=f"x {EPOCHS_AT_BUDGET_1} epochs for embedded recipes, x the recipe's epochs otherwise")
    p.add_argument("--epochs", type=int, help="epochs of every HEXA method (and of baselines at equal epochs)")
    p.add_argument("--recipes", choices=RECIPE_SETS, help="each method's embedded or paper recipe (default: by --data)")
    p.add_argument("--recipe", dest="scales", nargs="+", default=[], metavar="[FAMILY=]SCALE",
                   help=f"a catalog scale for every method or one family ({', '.join(FAMILIES)}), e.g. swav=in1k_ep200_bs256")
    p.add_argument("--pretrain-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides for every cell's pre-training, e.g. batch_size=128")
    p.add_argument("--data", default="embedded")
    p.add_argument("--suite", choices=("embedded", "paper"), default="embedded")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", choices=("auto",))
    p.add_argument("--data-for", action="append", default=[], metavar="PROTOCOL=PATH",
                   help="the paper suite's dataset of one protocol (repeatable)")
    p.add_argument("--only", default="", help="comma-separated suite protocols (default: the whole suite)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="PROTOCOL.KEY=VALUE",
                   help="transfer-suite overrides, e.g. --set knn.max_per_class=50")
    p.add_argument("--plan", action="store_true", help="print every cell and its GPU-hours, write plan.md; run nothing")
    p.add_argument("--images", type=int, help="training images for --plan (default: counted in --data)")
    p.add_argument("--rates", type=Path, default=TABLE, help="the step-rate table for --plan")
    p.add_argument("--status", action="store_true", help="list each cell: queued, running, done, failed, missing")
    p.add_argument("--executor", choices=EXECUTORS, default="inline",
                   help="inline: cells one after another in this process; local: processes here; slurm: SLURM jobs")
    p.add_argument("--suite-hours", type=float, default=48, help="time limit of a cell's suite job (slurm)")
    add_cluster_arguments(p)
    args = p.parse_args(argv)
    grid_file = args.out / "grid.json"
    if args.methods is None:
        if not (args.status and grid_file.is_file()):
            p.error("--methods is required (--status alone reads it from a study's grid.json)")
        saved = json.loads(grid_file.read_text())
        grid, suite = Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["grid"].items()}), saved["suite"]
    else:
        grid = Grid(tuple(args.methods), tuple(args.seeds), args.mode, args.budget, args.data, args.recipes,
                    tuple(args.scales), args.epochs, tuple(args.pretrain_set))
        suite = args.suite
    only = [name for name in args.only.split(",") if name]
    if args.status:
        from .executor import status_lines

        print("\n".join(status_lines(grid.cells(), args.out)))
        return 0
    if args.plan:
        from .plan import count_images, estimate, write_plan

        cost = estimate(grid.cells(), args.images or count_images(grid.data), suite, args.rates)
        command = study_command(grid, suite, args.out, args.overrides, only, args.data_for)
        print(render(cost, command))
        print(f"plan: {write_plan(cost, command, args.out)}")
        return 0
    atomic_write_json(grid_file, {"grid": asdict(grid), "suite": suite})
    res = resources(args)
    jobs = {"pretrain_resources": res,
            "suite_resources": res.one_gpu(hours=args.suite_hours)}
    summary = run_study(grid, suite, args.out, resume=args.resume, overrides=args.overrides, only=only,
                        data_for=args.data_for, executor=args.executor, parallel=args.parallel, jobs=jobs)
    for pair, metrics in summary["comparisons"].items():
        print(f"{pair} ({summary['mode']}, {len(summary['seeds'])} seeds):")
        for key, entry in metrics.items():
            print(f"  {key:40s} {entry['mean_difference']:+8.3f}  {entry['verdict']}")
    print(f"summary over {summary['cells_done']} of {summary['cells_planned']} cells: {args.out / 'summary.json'}")
    return 0
