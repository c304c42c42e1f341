"""Random streams seeded by a run's seed and their purpose, so nothing else can shift them.

A protocol that drew from the global RNGs gave different numbers for the same seed depending on what else
had drawn before (a feature-cache miss creates a DataLoader, which draws its base seed from the global
torch RNG). Every random choice of a protocol now comes from a stream named by (seed, purpose, ...):

    head = new_fc(dim, classes, generator=torch_generator(seed, "linear head"))
    sampler = EpochSampler(len(data), seed, "linear order")        # a new permutation each epoch
    data = SeededItems(data, seed, "linear augment")               # each image's crop from its own stream

`SeededItems` seeds the global torch RNG inside a `fork_rng` around each item, from (seed, purpose, epoch,
index): torchvision's random transforms draw from that RNG, and the item's augmentation no longer depends
on the loader's workers or on the order the items are loaded. The sampler hands the epoch to the items
inside the index (epoch * N + i), so it reaches persistent workers too.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def stream_seed(seed: int, purpose: str, *more: int) -> int:
    """A 63-bit seed for the stream (seed, purpose, *more): sha256 of their text (stable across runs)."""
    text = "\0".join([str(int(seed)), purpose, *(str(int(m)) for m in more)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def torch_generator(seed: int, purpose: str, *more: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, purpose, *more))


def numpy_rng(seed: int, purpose: str, *more: int) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, purpose, *more))


@contextlib.contextmanager
def seeded(seed: int, purpose: str, *more: int):
    """Inside: the global torch RNG seeded by the stream (e.g. a module's default init); after: as before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, purpose, *more))
        yield


def quiet_loader_generator() -> torch.Generator:
    """For a DataLoader whose order is fixed: its iterator draws a base seed from this, not the global RNG."""
    return torch.Generator().manual_seed(0)


class EpochSampler(Sampler[int]):
    """Indices epoch * n + i, in a permutation of range(n) seeded by (seed, purpose, epoch) (or in order).

    With `world` > 1 (torchrun), process `rank` takes every world-th index of the first n // world * world,
    as DistributedSampler(drop_last=True) does.
    """

    def __init__(self, n: int, seed: int, purpose: str, *, shuffle: bool = True, epoch: int = 0, rank: int = 0,
                 world: int = 1):
        self.n, self.seed, self.purpose, self.shuffle, self.epoch = n, seed, purpose, shuffle, epoch
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world if self.world > 1 else self.n

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch_generator(self.seed, self.purpose, self.epoch)).tolist()
        else:
            order = list(range(self.n))
        if self.world > 1:
            order = order[:self.n // self.world * self.world][self.rank::self.world]
        base = self.epoch * self.n
        return iter([base + i for i in order])


class SeededItems(Dataset):
    """`dataset[i]` with its random transforms drawn from the stream (seed, purpose, epoch, i).

    Indexed by epoch * len(dataset) + i (what `EpochSampler` yields); a plain index is epoch 0.
    """

    def __init__(self, dataset: Dataset, seed: int, purpose: str):
        self.dataset, self.seed, self.purpose = dataset, seed, purpose

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, code: int):
        epoch, i = divmod(int(code), len(self.dataset))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, self.purpose, epoch, i))
            return self.dataset[i]
