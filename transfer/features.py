"""One feature extractor for every frozen-feature protocol (kNN, fast linear, low-shot SVM, few-shot).

    tf = EvalTransform.for_model(info, resize=256, crop=224)
    feats = extract_features(model, paths, tf, weights_sha256=info["weights_sha256"]).features  # (N, D)

Images are decoded (JPEGs with simplejpeg, as in pre-training), resized and centre-cropped in DataLoader
workers (every usable core but one by default, `hexa_zoo.data.loader_workers`) and travel as uint8 (four times
less to copy than float); the mean/std normalisation happens on the device, fused into one
multiply-add. The trunk runs under `torch.inference_mode()`, in channels_last on CUDA, and writes
straight into a preallocated (pinned, on CUDA) output, so the extractor adds almost nothing to the
model's own forward time (bench/features.py measures it).

Features are cached on disk under `feature_cache_dir()` keyed by the weights' sha256, the data
fingerprint (contents of the files), the ordered list of files and the transform's description, so a
second protocol on the same model and data reads them back instead of recomputing. A cache file is
written atomically; a corrupt one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from hexa_zoo.data import ignore_interrupt, load_rgb_array, loader_workers
from hexa_zoo.errors import DataError
from hexa_zoo.fileio import atomic_save_safetensors

from .common import dataset_fingerprint, feature_dim, select_device
from .progress import progress
from .randomness import quiet_loader_generator

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = "hexa-features/1"  # bump when the extraction itself changes meaning
PIN_LIMIT_BYTES = 2 * 2**30


def feature_cache_dir() -> Path:
    """`$HEXA_FEATURE_CACHE`, else `features/` inside the zoo home (`$HEXA_ZOO_HOME`, ~/.cache/hexa_zoo)."""
    if os.environ.get("HEXA_FEATURE_CACHE"):
        return Path(os.environ["HEXA_FEATURE_CACHE"]).expanduser()
    home = os.environ.get("HEXA_ZOO_HOME") or "~/.cache/hexa_zoo"
    return Path(home).expanduser() / "features"


@dataclass(frozen=True)
class EvalTransform:
    """Resize (shorter side, or both sides when `square`) then centre crop, then normalise.

    MoCo/ImageNet evaluation: resize 256, crop 224. VISSL's VOC07 SVM: square 224x224, crop 224.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    square: bool = False
    interpolation: str = "bilinear"

    @classmethod
    def for_model(cls, info: dict, resize: int, crop: int, *, square: bool = False,
                  interpolation: str = "bilinear") -> "EvalTransform":
        return cls(resize=resize, crop=crop, mean=tuple(float(m) for m in info["mean"]),
                   std=tuple(float(s) for s in info["std"]), square=square, interpolation=interpolation)

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def pil_to_uint8(self) -> v2.Compose:
        """The CPU half: PIL image -> resized, cropped uint8 tensor (C, crop, crop)."""
        mode = v2.InterpolationMode(self.interpolation)
        size = (self.resize, self.resize) if self.square else self.resize
        return v2.Compose([v2.Resize(size, interpolation=mode, antialias=True), v2.CenterCrop(self.crop),
                           v2.PILToTensor()])

    def normalizer(self, device: torch.device) -> "DeviceNormalize":
        return DeviceNormalize(self.mean, self.std, device)


