"""`augment.pipeline=auto` on a GPU: which side augments is decided by measuring both on the machine that trains.

The run's first `augment.pipeline_trial_steps` steps use the cpu pipeline (jitter, grayscale and blur in the
loader workers), the next as many the gpu pipeline (batched on the device), as cuDNN's benchmark mode times
its candidate kernels on the real work: these are real training steps. Each path's rate is the images per
second of its steps after the first `WARMUP_STEPS` (workers starting, cuDNN benchmarking), timed with the
device synchronised at both ends, so the figure holds whatever waits on what: the loader, the device-side
augmentation, the step. The faster path is kept for the rest of the run and logged with both figures.

Under DDP rank 0's figures decide for every rank (broadcast), so all ranks augment alike. Which pipeline a
step uses is a function of its position and the decision, and the decision (with the figures) is saved in
every checkpoint: `--resume auto` after the trial reuses it; a run resumed inside the trial times what is
left of it (a path with no timed step left keeps its saved figure, or has none and is not chosen).

On the CPU `auto` is cpu with no trial: there the device side would run on the cores the workers need.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
import torch.distributed as dist

log = logging.getLogger("pretrain")

WARMUP_STEPS = 2  # untimed steps at the start of each path's trial
PATHS = ("cpu", "gpu")


class PipelineChoice:
    """The pipeline each step uses: the recipe's fixed choice, or auto's trial and then its measured decision.

    `pipeline_at(step)` says which; the trainer calls `step_done(step, images)` after every step. `clock`
    returns seconds and must wait for the device (the trainer's synchronises CUDA); `broadcast` turns rank
    0's figures into every rank's (identity in one process).
    """

    def __init__(self, fixed: str | None, trial_steps: int, *, clock: Callable[[], float] = time.perf_counter,
                 broadcast: Callable[[list[float]], list[float]] | None = None):
        if trial_steps <= WARMUP_STEPS and fixed is None:
            from hexa_zoo.errors import ConfigError

            raise ConfigError(f"augment.pipeline_trial_steps={trial_steps} leaves no timed step after the "
                              f"{WARMUP_STEPS} warm-up steps", f"set it above {WARMUP_STEPS}, e.g. 10")
        self.chosen, self.trial_steps, self.clock = fixed, trial_steps, clock
        self.broadcast = broadcast or (lambda figures: figures)
        self.img_per_s: dict[str, float] = {}
        self._phase: str | None = None  # the path being timed in this process, its steps so far, start
        self._count = self._images = 0
        self._start: float | None = None

    def pipeline_at(self, step: int) -> str:
        if self.chosen is not None:
            return self.chosen
        return PATHS[0] if step < self.trial_steps else PATHS[1]

    def step_done(self, step: int, images: int) -> None:
        """Count one finished step (`images` over all ranks); times the trial and decides at its end."""
        if self.chosen is not None:
            return
        path = self.pipeline_at(step)
        if path != self._phase:
            self._phase, self._count, self._images, self._start = path, 0, 0, None
        self._count += 1
        if self._count == WARMUP_STEPS:
            self._start = self.clock()
        elif self._start is not None:
            self._images += images
        last_of_phase = step + 1 == self.trial_steps * (PATHS.index(path) + 1)
        if last_of_phase and self._start is not None and self._images:
            self.img_per_s[path] = self._images / max(self.clock() - self._start, 1e-9)
        if step + 1 == 2 * self.trial_steps:
            self._decide()

    def _decide(self) -> None:
        figures = self.broadcast([self.img_per_s.get(p, 0.0) for p in PATHS])
        self.img_per_s = {p: f for p, f in zip(PATHS, figures) if f > 0}
        self.chosen = max(self.img_per_s, key=self.img_per_s.get) if self.img_per_s else PATHS[1]
        log.info("%s", self.summary())

    def summary(self) -> str:
        figures = ", ".join(f"{p} {self.img_per_s[p]:.0f} img/s" for p in PATHS if p in self.img_per_s)
        return (f"augment.pipeline=auto chose {self.chosen} by measurement over {self.trial_steps} steps per path "
                f"({figures or 'no timed step'})")

    def state_dict(self) -> dict:
        return {"chosen": self.chosen, "img_per_s": dict(self.img_per_s)}

    def load_state_dict(self, state: dict | None) -> None:
        """A checkpoint's decision and figures; the recipe's fixed pipeline, if any, stands."""
        if not state:
            return
        self.img_per_s = {p: float(v) for p, v in state.get("img_per_s", {}).items()}
        if self.chosen is None:
            self.chosen = state.get("chosen")


def broadcast_from_rank0(device: torch.device) -> Callable[[list[float]], list[float]]:
    """Rank 0's figures on every rank (identity outside a process group)."""
    def broadcast(figures: list[float]) -> list[float]:
        if not (dist.is_available() and dist.is_initialized()):
            return figures
        values = torch.tensor(figures, dtype=torch.float64, device=device)
        dist.broadcast(values, src=0)
        return values.tolist()
    return broadcast


def synchronized_clock(device: torch.device) -> Callable[[], float]:
    """perf_counter after the device's queued work has finished (CUDA runs ahead of the host)."""
    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return clock


class DeviceTime:
    """Time spent in a region of the step on the device (CUDA events: no sync until read), per window.

    `with timer:` around the region; `window_ms()` is the mean per region since its last call.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pairs: list = []
        self._host_s = 0.0
        self._count = 0

    def __enter__(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self._pairs.append((start, end))
        else:
            self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self._pairs[-1][1].record()
        else:
            self._host_s += time.perf_counter() - self._t
        self._count += 1

    def window_ms(self) -> float:
        if self.cuda and self._pairs:
            self._pairs[-1][1].synchronize()
            total = sum(s.elapsed_time(e) for s, e in self._pairs)
        else:
            total = self._host_s * 1e3
        mean = total / max(self._count, 1)
        self._pairs, self._host_s, self._count = [], 0.0, 0
        return mean
