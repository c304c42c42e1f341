"""The online kNN monitor: how good the trunk's features are, every few epochs of pre-training.

As solo-learn's online kNN: the trunk (eval mode, no gradient) embeds a labelled memory split and a held-out
query split, each image resized and centre-cropped to the training crop size; every query takes the
exp(sim / T)-weighted vote of its k nearest memory features (`hexa_zoo.knn`), and the monitor reports the
top-1 accuracy (`knn_top1`, a percentage) in log.csv and TensorBoard beside the losses and the hardness.

Data: for `--data embedded`, memory = classify/train, queries = classify/val. For a folder, `monitor.data`
names a folder holding `train/` and `val/` ImageFolder trees (ImageNet's layout); left empty, the folder's
sibling `val/` is used when it exists (`.../imagenet/train` -> `.../imagenet/val`), else the monitor is off
with a one-line note. `monitor.max_images` caps each split (a seeded class-balanced subset; 0: all).

The monitor draws no random numbers from the global generators (no DataLoader, fixed subsets), so a run
with it resumes exactly as one without.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from hexa_zoo.data import BadImage, ImageFolderDataset
from hexa_zoo.embedded import resolve_data
from hexa_zoo.errors import ConfigError
from hexa_zoo.knn import knn_predict


@dataclass(frozen=True)
class MonitorConfig:
    """The online kNN monitor (`every` epochs; 0 switches it off)."""

    every: int = 0                 # evaluate after every N-th epoch (and after the last one)
    data: str = ""                 # folder with train/ and val/; "" = the embedded splits or the data's sibling val/
    k: int = 20
    temperature: float = 0.07
    max_images: int = 2000         # per split; a seeded, class-balanced subset (0: every image)
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.every < 0 or self.k < 1 or self.temperature <= 0 or self.max_images < 0:
            raise ConfigError(f"monitor settings out of range: {self}",
                              "use every >= 0 (0 = off), k >= 1, temperature > 0, max_images >= 0")


def monitor_splits(train_data: str, cfg: MonitorConfig) -> tuple[Path, Path] | None:
    """(memory, query) ImageFolder roots for a run on `train_data`, or None when there is no held-out split."""
    if cfg.data:
        root = Path(cfg.data).expanduser()
        if not ((root / "train").is_dir() and (root / "val").is_dir()):
            raise ConfigError(f"monitor.data {root} has no train/ and val/ folders",
                              "point monitor.data at a folder holding train/ and val/ ImageFolder trees")
        return root / "train", root / "val"
    if train_data == "embedded":
        root = resolve_data("embedded") / "classify"
        return root / "train", root / "val"
    sibling = Path(train_data).expanduser().parent / "val"
    return (Path(train_data).expanduser(), sibling) if sibling.is_dir() else None


def _subset(targets: list[int], limit: int, seed: int = 0) -> list[int]:
    """Up to `limit` indices, as many per class as the classes allow, chosen by a fixed numpy generator."""
    if not limit or limit >= len(targets):
        return list(range(len(targets)))
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    per_class = max(1, limit // len(by_class))
    return sorted(i for idx in by_class.values() for i in rng.permutation(idx)[:per_class].tolist())


class KnnMonitor:
    """Embeds the two splits with a trunk and scores the kNN vote (see the module docstring)."""

    def __init__(self, memory: Path, query: Path, cfg: MonitorConfig, image_size: int):
        self.cfg = cfg
        transform = v2.Compose([v2.ToImage(), v2.Resize(math.ceil(image_size / 0.875), antialias=True),
                                v2.CenterCrop(image_size), v2.ToDtype(torch.float32, scale=True)])
        self.memory = ImageFolderDataset(memory, transform=transform)
        self.query = ImageFolderDataset(query, transform=transform)
        if self.memory.classes != self.query.classes:
            raise ConfigError(f"the monitor's splits {memory} and {query} have different classes",
                              "give train/ and val/ folders with the same class subfolders")
        self.picked = {name: _subset(split.targets, cfg.max_images)
                       for name, split in (("memory", self.memory), ("query", self.query))}

    @torch.no_grad()
    def _features(self, split: ImageFolderDataset, indices: list[int], trunk: nn.Module, normalize,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for start in range(0, len(indices), self.cfg.batch_size):
            items = [split[i] for i in indices[start:start + self.cfg.batch_size]]
            items = [item for item in items if not isinstance(item, BadImage)]
            if not items:
                continue
            x = torch.stack([item[0] for item in items]).to(device)
            feats.append(trunk(normalize(x)).float().cpu())
            labels.append(torch.tensor([item[1] for item in items]))
        return torch.cat(feats), torch.cat(labels)

    def evaluate(self, trunk: nn.Module, normalize, device: torch.device) -> dict[str, float]:
        """{"knn_top1": percentage} of the trunk as it is now; its train/eval mode is restored."""
        was_training = trunk.training
        trunk.eval()
        try:
            mem_x, mem_y = self._features(self.memory, self.picked["memory"], trunk, normalize, device)
            qry_x, qry_y = self._features(self.query, self.picked["query"], trunk, normalize, device)
        finally:
            trunk.train(was_training)
        scores = knn_predict(mem_x, mem_y, qry_x, len(self.memory.classes), [self.cfg.k], self.cfg.temperature)
        return {"knn_top1": (scores[self.cfg.k].argmax(1) == qry_y).float().mean().item() * 100}