class DeviceNormalize:
    """uint8 (B, 3, H, W) -> normalised float: (x / 255 - mean) / std as one multiply-add on the device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


@dataclass(frozen=True)
class ArrayImages:
    """Images held in memory (CIFAR's batches): uint8 (N, H, W, 3), and an id for each (the cache key's
    order; the data fingerprint comes from the files they were read from)."""

    arrays: "np.ndarray"
    ids: list[str]

    def __len__(self) -> int:
        return len(self.arrays)


class _ArrayImages(Dataset):
    def __init__(self, images: ArrayImages, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images.arrays[i])), ""


class _ImageFiles(Dataset):
    """Images by path; an unreadable one is reported (not dropped) so the caller can raise with its path."""

    def __init__(self, paths: Sequence[Path], transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        try:  # any mode (grayscale, palette, RGBA, 16-bit) -> RGB; JPEGs through simplejpeg, as in pre-training
            img = Image.fromarray(load_rgb_array(self.paths[i]))
        except Exception as err:  # PIL raises many types for corrupt files
            return None, f"{self.paths[i]}: {type(err).__name__}: {err}"
        return self.transform(img), ""


def _collate(batch):
    bad = [reason for _, reason in batch if reason]
    if bad:
        return None, bad
    return torch.stack([x for x, _ in batch]), []


# How the trunk's last feature map becomes a vector. "gap": timm's global average pool (num_features wide).
# "vissl_res5": VISSL's VOC07 SVM features, AvgPool2d(6, stride 1) over res5 (7x7 at 224 px -> 2x2), flattened
# channel-major: 2048 x 4 = 8192-d for a ResNet-50 (vissl configs/config/benchmark/low_shot_transfer/voc07).
# Other image sizes keep the 2x2 output: the kernel is the map's side minus one (6 at 7x7, 3 at 4x4).
POOLINGS = ("gap", "vissl_res5")


def pooled(model: nn.Module, x: torch.Tensor, pooling: str = "gap") -> torch.Tensor:
    """The trunk's features of the batch `x` under `pooling` (see POOLINGS)."""
    if pooling == "gap":
        return model(x)
    if pooling == "vissl_res5":
        fmap = model.forward_features(x)
        kernel = (max(1, fmap.shape[-2] - 1), max(1, fmap.shape[-1] - 1))
        return torch.nn.functional.avg_pool2d(fmap, kernel_size=kernel, stride=1).flatten(1)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


class Features(NamedTuple):
    features: torch.Tensor  # (N, D) float32 on the CPU, rows in the order of the paths given
    from_cache: bool
    cache_path: Path | None


