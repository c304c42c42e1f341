"""Weighted k-nearest-neighbour classification on frozen features (InstDisc / DINO protocol).

Features are L2-normalised, so the similarity is the cosine. Each test image takes its k most similar
training images; neighbour j votes for its class with weight exp(sim_j / T); the class with the largest
total wins (top-5: the five largest). Presets:
- `paper`: DINO's `eval_knn.py`: bicubic Resize(256) + CenterCrop(224), k in {10, 20, 100, 200}, T = 0.07
  (DINO reports k = 20);
- `vissl`: VISSL's `NEAREST_NEIGHBOR` benchmark: k = 200, sigma (T) = 0.1;
- `lightly`: lightly's benchmark `knn_predict`: k = 200, T = 0.1;
- `paper_bilinear`: our earlier InstDisc-style preset (bilinear resize, k in {20, 200}, T = 0.07).

Memory stays bounded on large sets: test images go in chunks of `chunk_size`, and for each chunk the
training set is scanned in chunks too, merging a running top-k, so at most chunk_size x chunk_size
similarities exist at once (ImageNet's 1.28M x 2048 training features never meet the 50k val set in
one matrix).

    hexa transfer knn --model hexa_moco_r18.embedded --data embedded --out results/
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch

from hexa_zoo.knn import knn_predict

from ..common import benchmark_name, embedded_images_per_class
from ..readers.images import read_classification_splits
from ..metrics import topk_accuracy
from ..runner import ProtocolRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnnConfig:
    ks: tuple[int, ...] = (20, 200)
    temperature: float = 0.07
    resize: int = 256          # eval transform: Resize(resize) + CenterCrop(crop)
    crop: int = 224
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    train_split: str = "train"
    eval_split: str = "val"
    max_per_class: int = 0     # > 0: only the first N images of each class per split (quick runs)
    batch_size: int = 128      # feature extraction
    chunk_size: int = 4096     # rows of each similarity block
    device: str = ""           # "" = CUDA when available, else CPU


PRESETS: dict[str, KnnConfig] = {
    "paper": KnnConfig(ks=(10, 20, 100, 200)),                           # DINO eval_knn.py
    "vissl": KnnConfig(ks=(200,), temperature=0.1, interpolation="bilinear"),
    "lightly": KnnConfig(ks=(200,), temperature=0.1, interpolation="bilinear"),
    "paper_bilinear": KnnConfig(interpolation="bilinear"),
    # Unchanged from before the presets above (the committed embedded leaderboard rows): bilinear.
    "embedded": KnnConfig(resize=64, crop=64, batch_size=100, interpolation="bilinear"),
}


def embedded_sizes(share: float) -> dict:
    """The embedded preset's settings at `share` (0-1) of its full size: below a third, fewer images per class
    (as linear, so one feature cache serves both)."""
    return {"max_per_class": embedded_images_per_class(share)} if share < 1 / 3 else {}


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """Weighted kNN of `model`'s frozen features on an ImageFolder dataset's train/val splits."""
    run = ProtocolRun.start("knn", KnnConfig, PRESETS, model, data, preset=preset, overrides=overrides, seed=seed)
    cfg = run.cfg
    train, test = read_classification_splits(data, run.root, cfg.train_split, cfg.eval_split, cfg.max_per_class)
    run.use_data(run.root, train.paths + test.paths, splits={cfg.train_split: len(train.paths),
                                                         cfg.eval_split: len(test.paths)},
                 num_classes=len(train.classes))
    tf = run.transform(cfg.resize, cfg.crop, interpolation=cfg.interpolation)
    train_f = run.features(train.paths, tf, desc="knn train")
    test_f = run.features(test.paths, tf, desc="knn eval")

    scores = knn_predict(train_f.to(run.device), torch.from_numpy(train.labels), test_f, len(train.classes), cfg.ks,
                         cfg.temperature, cfg.chunk_size)
    targets = torch.from_numpy(test.labels)
    metrics, notes = {}, []
    for k in cfg.ks:
        acc = topk_accuracy(scores[k], targets, ks=(1, 5))
        metrics[f"top1@{k}"], metrics[f"top5@{k}"] = acc[1], acc[5]
        if k > len(train.paths):
            notes.append(f"k={k} exceeds the {len(train.paths)} training images: all of them vote")
    log.info("knn: %s", ", ".join(f"{n}={v:.2f}" for n, v in metrics.items()))
    return run.finish(benchmark_name(run.dataset["name"], "knn"), out, metrics, notes=notes)
