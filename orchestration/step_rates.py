"""The committed table of measured step rates (`step_rates.csv`): images/s per method and recipe on a named
GPU, what `hexa study --plan` turns into GPU-hours. Regenerate it from a GPU run of `bench/gpu_check.sh`:

    python -m orchestration.step_rates bench/gpu_logs/summary.jsonl [--out orchestration/step_rates.csv]

The pretrain_step line gives every method's img/s under amp (measured) and the supervised reference step;
a method whose img/s is missing but whose `<method>_amp_vs_ideal` is there is derived as
supervised / (ideal step cost x vs_ideal), and says so in its `source`. A `features` line (bench/features.py)
gives the frozen-feature forward rate that the suite's frozen protocols run at.

A recipe not in the table is estimated from its method's ratio to the ideal on the recipe that was measured:
supervised / (ideal cost x (global crop / 224)^2 x vs_ideal), and the plan says "estimated".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_write_text

TABLE = Path(__file__).with_name("step_rates.csv")
FIELDS = ("gpu", "workload", "recipe", "img_per_s", "vs_ideal", "source")
REFERENCE_SIZE = 224  # the bench's image size: rates are per 224-px image


@dataclass(frozen=True)
class Rate:
    gpu: str
    workload: str       # a catalog method, "supervised" (the reference step) or "features" (a frozen forward)
    recipe: str
    img_per_s: float
    vs_ideal: float | None
    source: str


def read_rates(path: str | Path = TABLE) -> list[Rate]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no step-rate table at {path}", "pass --rates FILE, or regenerate it: "
                          "python -m orchestration.step_rates bench/gpu_logs/summary.jsonl")
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    missing = [f for f in FIELDS if rows and f not in rows[0]]
    if missing or not rows:
        raise ConfigError(f"{path} is not a step-rate table (columns {', '.join(FIELDS)})",
                          "regenerate it with python -m orchestration.step_rates")
    return [Rate(r["gpu"], r["workload"], r["recipe"], float(r["img_per_s"]),
                 float(r["vs_ideal"]) if r["vs_ideal"] else None, r["source"]) for r in rows]


def per_image_cost(recipe: str) -> float:
    """A recipe's step per image, in supervised 224-px steps: the ideal cost x its global crop's pixels."""
    from pretrain.config import load_recipe
    from pretrain.methods.cost import ideal_step_cost

    cfg = load_recipe(recipe)
    size = cfg.augment.crop_sizes[0] if cfg.method_config().multicrop else cfg.augment.image_size
    return ideal_step_cost(cfg) * (size / REFERENCE_SIZE) ** 2


def pretrain_rate(rates: list[Rate], method: str, recipe: str) -> tuple[float, str, str]:
    """(img/s, how it is known, gpu) for `method` trained with `recipe`."""
    exact = [r for r in rates if r.workload == method and r.recipe == recipe]
    if exact:
        return exact[0].img_per_s, exact[0].source.split(":")[0], exact[0].gpu
    ours = [r for r in rates if r.workload == method and r.vs_ideal]
    reference = [r for r in rates if r.workload == "supervised" and ours and r.gpu == ours[0].gpu]
    if not reference:
        raise ConfigError(f"the step-rate table has no rate for {method} ({recipe}) and no ratio to estimate it from",
                          "run bench/gpu_check.sh on a GPU and regenerate the table (python -m orchestration.step_rates)")
    rate = reference[0].img_per_s / (per_image_cost(recipe) * ours[0].vs_ideal)
    return rate, f"estimated from {method}'s ratio to ideal on {ours[0].recipe}", ours[0].gpu


def workload_rate(rates: list[Rate], workload: str) -> float | None:
    found = [r.img_per_s for r in rates if r.workload == workload]
    return found[0] if found else None


def rows_from_bench(lines: list[str]) -> list[dict]:
    """Table rows from the JSON lines of bench/gpu_check.sh (its summary.jsonl)."""
    rows = []
    for line in lines:
        figures = json.loads(line)
        if figures.get("benchmark") == "pretrain_step":
            gpu, rates, recipes = figures["device"], figures["img_per_s"], figures["recipes"]
            amp = "_amp" if "supervised_amp" in rates else ""
            command = (f"bench/pretrain_step.py --size {figures['image_size']} --batch {figures['batch']}"
                       f"{' --precision amp' if amp else ''}")
            supervised = rates[f"supervised{amp}"]
            rows.append(dict(gpu=gpu, workload="supervised", recipe=recipes.get("moco_v2", ""), img_per_s=supervised,
                             vs_ideal=1.0, source=f"measured: {command}"))
            for method, recipe in recipes.items():
                ratio = figures.get(f"{method}{amp}_vs_ideal")
                if f"{method}{amp}" in rates:
                    rate, source = rates[f"{method}{amp}"], f"measured: {command}"
                elif ratio:
                    cost = per_image_cost(recipe)  # loads the recipe: once
                    rate = supervised / (cost * ratio)
                    source = f"derived: supervised / (ideal cost {cost:.3f} x vs_ideal {ratio})"
                else:
                    continue
                rows.append(dict(gpu=gpu, workload=method, recipe=recipe, img_per_s=round(rate, 1),
                                 vs_ideal=ratio or "", source=source))
        elif figures.get("bench") == "features" and figures.get("device", "cpu") != "cpu":
            rows.append(dict(gpu=figures["device"], workload="features", recipe=figures["arch"],
                             img_per_s=figures["extractor_ips"], vs_ideal="",
                             source=f"measured: bench/features.py --size {figures['size']} --batch {figures['batch']}"))
    return rows


def write_table(rows: list[dict], path: str | Path, header: str = "") -> Path:
    buffer = io.StringIO()
    buffer.write("".join(f"# {line}\n" for line in header.splitlines()))
    writer = csv.DictWriter(buffer, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration.step_rates", description=__doc__.split("\n\n")[0])
    p.add_argument("log", type=Path, help="bench/gpu_check.sh's summary.jsonl (or bench/pretrain_step.py's output)")
    p.add_argument("--out", type=Path, default=TABLE)
    p.add_argument("--keep", action="store_true", help="keep the table's rows of workloads the log does not give")
    args = p.parse_args(argv)
    lines = [line for line in args.log.read_text().splitlines() if line.startswith("{")]
    rows = rows_from_bench(lines)
    if not rows:
        raise ConfigError(f"{args.log} holds no pretrain_step JSON line", "run bench/gpu_check.sh on a GPU first")
    if args.keep and args.out.is_file():
        given = {r["workload"] for r in rows}
        rows += [dict(gpu=r.gpu, workload=r.workload, recipe=r.recipe, img_per_s=r.img_per_s,
                      vs_ideal=r.vs_ideal or "", source=r.source) for r in read_rates(args.out) if r.workload not in given]
    write_table(rows, args.out, f"regenerated from {args.log} by python -m orchestration.step_rates")
    print(f"{len(rows)} rates -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
