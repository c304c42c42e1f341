"""VOC07 low-shot training sets (VISSL's `extra_scripts/create_low_shot_samples.py`).

For each independent sample and each k, and for each class separately, draw k images where the class is
present and (num_classes - 1) * k = 19k images where it is absent, without replacement; every other image
(including "difficult"-only ones) is ignored. VISSL uses Python's unseeded `random`; we draw from numpy
seeded by (seed, sample, k), so runs repeat.
"""

from __future__ import annotations

import numpy as np


def sample_lowshot(labels: np.ndarray, k: int, negatives: int, rng: np.random.Generator
                   ) -> list[np.ndarray | None]:
    """For each class, the sorted indices of k present and `negatives` absent images (None if too few).

    `labels` is (N, C) in VOC convention: 1 present, -1 absent, 0 difficult-only (never sampled).
    """
    picked: list[np.ndarray | None] = []
    for c in range(labels.shape[1]):
        pos, neg = np.flatnonzero(labels[:, c] == 1), np.flatnonzero(labels[:, c] == -1)
        if len(pos) < k or len(neg) < negatives:
            picked.append(None)
            continue
        chosen = np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, negatives, replace=False)])
        picked.append(np.sort(chosen))
    return picked


def sample_rng(seed: int, sample: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, sample, k])
