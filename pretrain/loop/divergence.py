"""Stopping a run whose loss is no longer finite: every process stops together, before the optimizer steps.

The error names where it happened and the last good checkpoint, from which `--resume auto` continues
once the learning rate, warm-up or amp was changed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist

from hexa_zoo.errors import HexaError

from ..processes import Processes


class TrainingDivergedError(HexaError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def stop_if_diverged(logs: dict, lr: float, procs: Processes, *, epoch: int, step: int,
                     last_checkpoint: Path | None) -> None:
    """Raise TrainingDivergedError on every process when any process's loss is not finite.

    `epoch` and `step` are the 1-based numbers the message shows.
    """
    bad = [k for k, v in logs.items() if k.startswith("loss") and not math.isfinite(v)]
    flag = torch.tensor([float(bool(bad))], device=procs.device)
    if procs.distributed:  # every rank must stop together, or the others hang
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() == 0:
        return
    where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
             else "no checkpoint was written yet")
    values = ", ".join(f"{k}={logs[k]}" for k in bad) if bad else "on another process"
    raise TrainingDivergedError(
        f"loss is not finite ({values}) at epoch {epoch}, step {step}, lr {lr:.4g}; "
        f"training stopped before the optimizer step, {where}",
        "lower the learning rate (--set lr=...), lengthen warm-up (--set warmup_epochs=...) or turn "
        "amp off (--set amp=false), then continue with --resume auto")