def cache_key(weights_sha256: str, paths: Sequence[Path] | ArrayImages, transform: EvalTransform,
              fingerprint: str | None = None) -> str:
    """sha256 of what determines the features: weights, data contents, file order, transform."""
    if isinstance(paths, ArrayImages):
        if fingerprint is None:
            raise ValueError("images held in memory need the fingerprint of the files they came from")
        names = paths.ids
    else:
        fingerprint = fingerprint or dataset_fingerprint(paths)
        base = Path(os.path.commonpath([Path(p).resolve().parent for p in paths]))
        names = [Path(p).resolve().relative_to(base).as_posix() for p in paths]
    order = hashlib.sha256("\n".join(names).encode()).hexdigest()
    blob = json.dumps({"v": CACHE_VERSION, "weights": weights_sha256, "data": fingerprint, "order": order,
                       "transform": transform.describe()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def extract_features(model: nn.Module, paths: Sequence[str | os.PathLike] | ArrayImages, transform: EvalTransform, *,
                     weights_sha256: str | None, fingerprint: str | None = None, batch_size: int = 64,
                     num_workers: int | None = None, device: str | torch.device | None = None,
                     channels_last: bool | None = None, amp: bool = False, cache: bool = True,
                     cache_dir: Path | None = None, desc: str = "features", pooling: str = "gap") -> Features:
    """Pooled trunk features of the images at `paths`, in that order, cached on disk.

    `weights_sha256=None` disables the cache (nothing safe to key it on). `fingerprint` saves
    recomputing the data fingerprint when the caller has it. `channels_last=None` means on CUDA only.
    `amp` runs the trunk in bfloat16 autocast on CUDA (features still returned as float32; changes
    the cache key). `pooling` is one of POOLINGS (a non-default pooling changes the cache key).
    """
    paths = paths if isinstance(paths, ArrayImages) else [Path(p) for p in paths]
    if not len(paths):
        raise DataError("no images to extract features from", "check the dataset folder and split")
    device = select_device(str(device) if device is not None else None)
    use_cache = cache and weights_sha256 is not None
    cache_path = None
    if use_cache:
        key = cache_key(weights_sha256, paths, transform, fingerprint)
        if amp and device.type == "cuda":
            key = hashlib.sha256((key + ":bf16").encode()).hexdigest()
        if pooling != "gap":
            key = hashlib.sha256((key + f":pool={pooling}").encode()).hexdigest()
        cache_path = (cache_dir or feature_cache_dir()) / f"{key}.safetensors"
        cached = _read_cache(cache_path, len(paths))
        if cached is not None:
            log.info("%s: %d features read from cache %s", desc, len(paths), cache_path)
            return Features(cached, True, cache_path)

    if num_workers is None:
        num_workers = loader_workers(len(paths), at_least=4 * batch_size)
    images = (_ArrayImages if isinstance(paths, ArrayImages) else _ImageFiles)(paths, transform.pil_to_uint8())
    loader = DataLoader(images, batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if num_workers else None, generator=quiet_loader_generator(),
                        worker_init_fn=ignore_interrupt)

    def checked(batches):
        for images, bad in batches:
            if bad:
                raise DataError(f"cannot read {len(bad)} image(s): {'; '.join(bad[:5])}",
                                "remove or replace the corrupt files; a transfer run never drops data silently")
            yield images

    feats = forward_batches(model, checked(progress(loader, desc=f"{desc}: features of {len(paths)} images")), len(paths),
                            transform.normalizer(device), device=device, channels_last=channels_last, amp=amp,
                            pooling=pooling)
    if use_cache:
        _write_cache(cache_path, feats, weights_sha256, transform)
    return Features(feats, False, cache_path)


def forward_batches(model: nn.Module, batches: Iterable[torch.Tensor], total: int, normalize: DeviceNormalize,
                    *, device: torch.device, channels_last: bool | None = None, amp: bool = False,
                    pooling: str = "gap") -> torch.Tensor:
    """The extraction loop: uint8 CPU batches in order -> (total, D) float32 CPU features.

    Copies are asynchronous on CUDA (pinned output, non_blocking), so the GPU never waits for the host.
    """
    if channels_last is None:
        channels_last = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).eval()
    feature_dim(model)  # a trunk without pooled features is refused here, before any work
    out, filled = None, 0
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        for images in batches:
            x = normalize(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
            y = pooled(model, x, pooling)
            if y.ndim != 2:
                raise ValueError(f"trunk returned shape {tuple(y.shape)}; expected (batch, features): "
                                 "create it with num_classes=0")
            if out is None:  # the width is known once the first batch is through (pooling may widen it)
                # Pinned memory makes the copies asynchronous; pinning ImageNet-sized outputs (10 GB) would
                # starve the host, so very large outputs are ordinary memory (copies then wait, slightly).
                pin = device.type == "cuda" and total * y.shape[1] * 4 <= PIN_LIMIT_BYTES
                out = torch.empty(total, y.shape[1], dtype=torch.float32, pin_memory=pin)
            out[filled:filled + len(y)].copy_(y.float(), non_blocking=True)
            filled += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if filled != total:
        raise ValueError(f"extracted {filled} features for {total} images")
    return out


def _read_cache(path: Path, expected_rows: int) -> torch.Tensor | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        feats = load_file(path)["features"]
    except Exception as err:  # a truncated or foreign file: recompute rather than fail the run
        log.warning("feature cache %s is unreadable (%s); recomputing", path, err)
        return None
    if feats.shape[0] != expected_rows:
        log.warning("feature cache %s has %d rows, expected %d; recomputing", path, feats.shape[0], expected_rows)
        return None
    return feats


def _write_cache(path: Path, feats: torch.Tensor, weights_sha256: str, transform: EvalTransform) -> None:
    meta = {"format": CACHE_VERSION, "weights_sha256": weights_sha256, "transform": transform.describe()}
    try:
        atomic_save_safetensors({"features": feats.contiguous()}, path, meta)
    except OSError as err:  # a full or read-only disk costs a recomputation later, not this run
        log.warning("could not write feature cache %s: %s", path, err)
