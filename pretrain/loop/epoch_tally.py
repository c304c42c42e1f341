"""An epoch's bookkeeping: what its loop carries from batch to batch, and the lines said at its end.

`EpochTally` counts each trained batch (`count_step`), writes the log rows with their throughput window
(`log_row`) and gives the epoch's mean losses; the end of an epoch logs those means (`epoch_summary`)
and the unreadable images skipped, counted over all processes (`report_bad_images`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..processes import Processes
from .runlog import DataWait, RunLog

log = logging.getLogger("pretrain")

_VIEW_NAMES = {"clean": "clean", "adv": "adversarial", "cutmix": "CutMix"}


@dataclass
class EpochTally:
    """What an epoch's loop carries from batch to batch: its logs, sums and the open log window."""
    runlog: RunLog
    waits: DataWait
    bar: object
    t0: float
    logs: dict
    bad: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)
    seen: int = 0
    stepped: int = 0
    tick: float = field(default_factory=time.perf_counter)

    def count_step(self, logs: dict, images: int) -> None:
        """A trained batch: its logs, its images (all processes') for img/s, its losses into the epoch's sums."""
        self.logs = logs
        self.seen += images
        self.stepped += 1
        for k, v in logs.items():
            if k.startswith(("loss", "hardness_")):
                self.sums[k] = self.sums.get(k, 0.0) + v

    def log_row(self, step: int, epoch: int, lr: float, augment_ms: float) -> None:
        """The last step's logs as a row (CSV, TensorBoard, the bar), with the window's img/s and data wait."""
        now = time.perf_counter()
        self.runlog.row(step, dict(self.logs, step=step, epoch=epoch, lr=lr,
                                   img_per_s=self.seen / max(now - self.tick, 1e-9), data_wait=self.waits.window(),
                                   augment_ms=augment_ms, time_s=now - self.t0))
        self.bar.set_postfix(loss=f"{self.logs['loss']:.4f}", lr=f"{lr:.3g}")
        self.seen, self.tick = 0, now

    def means(self) -> dict[str, float]:
        """The epoch's mean losses and hardness over its trained batches (empty when none trained)."""
        return {k: v / self.stepped for k, v in self.sums.items()} if self.stepped else {}


def epoch_summary(means: dict[str, float]) -> str:
    """'loss 16.1; clean 5.21; adversarial 5.24 (hardness +0.025); CutMix ...' from the epoch's means."""
    parts = [f"loss {means['loss']:.4f}"] if "loss" in means else []
    for key, name in _VIEW_NAMES.items():
        if f"loss_{key}" in means:
            hard = means.get(f"hardness_{key}")
            parts.append(f"{name} {means[f'loss_{key}']:.4f}" + (f" (hardness {hard:+.4f})" if hard is not None else ""))
    return "; ".join(parts)


def report_bad_images(bad: list[str], epoch: int, procs: Processes) -> int:
    """Log epoch `epoch`'s (0-based) unreadable images, counted over all processes; returns the count."""
    count = torch.tensor([len(bad)], device=procs.device)
    if procs.distributed:
        dist.all_reduce(count)
    if count.item() and procs.is_main:
        shown = "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
        log.warning("epoch %d: skipped %d unreadable image(s)%s", epoch + 1, int(count.item()),
                    f": {shown}" if bad else "")
    return int(count.item())
