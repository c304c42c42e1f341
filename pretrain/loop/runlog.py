"""CSV rows and TensorBoard scalars of one run (out/log.csv, out/tb), cut back to the step on resume;
and the time the loop spent waiting for its data (`DataWait`), logged beside them."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Iterable, Iterator

from hexa_zoo.fileio import atomic_write_text

CSV_NAME = "log.csv"


class RunLog:
    """CSV rows (out/log.csv) and TensorBoard scalars (out/tb) of one run, written by rank 0 only.

    On resume, rows after the checkpoint's step are dropped from the CSV (they were computed after the
    state we go back to), and TensorBoard is told to purge them.
    """

    FIXED = ("step", "epoch", "lr", "img_per_s", "time_s")

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled, self.path, self.writer, self.fields = enabled, out / CSV_NAME, None, None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [r for r in reader if None not in r.values() and r.get("step", "").isdigit()
                        and int(r["step"]) <= resume_step]
            lines = [",".join(self.fields)] if self.fields else []
            text = "".join(_csv_line(self.fields, r) for r in kept)
            atomic_write_text(self.path, ("\n".join(lines) + "\n" if lines else "") + text)
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", newline="")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=resume_step)

    def row(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(self.FIXED) + sorted(k for k in values if k not in self.FIXED)
            self.file.write(",".join(self.fields) + "\n")
        elif not set(values) <= set(self.fields):  # e.g. DeepCluster's losses appear after its first epoch
            self._widen(sorted(set(values) - set(self.fields)))
        self.file.write(_csv_line(self.fields, values))
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if key in ("step", "epoch", "time_s"):
                    continue
                group = "loss" if key.startswith("loss") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def _widen(self, new_fields: list[str]) -> None:
        """Rewrite the CSV with more columns (earlier rows get empty cells there)."""
        self.file.close()
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields = list(self.fields) + new_fields
        atomic_write_text(self.path, ",".join(self.fields) + "\n" + "".join(_csv_line(self.fields, r) for r in rows))
        self.file = open(self.path, "a", newline="")

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def _csv_line(fields: list[str], values: dict) -> str:
    return ",".join(repr(v) if isinstance(v, float) else str(v) for v in (values.get(k, "") for k in fields)) + "\n"


# Above this fraction of its time waiting for batches, a run is data-bound: the GPU (or the CPU's
# training threads) idles while the loader workers augment.
DATA_BOUND = 0.2


class DataWait:
    """Time the training loop spent waiting for each batch, as a fraction of its wall time.

    `timed(loader)` yields the loader's batches and times each wait; `window()` is the fraction since
    its last call (the log.csv / TensorBoard column `data_wait`), `summary()` the epoch's, in words.
    """

    def __init__(self):
        self.window_wait = self.epoch_wait = 0.0
        self.window_start = self.epoch_start = time.perf_counter()

    def timed(self, loader: Iterable) -> Iterator:
        batches = iter(loader)  # starting the workers is waiting too
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            waited = time.perf_counter() - start
            self.window_wait += waited
            self.epoch_wait += waited
            yield batch

    def window(self) -> float:
        now = time.perf_counter()
        fraction = self.window_wait / max(now - self.window_start, 1e-9)
        self.window_wait, self.window_start = 0.0, now
        return fraction

    def epoch_fraction(self) -> float:
        return self.epoch_wait / max(time.perf_counter() - self.epoch_start, 1e-9)

    def summary(self, *, workers: int, pipeline: str, on_cuda: bool) -> str:
        """The epoch's data wait in words; where it is large, that the run is data-bound and what to do."""
        fraction = self.epoch_fraction()
        line = f"waited for data {fraction:.0%} of the time"
        if fraction <= DATA_BOUND:
            return line
        fixes = [f"raise workers (now {workers}; up to the cores per process)"]
        if on_cuda and pipeline == "cpu":
            fixes.append("set augment.pipeline=gpu (colour jitter, grayscale and blur batched on the GPU)")
        if workers == 0:
            fixes[0] = "load in worker processes: workers=0 augments in the training process"
        return f"{line}: the run is data-bound; " + ", or ".join(fixes)
