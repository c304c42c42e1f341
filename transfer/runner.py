"""The protocol runner: what every `hexa transfer` protocol does around its evaluation, written once.

    run = ProtocolRun.start("knn", KnnConfig, PRESETS, model, data, preset=preset, overrides=overrides, seed=seed)
    cfg = run.cfg                                        # the preset with the --set overrides applied
    run.use_data(run.root, train.paths + test.paths, splits={...}, num_classes=...)  # the record's dataset block
    feats = run.features(train.paths, transform, desc="knn train")              # cached, on run.device
    ...evaluate...
    return run.finish(benchmark_name(run.dataset["name"], "knn"), out, metrics, notes=notes)

`start` starts the clock, resolves the config, seeds the global RNGs, loads the frozen trunk, resolves the
data root (`run.root`: the embedded data's folder, or the existing path `--data` names) and picks the device and
the loader workers from the config (`device`, `num_workers` or `workers` where it has them).
`use_data` fingerprints the run's files once; every split's feature-cache key is derived from that one
fingerprint, so no file is hashed twice in a run. `finish` writes the one result record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from hexa_zoo.embedded import resolve_data
from hexa_zoo.errors import DataError
from hexa_zoo.seeding import seed_everything

from .common import RunClock, dataset_fingerprint, dataset_record, finish_record, load_model, resolve_config, \
    select_device
from .features import ArrayImages, EvalTransform, extract_features


@dataclass
class ProtocolRun:
    """One protocol run: its config, seed, model, device, data fingerprint and clock."""

    protocol: str
    preset: str
    seed: int
    cfg: Any
    data_spec: str
    root: Path
    trunk: nn.Module | None
    info: dict
    device: torch.device
    num_workers: int | None
    clock: RunClock
    dataset: dict = field(default_factory=dict)
    _fingerprint_base: Path | None = None
    _fingerprinted: frozenset = frozenset()

    @classmethod
    def start(cls, protocol: str, config_cls: type, presets: Mapping[str, Any], model: str | None, data: str, *,
              preset: str, overrides: Sequence[str] = (), seed: int = 0) -> "ProtocolRun":
        """Clock, config, seed, trunk (skipped when `model` is None), data root, device and workers of a new run."""
        clock = RunClock()
        cfg = resolve_config(config_cls, presets, preset, overrides)
        seed_everything(seed)
        trunk, info = load_model(model) if model is not None else (None, {})
        root = resolve_data(data)
        workers = getattr(cfg, "num_workers", getattr(cfg, "workers", None))
        return cls(protocol, preset, seed, cfg, str(data), root, trunk, info, select_device(getattr(cfg, "device", None)),
                   workers, clock)

    # ------------------------------------------------------------------------------------------ data

    def use_data(self, root: Path, files: Iterable[str | os.PathLike], *, fingerprint_root: Path | None = None,
                 **extra: Any) -> dict:
        """Fingerprint every file the run reads (once) and set the record's `dataset` block from it."""
        files = [Path(p).resolve() for p in files]
        fingerprint = dataset_fingerprint(files, root=fingerprint_root)
        self._fingerprint_base = (Path(fingerprint_root).resolve() if fingerprint_root is not None else
                                  Path(os.path.commonpath([f.parent for f in files])))
        self._fingerprinted = frozenset(files)
        self.dataset = dataset_record(self.data_spec, root, fingerprint, **extra)
        return self.dataset

    def split_fingerprint(self, paths: Sequence[str | os.PathLike]) -> str:
        """The feature-cache identity of a split: the run's fingerprint and where the split's files sit.

        The run's fingerprint covers the split's contents; the split's folder (relative to the fingerprinted
        base) tells apart splits whose file lists read the same relative to their own folders (train/a/1.png
        and val/a/1.png).
        """
        if isinstance(paths, ArrayImages):  # in memory: their ids say which split, the fingerprint what data
            if not self.dataset:
                raise DataError(f"{self.protocol}: features asked for before use_data", "call use_data first")
            return f"{self.dataset['fingerprint']}|arrays"
        resolved = [Path(p).resolve() for p in paths]
        if not self.dataset or not self._fingerprinted.issuperset(resolved):
            raise DataError(f"{self.protocol}: features asked for files outside the run's fingerprinted data",
                            "call use_data with every file of the run before extracting features")
        folder = Path(os.path.commonpath([p.parent for p in resolved]))
        where = folder.relative_to(self._fingerprint_base).as_posix() if folder.is_relative_to(
            self._fingerprint_base) else folder.as_posix()
        return f"{self.dataset['fingerprint']}|{where}"

    def features(self, paths: Sequence[str | os.PathLike] | ArrayImages, transform: EvalTransform, *, desc: str,
                 batch_size: int | None = None, pooling: str = "gap") -> torch.Tensor:
        """The frozen trunk's features of `paths` (cached on disk), (N, D) float32 on the CPU."""
        return extract_features(self.trunk, paths, transform, weights_sha256=self.info["weights_sha256"],
                                fingerprint=self.split_fingerprint(paths),
                                batch_size=batch_size or getattr(self.cfg, "batch_size", 64), device=self.device,
                                num_workers=self.num_workers, desc=desc, pooling=pooling).features

    def transform(self, resize: int, crop: int, *, square: bool = False,
                  interpolation: str = "bilinear") -> EvalTransform:
        """The evaluation transform with the model's mean and std."""
        return EvalTransform.for_model(self.info, resize, crop, square=square, interpolation=interpolation)

    # ---------------------------------------------------------------------------------------- record

    def finish(self, benchmark: str, out: str | os.PathLike, metrics: Mapping[str, Any], *,
               notes: Iterable[str] = (), config: Any = None, protocol: str | None = None,
               artifacts: Mapping[str, Any] | None = None) -> dict:
        """Write the run's result record into `out` (atomically) and return it."""
        return finish_record(protocol=protocol or self.protocol, benchmark=benchmark, out=out, model_info=self.info,
                             dataset=self.dataset, config=self.cfg if config is None else config, metrics=metrics,
                             seed=self.seed, preset=self.preset, clock=self.clock, notes=notes, artifacts=artifacts)
