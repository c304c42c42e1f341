"""What one generated copy of the embedded dataset is: its format version, sizes and seed, and the
random stream of every image in it (seeded by seed, part, class and index, so any image can be
re-rendered on its own and compared with its file)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 2  # 2: the held-out parts in one colour pair, plain scenes (README, Reproduction)


@dataclass(frozen=True)
class EmbeddedSpec:
    """Sizes and seed of one generated copy. `embedded_root()` always uses the defaults."""

    seed: int = 0
    image_size: int = 64
    train_per_class: int = 200
    val_per_class: int = 40
    test_per_class: int = 40
    fewshot_per_class: int = 40
    scene_size: int = 128
    scenes_trainval: int = 400
    scenes_test: int = 200


DEFAULT_SPEC = EmbeddedSpec()

# Each part of the dataset has its own random streams: image_rng(seed, part, class, index).
_PART = {"train": 0, "val": 1, "test": 2, "fewshot": 3, "scene": 4}


def image_rng(seed: int, part: str, cls: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _PART[part], cls, index])
