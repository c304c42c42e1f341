"""Result records: one JSON file per run, only ever added, never edited.

Schema (version 1), written by every `hexa transfer` protocol and read by `hexa leaderboard`:

    {
      "schema": "hexa-result/1",
      "protocol": "knn",                       # linear | knn | lowshot-svm | semisup | fewshot | detection | pretrain
      "benchmark": "embedded_knn",             # the leaderboard table this row belongs to
      "preset": "embedded",
      "dataset": {"name": "embedded", "path": "...", "fingerprint": "sha256..."},
      "model": {"name": "hexa_moco_r18.embedded", "weights_sha256": "...", "source": "..."},
      "metrics": {"top1@20": {"mean": 71.2, "std": 0.0, "n": 1, "values": [71.2]}, ...},
      "config": {...},                         # the fully resolved protocol config
      "seed": 0,
      "provenance": {"package_version": "0.1.0", "git_commit": "abc123" | null,
                     "host": "...", "python": "3.11.7", "torch": "2.14.1"},
      "wall_time_s": 12.3,
      "created": "2026-11-28T01:02:03Z",
      "notes": ["k=96 skipped for class 'cow': only 40 positives", ...]
    }
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .fileio import atomic_write_json

SCHEMA = "hexa-result/1"
REQUIRED_KEYS = ("schema", "protocol", "benchmark", "dataset", "model", "metrics", "config", "seed")


def metric(values: Sequence[float] | float) -> dict:
    """Summarise one metric over samples or seeds: mean, std (sample, 0 for n=1), n and the values."""
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if not vals:
        raise ValueError("a metric needs at least one value")
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "std": std, "n": len(vals), "values": vals,
            "min": min(vals), "max": max(vals)}


def git_commit(start: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    here = Path(start or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance() -> dict:
    import torch

    from . import __version__

    return {"package_version": __version__, "git_commit": git_commit(), "host": socket.gethostname(),
            "python": platform.python_version(), "torch": torch.__version__}


def make_record(*, protocol: str, benchmark: str, dataset: dict, model: dict, metrics: dict,
                config: dict, seed: int, preset: str | None = None, wall_time_s: float | None = None,
                notes: Iterable[str] = ()) -> dict:
    for name, m in metrics.items():
        if not {"mean", "std", "n", "values"} <= set(m):
            raise ValueError(f"metric {name!r} must come from records.metric(): {m}")
    return {
        "schema": SCHEMA, "protocol": protocol, "benchmark": benchmark, "preset": preset,
        "dataset": dataset, "model": model, "metrics": metrics, "config": config, "seed": seed,
        "provenance": provenance(), "wall_time_s": wall_time_s,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "notes": list(notes),
    }


def write_record(results_dir: str | os.PathLike, record: dict) -> Path:
    """Write `record` atomically under a fresh unique name; concurrent writers never collide."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")
    _check_finite(record["metrics"])
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    model = str(record["model"].get("name", "model")).replace("/", "_")
    name = f"{record['protocol']}-{model}-{stamp}-{uuid.uuid4().hex[:8]}.json"
    return atomic_write_json(Path(results_dir) / name, record)


def _check_finite(metrics: dict) -> None:
    for name, m in metrics.items():
        if not all(math.isfinite(v) for v in m["values"]):
            raise ValueError(f"metric {name!r} has non-finite values {m['values']}")


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


def read_records(dirs: Iterable[str | os.PathLike]) -> tuple[list[dict], list[SkippedFile]]:
    """All valid records under `dirs` (recursively), sorted by path, and the files skipped and why."""
    records, skipped = [], []
    for d in dirs:
        for path in sorted(Path(d).rglob("*.json")):
            if path.name.startswith("."):
                continue  # a temporary being written
            try:
                rec = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                skipped.append(SkippedFile(path, f"not valid JSON ({err})"))
                continue
            if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
                skipped.append(SkippedFile(path, f"not a {SCHEMA} record"))
                continue
            missing = [k for k in REQUIRED_KEYS if k not in rec]
            if missing:
                skipped.append(SkippedFile(path, f"record lacks {missing}"))
                continue
            rec["_path"] = str(path)
            records.append(rec)
    return records, skipped
