"""One study cell's work, whatever runs it (this process, or the jobs of `orchestration/executor.py`):
its recipe overrides, its pre-training, where it publishes, and its suite ending in the cell file."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from hexa_zoo.catalog import METHODS
from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_write_json

from .plan import Cell


def cell_recipe(cell: Cell) -> str:
    return cell.recipe or METHODS[cell.method].recipes["embedded"]  # cells written before recipes were chosen


def pretrain_overrides(cell: Cell, data: str, out: Path, extra: Sequence[str] = ()) -> list[str]:
    """The recipe overrides of a cell's pre-training (in process or as `hexa pretrain --set ...` in a job)."""
    return [f"data={data}", f"out={Path(out) / 'runs' / cell.name}", f"epochs={cell.epochs}", f"seed={cell.seed}",
            f"zoo={Path(out) / 'zoo'}", f"tag=s{cell.seed}_ep{cell.epochs}", "progress=false", *extra]


def published_dir(cell: Cell, data: str, out: Path, extra: Sequence[str] = ()) -> Path:
    """Where a cell's pre-training publishes its trunk (what the trainer's publish step names it)."""
    from hexa_zoo.catalog import zoo_model_name
    from hexa_zoo.weights import zoo_folder
    from pretrain.config import load_recipe

    cfg = load_recipe(cell_recipe(cell), pretrain_overrides(cell, data, out, extra))
    return zoo_folder(zoo_model_name(cfg.method, cfg.arch), cfg.resolved_tag(), Path(cfg.zoo))


def pretrain_cell(cell: Cell, data: str, out: Path, extra: Sequence[str] = ()) -> Path:
    """Pre-train one cell in this process (resuming its checkpoint if any) into out/zoo; returns the folder."""
    from pretrain.config import load_recipe
    from pretrain.loop.trainer import train

    return train(load_recipe(cell_recipe(cell), pretrain_overrides(cell, data, out, extra)), resume="auto").zoo_dir


def suite_cell(zoo_dir: Path, suite: str, records: Path, seed: int, overrides: Sequence[str],
               only: Sequence[str] = (), data_for: Sequence[str] = ()) -> None:
    """The transfer suite on one cell's trunk (the embedded suite on its own data; the paper suite's datasets
    from `data_for`, PROTOCOL=PATH)."""
    from transfer.suite import run_suite

    _, failures = run_suite(str(zoo_dir), suite, str(records), data_for=data_for, overrides=overrides, only=only,
                            seed=seed)
    if failures:
        raise ConfigError(f"the transfer suite failed for {zoo_dir.name}: {failures}",
                          "fix the cause above, then rerun with --resume auto (finished cells are kept)")


def finish_cell(cell: Cell, zoo_dir: Path, out: Path, *, data: str, suite: str, mode: str, budget: float,
                overrides: Sequence[str] = (), only: Sequence[str] = (), data_for: Sequence[str] = (),
                pretrain_wall_s: float = 0.0, executor: str = "inline", evaluate: Callable | None = None) -> None:
    """Run the suite on a cell's trunk and write its cell file (the cell is done from then on)."""
    start = time.perf_counter()
    (evaluate or suite_cell)(zoo_dir, suite, Path(out) / "records", cell.seed, overrides, only, data_for)
    atomic_write_json(Path(out) / "cells" / f"{cell.name}.json",
                      dict(asdict(cell), mode=mode, budget=budget, data=data, suite=suite, zoo_dir=str(zoo_dir),
                           run_dir=str(Path(out) / "runs" / cell.name), pretrain_wall_s=round(pretrain_wall_s, 1),
                           suite_wall_s=round(time.perf_counter() - start, 1), executor=executor))
