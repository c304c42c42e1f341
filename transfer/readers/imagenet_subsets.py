"""ImageNet subsets for semi-supervised fine-tuning: SimCLR's `1percent.txt` / `10percent.txt`
(`read_subset_list`, verified by line count and sha256), and `balanced_subset`, a deterministic class-balanced
sampler of the same sizes, which is an alternative to the official lists, not a copy of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hexa_zoo.errors import DataError
from hexa_zoo.fileio import sha256_file


# google-research/simclr imagenet_subsets/*.txt: one training file name per line ("n01440764_10026.JPEG").
# Line counts are published; the sha256 values were computed from the files in that repository
# (commit 383d4143fd8cf7879ae10f1046a9baeb753ff438).
SUBSET_LISTS = {
    "1percent": {"lines": 12811, "sha256": "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17"},
    "10percent": {"lines": 128116, "sha256": "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091"},
}


def read_subset_list(path: str | os.PathLike, which: str | None = None, *, check_sha256: bool = True) -> list[str]:
    """The file names of a SimCLR subset list, verified.

    `which` ("1percent" or "10percent") checks the line count and, unless `check_sha256=False`
    (for a list you edited on purpose), the sha256 recorded in `SUBSET_LISTS`. Without `which`,
    any list of file names is read unverified. Names are returned in the file's order.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Subset list {path} does not exist.",
                        fix="Download imagenet_subsets/1percent.txt or 10percent.txt from google-research/simclr, "
                            "or leave the list unset to use the class-balanced sampler instead.")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if which is not None:
        if which not in SUBSET_LISTS:
            raise DataError(f"Unknown subset {which!r}.", fix=f"Use one of {sorted(SUBSET_LISTS)}.")
        expected = SUBSET_LISTS[which]
        if len(names) != expected["lines"]:
            raise DataError(f"Subset list {path} has {len(names)} lines; SimCLR's {which}.txt has {expected['lines']}.",
                            fix=f"Use the unmodified {which}.txt from google-research/simclr (imagenet_subsets/).")
        if check_sha256 and sha256_file(path) != expected["sha256"]:
            raise DataError(f"Subset list {path} has the right length but not the sha256 of SimCLR's {which}.txt.",
                            fix="Use the unmodified file, or pass check_sha256=False if you changed it on purpose.")
    if len(set(names)) != len(names):
        raise DataError(f"Subset list {path} names some images twice.", fix="Remove the duplicate lines.")
    return names


def subset_indices(names: Sequence[str], samples: Sequence[tuple[str, int]], list_path: str | os.PathLike = "") -> list[int]:
    """Sorted indices into `samples` (an ImageFolder's (path, target) list) of the listed file names."""
    position = {Path(p).name: i for i, (p, _) in enumerate(samples)}
    missing = [n for n in names if Path(n).name not in position]
    if missing:
        raise DataError(f"{len(missing)} image(s) of subset list {list_path or '(given)'} are not in the training folder, "
                        f"e.g. {missing[:3]}.",
                        fix="Point at the ImageNet train folder the list was made from (train/<wnid>/<name>.JPEG).")
    return sorted(position[Path(n).name] for n in names)


def _balanced_quotas(sizes: Mapping[int, int], total: int, rng: np.random.Generator) -> dict[int, int]:
    """Split `total` over classes as evenly as their sizes allow (water-filling); the classes that
    get one more than the others are drawn by `rng`."""
    quotas = {c: 0 for c in sizes}
    left = min(total, sum(sizes.values()))
    open_classes = sorted((c for c in sizes if sizes[c] > 0), key=lambda c: (sizes[c], c))
    # Classes smaller than an even share give all they have; the rest share what is left.
    while open_classes and sizes[open_classes[0]] <= left // len(open_classes):
        c = open_classes.pop(0)
        quotas[c] = sizes[c]
        left -= sizes[c]
    if open_classes:
        base, extra = divmod(left, len(open_classes))
        lucky = set(rng.permutation(sorted(open_classes))[:extra].tolist())
        for c in open_classes:  # every open class has more than `base` images, so base + 1 fits
            quotas[c] = base + (c in lucky)
    return quotas


def balanced_subset(samples: Sequence[tuple[str, int]], counts: float | Mapping[int, int], seed: int = 0) -> list[int]:
    """A deterministic, class-balanced sample: sorted indices into `samples` [(path, target)].

    This is an alternative to SimCLR's official lists, not a copy of them: use `read_subset_list` to
    reproduce published numbers. `counts` is either a fraction (0.01 for "1%") or {target: count}.
    A fraction takes floor(fraction * N) images (SimCLR's sizes: 1% of ImageNet's 1,281,167 is
    12,811, 10% is 128,116) spread as evenly as possible over the classes; the classes that get one
    more are drawn by `seed`. For ImageNet this gives 189 classes x 12 + 811 x 13 (1%) and
    884 x 128 + 116 x 129 (10%), the same per-class counts as the official lists. A class with fewer
    images than its share gives all it has and the rest is spread over the others.
    """
    rng = np.random.default_rng(seed)
    targets = np.fromiter((t for _, t in samples), dtype=np.int64, count=len(samples))
    order = np.argsort(targets, kind="stable")
    classes, starts, sizes_arr = np.unique(targets[order], return_index=True, return_counts=True)
    by_class = {int(c): order[s:s + n] for c, s, n in zip(classes, starts, sizes_arr)}
    sizes = {int(c): int(n) for c, n in zip(classes, sizes_arr)}
    if isinstance(counts, Mapping):
        quotas = {int(c): int(n) for c, n in counts.items()}
        short = {c: (n, sizes.get(c, 0)) for c, n in quotas.items() if n > sizes.get(c, 0) or n < 0}
        if short:
            c, (n, have) = next(iter(short.items()))
            raise DataError(f"balanced_subset: class {c} is asked for {n} images but has {have}.",
                            fix="Lower the per-class counts or use a fraction.")
    else:
        if not 0.0 < float(counts) <= 1.0:
            raise DataError(f"balanced_subset: fraction {counts} is not in (0, 1].", fix="Use e.g. 0.01 or 0.1.")
        total = math.floor(float(counts) * len(samples) + 1e-9)
        quotas = _balanced_quotas(sizes, total, rng)
    chosen = []
    for c in sorted(quotas):
        if quotas[c]:
            chosen.extend(rng.choice(by_class[c], size=quotas[c], replace=False).tolist())
    return sorted(chosen)
