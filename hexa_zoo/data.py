"""Image folders for training and feature extraction, robust to the odd bad file.

`ImageFolderDataset` reads either an ImageFolder tree (one subfolder per class, as ImageNet's train
set is laid out) or a flat folder of unlabelled images. Every image comes out as RGB whatever its
mode (grayscale, palette, RGBA, CMYK, 16-bit). A file that cannot be decoded (truncated, corrupt,
not really an image) does not raise: `__getitem__` returns a `BadImage` naming it, and
`collate_skipping_bad` drops it from the batch and hands its path to the caller, who counts and
reports it. A run hours into ImageNet therefore never dies on one broken JPEG, and never hides it.

Sample order is deterministic: classes and files sorted by name, as torchvision's ImageFolder does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import DataError

# The same extensions torchvision's ImageFolder accepts (compared case-insensitively).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The single class of a flat folder of images.
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class BadImage:
    """An image that could not be read: where it is and why (picklable, so it crosses worker processes)."""

    path: str
    reason: str


def is_image_file(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(IMG_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    """Every image file below `folder` (following links, skipping hidden entries), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if not f.startswith(".") and is_image_file(f))
    return sorted(found)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparent pixels become white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grayscale: rescale, don't clip
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            peak = max(float(arr.max()), 1.0)
        else:
            peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # as PIL recommends for palette transparency
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully (so truncation shows now, not later) and return it as RGB."""
    with Image.open(path) as img:
        img.load()
        return _to_rgb(img)


# JPEG colour spaces simplejpeg decodes to the same RGB bytes as PIL (tests/test_data_folder.py);
# CMYK and anything else go through PIL, whose conversion they would only approximate.
_SIMPLEJPEG_SPACES = ("YCbCr", "Gray")


def load_rgb_array(path: str | os.PathLike) -> np.ndarray:
    """Decode an image fully to a uint8 (H, W, 3) RGB array: what the pre-training loader workers call.

    JPEGs (nearly all of ImageNet) go through simplejpeg: the same libjpeg-turbo as PIL, without PIL's
    per-image overhead and the copy out of the PIL image: 1.21x PIL's decoding, measured by
    bench/data_pipeline.py (`decode_vs_pil`). Other files, or a JPEG it declines, take
    `load_rgb`; a truncated JPEG raises either way.
    """
    import simplejpeg

    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\xff\xd8":
        try:
            if simplejpeg.decode_jpeg_header(data)[2] in _SIMPLEJPEG_SPACES:
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            pass  # PIL decides: it reads some JPEGs libjpeg-turbo's strict header check declines, and names the fault
    return np.asarray(load_rgb(path))


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask (a container's or taskset's limit), not the host's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(items: int, at_least: int) -> int:
    """DataLoader workers sized to the machine: every usable core but the main process's, or 0 below
    `at_least` items (starting workers then costs more than they save). On a 16-core GPU host, 15."""
    return max(1, usable_cores() - 1) if items >= at_least else 0


class ImageFolderDataset:
    """An ImageFolder tree (`root/<class>/**/<image>`) or a flat folder of images (all target 0).

    Attributes: `root`, `classes` (sorted class names; `["unlabelled"]` for a flat folder),
    `class_to_idx`, `samples` [(path, target)] and `targets`, all in sorted, deterministic order.
    `__getitem__(i)` returns `(transform(img), target, i)`, or `BadImage(path, reason)` when the file
    cannot be decoded; `img` is what `loader` returns (`load_rgb`: a PIL image; `load_rgb_array`: a
    uint8 HWC array). Empty class folders are ignored; a folder with no images raises DataError.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[Image.Image], Any] | None = None,
                 loader: Callable[[str], Any] = load_rgb):
        self.root = Path(root)
        self.transform, self.loader = transform, loader
        if not self.root.is_dir():
            raise DataError(f"Image folder {self.root} does not exist or is not a folder.",
                            fix="Pass a folder of class subfolders (ImageNet train layout) or of images.")
        entries = sorted(e for e in os.listdir(self.root) if not e.startswith("."))
        subdirs = [e for e in entries if (self.root / e).is_dir()]
        loose = [e for e in entries if (self.root / e).is_file() and is_image_file(e)]
        per_class = {d: _images_under(self.root / d) for d in subdirs}
        per_class = {d: files for d, files in per_class.items() if files}
        if per_class and loose:
            raise DataError(f"Image folder {self.root} mixes images ({loose[0]}, ...) with class subfolders "
                            f"({next(iter(per_class))}, ...), so the labels are ambiguous.",
                            fix="Move the loose images into a class subfolder, or point at a folder holding only one kind.")
        if per_class:
            self.classes = sorted(per_class)
            self.samples = [(p, t) for t, c in enumerate(self.classes) for p in per_class[c]]
        elif loose:
            self.classes = [UNLABELLED]
            self.samples = [(str(self.root / e), 0) for e in loose]
        else:
            raise DataError(f"Image folder {self.root} contains no images "
                            f"(looked for {', '.join(IMG_EXTENSIONS)} in it and in its subfolders).",
                            fix="Check the path; an ImageFolder tree has one subfolder of images per class.")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            img = self.loader(path)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data (OSError, SyntaxError, ...)
            return BadImage(str(path), f"{type(exc).__name__}: {exc}")
        if self.transform is not None:
            img = self.transform(img)
        return img, target, index

    def __repr__(self) -> str:
        return f"ImageFolderDataset(root={str(self.root)!r}, images={len(self)}, classes={len(self.classes)})"


def ignore_interrupt(_worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: Ctrl-C reaches every process of the terminal's group; the main process
    alone handles it (and shuts the workers down), so workers print no traceback of their own."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def first_readable(dataset: ImageFolderDataset, needed: int, positions: Sequence[int] | None = None
                   ) -> tuple[int, list[BadImage]]:
    """Decode images of `dataset` (at `positions`, default all, in order) until `needed` of them read.

    Returns (readable count, the unreadable ones met on the way): a training run asks this before its
    first step, so a folder of broken files fails at once instead of "training" on nothing.
    """
    readable, bad = 0, []
    for i in (range(len(dataset)) if positions is None else positions):
        path = dataset.samples[i][0]
        try:
            dataset.loader(path)
        except Exception as exc:  # noqa: BLE001 - the same failures __getitem__ turns into BadImage
            bad.append(BadImage(str(path), f"{type(exc).__name__}: {exc}"))
            continue
        readable += 1
        if readable >= needed:
            break
    return readable, bad


def collate_skipping_bad(batch: Sequence[Any]):
    """Collate `(image, target, index)` items, dropping `BadImage`s.

    Returns `(images, targets, indices, bad_paths)`; images are stacked by torch's default_collate
    (a transform returning a list of views gives a list of stacked tensors). When every item of the
    batch is bad, images is None and targets/indices are empty: skip such a batch.
    """
    import torch
    from torch.utils.data import default_collate

    good = [item for item in batch if not isinstance(item, BadImage)]
    bad_paths = [item.path for item in batch if isinstance(item, BadImage)]
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return None, empty, empty.clone(), bad_paths
    images, targets, indices = default_collate(good)
    return images, targets, indices, bad_paths
