"""A study's cells (method, seed, recipe, epochs, step cost) and their cost in GPU-hours before anything runs.

Recipes: `--recipes embedded|paper` picks each method's embedded or paper recipe (default: embedded for
`--data embedded`, else paper); `--recipe SCALE` or `--recipe FAMILY=SCALE` (a catalog scale such as
`in1k_ep200`, for every method or for one family: moco, deepcluster, swav) overrides it, the same for a HEXA
method and its baseline. Epochs: `--epochs N`, else `budget x EPOCHS_AT_BUDGET_1` for an embedded recipe (the
demo's count) and `budget x` the recipe's own epochs otherwise; under equal compute a baseline trains the HEXA
epochs x cost(HEXA) / cost(baseline), in `pretrain.methods.cost.ideal_step_cost` units.

GPU-hours of a cell's pre-training: epochs x images / (its method's img/s on the table's GPU) / 3600, from the
committed step rates (`orchestration/step_rates.py`). The paper suite adds its protocols' passes over their data
(ImageNet, VOC07) at the frozen-feature rate (forwards) or the supervised step rate (fine-tuning); detection has
no measured rate yet and is left out of the sums, which say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from hexa_zoo.catalog import EPOCHS_AT_BUDGET_1, FAMILIES, METHODS  # a budget means the same epochs in the demo and in a study
from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_write_json, atomic_write_text

from .step_rates import TABLE, pretrain_rate, read_rates, workload_rate

MODES = ("equal-epochs", "equal-compute")
RECIPE_SETS = ("embedded", "paper")
IMAGENET_TRAIN, IMAGENET_VAL, VOC07_TRAINVAL, VOC07_TEST = 1_281_167, 50_000, 5_011, 4_952


@dataclass(frozen=True)
class Cell:
    method: str
    seed: int
    epochs: int
    cost_per_step: float   # pretrain.methods.cost.ideal_step_cost of its recipe, in supervised steps
    recipe: str = ""       # empty in cells written before recipes were chosen (the embedded one)

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


def recipe_for(method: str, data: str, recipes: str | None = None, scales: Sequence[str] = ()) -> str:
    """The recipe `method` trains with: `--recipe [FAMILY=]SCALE` first, then the `--recipes` set, then by data."""
    entry = METHODS[method]
    chosen = None
    for item in scales:
        family, _, scale = item.rpartition("=")
        if family and family not in FAMILIES:
            raise ConfigError(f"--recipe {item!r}: unknown family {family!r}", f"use one of {', '.join(FAMILIES)}")
        if family in ("", entry.module):
            chosen = scale
    if chosen is not None:
        if chosen not in entry.recipes:
            raise ConfigError(f"{method} has no recipe at scale {chosen!r}",
                              f"its scales: {', '.join(entry.recipes)} (--recipe {entry.module}=SCALE sets one family)")
        return entry.recipes[chosen]
    if recipes is None:
        return entry.default_recipe(data)
    if recipes not in RECIPE_SETS:
        raise ConfigError(f"unknown --recipes {recipes!r}", f"use one of {', '.join(RECIPE_SETS)}")
    return entry.recipes["embedded" if recipes == "embedded" else entry.paper_recipe]


def plan_cells(methods: Sequence[str], seeds: Sequence[int], mode: str, budget: float, data: str, *,
               recipes: str | None = None, scales: Sequence[str] = (), epochs: int | None = None) -> list[Cell]:
    """Every (method, seed) cell with its recipe and epochs, HEXA methods first so an equal-compute baseline
    follows them."""
    from pretrain.config import load_recipe
    from pretrain.methods.cost import ideal_step_cost

    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}", f"use one of {', '.join(MODES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}", f"use catalog methods: {', '.join(METHODS)}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}", "e.g. --epochs 200")
    pairs = pairs_in(methods)
    recipe = {m: recipe_for(m, data, recipes, scales) for m in methods}
    cfg = {m: load_recipe(recipe[m]) for m in methods}
    cost = {m: ideal_step_cost(cfg[m]) for m in methods}

    def own_epochs(m: str) -> int:
        if epochs is not None:
            return epochs
        unit = EPOCHS_AT_BUDGET_1 if recipe[m] == METHODS[m].recipes["embedded"] else cfg[m].epochs
        return max(1, round(budget * unit))

    planned = {m: own_epochs(m) for m in methods}
    for base, hexa in pairs:
        planned[base] = planned[hexa] if mode == "equal-epochs" else max(1, round(planned[hexa] * cost[hexa] / cost[base]))
    order = sorted(methods, key=lambda m: not METHODS[m].is_hexa)
    return [Cell(m, s, planned[m], round(cost[m], 4), recipe[m]) for s in seeds for m in order]


def count_images(data: str) -> int:
    """Training images of `data`: the embedded set's, or the image files under a folder."""
    if data == "embedded":
        from hexa_zoo.embedded import embedded_root

        return sum(1 for _ in (embedded_root() / "classify" / "train").rglob("*.png"))
    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"--data {data} is not a folder here, so its images cannot be counted",
                          f"pass --images N (ImageNet's train split: --images {IMAGENET_TRAIN})")
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    return sum(1 for p in root.rglob("*") if p.suffix.lower() in suffixes)


