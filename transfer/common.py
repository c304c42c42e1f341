"""The pieces every transfer protocol shares: the frozen model, data names and fingerprints, presets, records.

Protocols use them through `transfer.runner.ProtocolRun` (clock, config, seed, model, device, features,
record); the readers and helpers here are also what tests and benchmarks call directly. Nothing here
imports a protocol, so protocols can import it freely.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import torch
from torch import nn

from hexa_zoo import records
from hexa_zoo.config import load_config, to_dict
from hexa_zoo.errors import ConfigError, DataError

T = TypeVar("T")

# Hashing file contents is exact but reads every byte; above this many bytes the fingerprint uses
# relative paths and sizes only, so fingerprinting ImageNet costs a directory walk, not a full read.
CONTENT_HASH_LIMIT_BYTES = 512 * 2**20




# --------------------------------------------------------------------------------------------- model

def load_model(spec: str, *, arch: str | None = None) -> tuple[nn.Module, dict]:
    """The frozen trunk named by `spec` (registered name[.tag], zoo folder, .safetensors or checkpoint).

    Returns `(model, info)` from `hexa_zoo.load_trunk`: a timm model with `num_classes=0` in eval mode
    with every parameter's `requires_grad` off, and info with name, arch, weights_sha256, source, mean, std.
    """
    import hexa_zoo

    model, info = hexa_zoo.load_trunk(spec, arch=arch)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(info)


def model_record(info: Mapping[str, Any]) -> dict:
    """The `model` block of a result record."""
    return {k: info.get(k) for k in ("name", "arch", "weights_sha256", "source")}


def feature_dim(model: nn.Module) -> int:
    """Width of the trunk's pooled features (timm's `num_features`)."""
    dim = getattr(model, "num_features", None)
    if not dim:
        raise ConfigError(f"model {type(model).__name__} has no num_features",
                          "use a timm model created with num_classes=0")
    return int(dim)


def select_device(device: str | None = None) -> torch.device:
    """`device` if given, else the first CUDA GPU when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------- data

def dataset_name(spec: str | os.PathLike, root: Path | None = None) -> str:
    """A short name for records and benchmark names: "embedded", else the folder's name in lower case."""
    if str(spec) == "embedded":
        return "embedded"
    return (root or Path(spec)).resolve().name.lower() or "data"


def dataset_fingerprint(paths: Iterable[str | os.PathLike], *, root: str | os.PathLike | None = None,
                        content: bool | None = None) -> str:
    """A sha256 identifying a set of files: their relative paths, sizes and (if small enough) contents.

    `root` is what paths are made relative to (default: their common parent), so the same data
    moved elsewhere has the same fingerprint. `content=None` hashes contents when the files total
    at most CONTENT_HASH_LIMIT_BYTES; the result is prefixed "sha256:" (contents) or "sha256-meta:"
    (paths and sizes only) so a reader knows which it is. The order of `paths` does not matter.
    """
    files = sorted({Path(p).resolve() for p in paths})
    if not files:
        raise DataError("cannot fingerprint an empty set of files", "check that the dataset folder has images")
    base = Path(root).resolve() if root is not None else Path(os.path.commonpath([f.parent for f in files]))
    sizes = [f.stat().st_size for f in files]
    if content is None:
        content = sum(sizes) <= CONTENT_HASH_LIMIT_BYTES
    digest = hashlib.sha256()
    for f, size in zip(files, sizes):
        rel = f.relative_to(base).as_posix() if f.is_relative_to(base) else f.as_posix()
        digest.update(f"{rel}\0{size}\0".encode())
        if content:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return ("sha256:" if content else "sha256-meta:") + digest.hexdigest()


def dataset_record(spec: str | os.PathLike, root: Path, fingerprint: str, **extra: Any) -> dict:
    """The `dataset` block of a result record (name, path, fingerprint, plus e.g. split sizes)."""
    return {"name": dataset_name(spec, root), "path": str(root), "fingerprint": fingerprint, **extra}


def embedded_images_per_class(share: float) -> int:
    """Images per class of the embedded classify splits at `share` (0-1) of their full size (200 at a third,
    never below 20): what linear and kNN keep when a caller shrinks them, the same for both."""
    return max(20, round(600 * share))


def benchmark_name(dataset: str, protocol: str) -> str:
    """`<dataset>_<protocol>` with the protocol's dashes as underscores: embedded_lowshot_svm."""
    return f"{dataset}_{protocol.replace('-', '_')}"


# -------------------------------------------------------------------------------------------- config

def resolve_config(cls: type[T], presets: Mapping[str, T], preset: str, overrides: Sequence[str] = ()) -> T:
    """The named preset with `--set key=value` overrides applied (unknown preset -> ConfigError)."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r} for {cls.__name__}",
                          f"choose one of: {', '.join(sorted(presets))}")
    cfg = load_config(cls, None, overrides, base=presets[preset])
    for name, value in vars(cfg).items():  # a period of 0 would divide by zero deep inside the run
        if name.endswith("_every") and isinstance(value, int) and value < 1:
            raise ConfigError(f"{name}={value}: a period in steps must be at least 1",
                              f"pass --set {name}=N with N >= 1 (the preset has {getattr(presets[preset], name)})")
    return cfg


# -------------------------------------------------------------------------------------------- record

@dataclass
class RunClock:
    """Wall time of a protocol run, started when the run starts."""

    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def finish_record(*, protocol: str, benchmark: str, out: str | os.PathLike, model_info: Mapping[str, Any],
                  dataset: Mapping[str, Any], config: Any, metrics: Mapping[str, Any], seed: int,
                  preset: str | None, clock: RunClock | None = None, wall_time_s: float | None = None,
                  notes: Iterable[str] = (), artifacts: Mapping[str, Any] | None = None) -> dict:
    """Build the result record (hexa_zoo.records schema), write it atomically into `out`, return it.

    `config` is the protocol's dataclass (or a dict); `metrics` maps a name to a list of values over
    samples/seeds, a single float, or an already summarised `records.metric(...)` dict (which may
    carry extra keys such as `ci95`). `artifacts` (optional) names files the run wrote beside the record, e.g.
    the linear head. The returned record has `_path`, where it was written.
    """
    summarised = {}
    for name, value in metrics.items():
        summarised[name] = dict(value) if isinstance(value, Mapping) else records.metric(value)
    if wall_time_s is None and clock is not None:
        wall_time_s = clock.elapsed()
    record = records.make_record(
        protocol=protocol, benchmark=benchmark, dataset=dict(dataset), model=model_record(model_info),
        metrics=summarised, config=config if isinstance(config, dict) else to_dict(config), seed=seed,
        preset=preset, wall_time_s=None if wall_time_s is None else round(wall_time_s, 3), notes=notes)
    if artifacts:
        record["artifacts"] = dict(artifacts)
    path = records.write_record(out, record)
    record["_path"] = str(path)
    return record
