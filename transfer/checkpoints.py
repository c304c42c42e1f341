"""Checkpoints of long protocol runs, so `--resume auto` continues a killed run where it stopped.

    ckpt = RunCheckpoint.for_run(run, out)           # keyed by protocol, weights, data, config and seed
    state = ckpt.load()                              # None: start afresh
    ... each epoch (or every N iterations): ckpt.save({...state dicts, counters, RNG states...})
    ckpt.done()                                      # the record is written: the checkpoint goes

A checkpoint is written atomically (a killed write leaves the previous one) under `<out>/checkpoints/` and
read with `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only. Every random
choice of the protocols comes from streams seeded by (seed, purpose, epoch) (transfer/randomness.py), so a
resumed run repeats the uninterrupted one exactly on the same machine; the global torch RNG that detection's
samplers draw from is saved and restored with the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hexa_zoo.config import to_dict
from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_path

log = logging.getLogger(__name__)

# Config keys that say how a run is carried out, not what it computes: a resume may change them.
NOT_IDENTITY = frozenset({"resume", "device", "num_workers", "workers", "log_every", "checkpoint_every"})


@dataclass
class RunCheckpoint:
    path: Path
    enabled: bool

    @classmethod
    def for_run(cls, run: Any, out: str | os.PathLike) -> "RunCheckpoint":
        """The checkpoint of `run` (a ProtocolRun with `use_data` called) in `out`; enabled by resume=auto."""
        resume = getattr(run.cfg, "resume", "")
        if resume not in ("", "auto", "never"):
            raise ConfigError(f"resume={resume!r}", "use --resume auto (or leave it out)")
        config = {k: v for k, v in to_dict(run.cfg).items() if k not in NOT_IDENTITY}
        identity = json.dumps({"protocol": run.protocol, "weights": run.info.get("weights_sha256"),
                               "data": run.dataset.get("fingerprint"), "config": config, "seed": run.seed},
                              sort_keys=True, default=str)
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return cls(Path(out) / "checkpoints" / f"{run.protocol}-{key}.pt", resume == "auto")

    def load(self) -> dict | None:
        if not self.enabled or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a foreign or truncated file: start afresh rather than fail
            log.warning("checkpoint %s is unreadable (%s); starting afresh", self.path, err)
            return None
        log.info("resuming from %s", self.path)
        return state

    def save(self, state: dict) -> None:
        if not self.enabled:
            return
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def done(self) -> None:
        if self.enabled and self.path.is_file():
            self.path.unlink()