def suite_work(suite: str) -> dict[str, tuple[str, float] | None]:
    """Per protocol of the suite: (kind, images through the trunk) with kind forward or train; None unmeasured."""
    if suite != "paper":
        return {}
    from transfer.protocols.linear import PRESETS as LINEAR
    from transfer.protocols.semisup import FRACTION, PRESETS as SEMISUP

    linear, semisup = LINEAR["paper"], SEMISUP["paper"]
    return {
        "linear": ("forward", linear.epochs * IMAGENET_TRAIN + IMAGENET_VAL),       # main_lincls: frozen trunk
        "knn": ("forward", IMAGENET_TRAIN + IMAGENET_VAL),
        "lowshot-svm": ("forward", VOC07_TRAINVAL + VOC07_TEST),                  # the SVMs run on the CPU
        "semisup": ("train", semisup.epochs * round(FRACTION[semisup.labels] * IMAGENET_TRAIN)),
        "fewshot": ("forward", 600 * 5 * (5 + 15)),                              # at most: 600 episodes, cached
        "detection": None,                                                       # not measured on a GPU yet
    }


def estimate(cells: Sequence[Cell], images: int, suite: str, rates_path: str | Path = TABLE) -> dict:
    """GPU-hours per cell (pre-training + the suite) and in total, with where every rate came from."""
    rates = read_rates(rates_path)
    work = suite_work(suite)
    forward, train = workload_rate(rates, "features"), workload_rate(rates, "supervised")
    suite_hours, unmeasured = 0.0, sorted(p for p, w in work.items() if w is None)
    for protocol, w in work.items():
        if w is not None:
            rate = forward if w[0] == "forward" else train
            if rate is None:
                unmeasured.append(protocol)
            else:
                suite_hours += w[1] / rate / 3600
    rows, gpus = [], set()
    for cell in cells:
        rate, how, gpu = pretrain_rate(rates, cell.method, cell.recipe)
        gpus.add(gpu)
        hours = cell.epochs * images / rate / 3600
        rows.append(dict(asdict(cell), name=cell.name, img_per_s=round(rate, 1), rate_source=how,
                         step_ideal_cost=round(cell.epochs * images * cell.cost_per_step),
                         pretrain_gpu_hours=round(hours, 2), suite_gpu_hours=round(suite_hours, 2),
                         gpu_hours=round(hours + suite_hours, 2)))
    return {"gpu": ", ".join(sorted(gpus)), "images": images, "suite": suite, "rates": str(rates_path),
            "cells": rows, "unmeasured_protocols": sorted(set(unmeasured)),
            "pretrain_gpu_hours": round(sum(r["pretrain_gpu_hours"] for r in rows), 1),
            "suite_gpu_hours": round(suite_hours * len(rows), 1),
            "gpu_hours": round(sum(r["gpu_hours"] for r in rows), 1)}


def render(plan: dict, command: str) -> str:
    """The plan as Markdown: one row per cell, the totals, and what the estimate leaves out."""
    lines = [f"# Plan: `{command}`", "",
             f"{len(plan['cells'])} cells on {plan['images']:,} training images; rates on {plan['gpu']} "
             f"(`{Path(plan['rates']).name}`). Step-ideal cost: epochs x images x the step's cost in supervised "
             "steps.", "",
             "| cell | recipe | epochs | step cost | step-ideal cost | img/s | rate | pre-training GPU-h | "
             "suite GPU-h | GPU-h |", "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in plan["cells"]:
        lines.append(f"| {r['name']} | {r['recipe']} | {r['epochs']} | {r['cost_per_step']} | "
                     f"{r['step_ideal_cost']:.3g} | {r['img_per_s']} | {r['rate_source']} | "
                     f"{r['pretrain_gpu_hours']} | {r['suite_gpu_hours']} | {r['gpu_hours']} |")
    lines += ["", f"Total: **{plan['gpu_hours']} GPU-hours** ({plan['pretrain_gpu_hours']} pre-training, "
              f"{plan['suite_gpu_hours']} for the {plan['suite']} suite)."]
    if plan["unmeasured_protocols"]:
        lines.append(f"Not counted (no measured rate): {', '.join(plan['unmeasured_protocols'])}.")
    lines += ["GPU-bound rates (random tensors, batch 256 a GPU): data loading and multi-GPU communication "
              "come on top.", ""]
    return "\n".join(lines)


def write_plan(plan: dict, command: str, out: Path) -> Path:
    atomic_write_json(out / "plan.json", dict(plan, command=command))
    return atomic_write_text(out / "plan.md", render(plan, command))
