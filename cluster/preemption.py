"""Preemption and time-out: a training loop stops at a step boundary with a checkpoint, then the job requeues.

SLURM warns a job before it preempts it or its time runs out (`--signal=USR2@120`, which submitit asks
for), and submitit's handler requeues the job at once, wherever the program is: a pre-training job then
resumes from its last periodic checkpoint and trains every step since again. Inside a job
(`cluster.jobs.Job`), `take_over` puts a handler in front of submitit's: while a loop listens
(`listening()`), the signal only raises a flag; the loop calls `stop_if_asked` at each step boundary, where
every rank agrees whether any was signalled, so all stop after the same step; they save their checkpoint
there and hand over to submitit, which requeues the job (with `--resume auto`). A requeued job repeats
at most the step that was running. Outside a listening loop the signal goes to submitit's handler as
before; outside a job nothing is taken over and `stop_if_asked` costs nothing.
"""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from typing import Callable

log = logging.getLogger("pretrain")

_requeue: Callable | None = None  # submitit's handler: rank 0 pickles the requeued job, requeues it and exits
_signum: int | None = None
_listening = False
_asked = False


def take_over(signum: int) -> None:
    """Put `_on_signal` in front of the handler submitit installed for `signum` (in a job, before it runs)."""
    global _requeue, _signum
    previous = signal.getsignal(signum)
    if callable(previous) and previous is not _on_signal:
        _requeue, _signum = previous, signum
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame) -> None:
    global _asked
    if _listening:
        _asked = True  # acted on at the next step boundary
    elif _requeue is not None:
        _requeue(signum, frame)


@contextmanager
def listening():
    """While the loop runs: a preemption signal waits for `stop_if_asked` at a step boundary."""
    global _listening
    _listening = True
    try:
        yield
    finally:
        _listening = False


def stop_if_asked(save: Callable[[], None], step: int, distributed: bool, device) -> None:
    """At a step boundary, on every rank: when any rank was signalled, `save()` (each rank its share), then
    requeue and exit (SystemExit); otherwise return. Under DDP this is one tiny all-reduce a step."""
    if _requeue is None:
        return
    asked = _asked
    if distributed:
        import torch
        import torch.distributed as dist

        flag = torch.tensor([float(asked)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        asked = bool(flag.item())
    if not asked:
        return
    save()
    log.warning("preempted: saved the checkpoint at step %d; the job requeues and resumes there", step)
    if distributed:
        import torch.distributed as dist

        dist.barrier()  # every rank's share of the checkpoint is on disk
    try:
        _requeue(_signum, None)  # rank 0: requeue and SystemExit; the other ranks return
    finally:
        if distributed:
            dist.barrier()  # the other ranks leave once rank 0 has requeued
    raise SystemExit(-1)
