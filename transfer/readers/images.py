"""ImageFolder splits (`<root>/<split>/<class>/<image>`, ImageNet's layout and the embedded data's `classify/`):
the images and labels of a split, with the training split's classes indexing every other split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hexa_zoo.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root`, sorted (the order every protocol uses)."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def classification_root(spec: str | os.PathLike, root: Path) -> Path:
    """The folder holding `train/`, `val/` (and maybe `test/`) ImageFolder splits.

    The embedded dataset keeps them under `classify/`; a user's path is that folder itself
    (ImageNet's layout: `train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`).
    """
    return root / "classify" if str(spec) == "embedded" else root


@dataclass(frozen=True)
class LabeledImages:
    """Image paths with integer labels, the class names indexing them, and where they came from."""

    paths: list[Path]
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    root: Path


def read_image_split(root: Path, split: str, classes: Sequence[str] | None = None, *,
                     max_per_class: int = 0) -> LabeledImages:
    """The ImageFolder tree `root/split`, labelled by `classes` (default: its own sorted class folders).

    Passing the training split's classes keeps labels aligned when another split lacks a class;
    a class folder that is not among `classes` is a DataError, never silently relabelled.
    `max_per_class > 0` keeps the first that many images of each class (sorted order): a
    deterministic reduced run, recorded in the config of the protocol that asks for it.
    """
    from hexa_zoo.data import ImageFolderDataset

    folder = root / split
    if not folder.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"split folder {folder} does not exist (found: {have or 'nothing'})",
                        f"give a dataset with {split}/<class>/<image> folders, or choose the split with --set")
    data = ImageFolderDataset(folder)
    if classes is None:
        classes = list(data.classes)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(data.classes) - set(index))
    if unknown:
        raise DataError(f"{folder} has class folders {unknown[:5]} that the training split lacks",
                        "make both splits hold the same class folders")
    samples = data.samples
    if max_per_class > 0:
        kept, taken = [], np.zeros(len(data.classes), dtype=np.int64)
        for p, t in samples:
            if taken[t] < max_per_class:
                kept.append((p, t))
                taken[t] += 1
        samples = kept
    paths = [Path(p) for p, _ in samples]
    labels = np.array([index[data.classes[t]] for _, t in samples], dtype=np.int64)
    return LabeledImages(paths, labels, list(classes), folder)


def read_classification_splits(spec: str, root: Path, train_split: str, eval_split: str, max_per_class: int = 0
                               ) -> tuple[LabeledImages, LabeledImages]:
    """The train and evaluation ImageFolder splits of `--data spec` (resolved to `root`), labelled by the train
    classes."""
    split_root = classification_root(spec, root)
    train = read_image_split(split_root, train_split, max_per_class=max_per_class)
    evaluation = read_image_split(split_root, eval_split, classes=train.classes, max_per_class=max_per_class)
    return train, evaluation
