"""Progress for the long steps of a transfer run (feature extraction, fits, sweeps), on a terminal or not.

On a terminal: a tqdm bar. Otherwise (a log file, a pipe, a job's output) tqdm draws nothing, so a run of
a minute would say nothing until its end: one log line when the step starts and one every `every_s`
seconds after it, naming how far it is.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

log = logging.getLogger("transfer")
T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "batch",
             every_s: float = 10.0) -> Iterator[T]:
    """`items`, reporting progress as a tqdm bar on a terminal, else as log lines."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)
        return
    log.info("%s: %s %s(s)...", desc, total if total is not None else "?", unit)
    start = last = time.perf_counter()
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_s:
            log.info("%s: %d/%s %s(s) in %.0f s", desc, done, total if total is not None else "?", unit, now - start)
            last = now
    if time.perf_counter() - start >= every_s:
        log.info("%s: %d %s(s) done in %.0f s", desc, done, unit, time.perf_counter() - start)
