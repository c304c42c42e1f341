"""The training data: seeded per-sample views, a sampler that resumes mid-epoch, and the loader.

Exact resume rests on two things here. The data order is a seeded permutation per epoch
(DistributedSampler's), and `ResumableSampler.start_at` skips the samples an interrupted epoch already
consumed. Every sample's augmentation draws from its own RNG seeded by (seed, epoch, index)
(`SeededViews`), whatever process or loader worker loads it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hexa_zoo.errors import ConfigError

from .augment import multicrop_transform, resolve_pipeline, two_view_transform
from ..config import PretrainConfig
from .device_augment import select


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch, independent of loader workers and processes."""
    # Shifted as a Python int: numpy < 2 refuses uint64 >> int64 (no safe common type).
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]) >> 1


class SeededViews(Dataset):
    """A dataset whose item `i` is augmented with torch's RNG seeded by (seed, epoch, i).

    Wraps hexa_zoo.data.ImageFolderDataset (optionally a subset of it, `indices`); returns
    `(views, target, i)` with `i` the position in this dataset, or the base dataset's BadImage.
    The global RNG outside the item is left as it was (fork_rng), so loading in the main process
    does not disturb the training RNG.
    """

    def __init__(self, base: Dataset, seed: int, indices: list[int] | None = None):
        self.base, self.seed, self.indices = base, seed, indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)

    def __getitem__(self, i: int):
        threads = torch.get_num_threads()
        # One image is far too small for intra-op threads: in the main process (workers=0) their
        # start-up costs 10-30x the work. Loader workers already run with one thread.
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only: torch.manual_seed also queues lazy seeds for CUDA, XPU and MTIA,
                # each recording a stack trace (~1 ms a sample, a fifth of the loader's work).
                torch.default_generator.manual_seed(sample_seed(self.seed, self.epoch, i))
                item = self.base[self.indices[i] if self.indices is not None else i]
        finally:
            torch.set_num_threads(threads)
        if isinstance(item, tuple):
            views, target, _ = item
            return views, target, i
        return item


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded permutation per epoch, one shard per rank) that can start mid-epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def start_at(self, epoch: int, skip_samples: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def build_dataset(cfg: PretrainConfig, on_cuda: bool = False) -> tuple[SeededViews, str, list[str]]:
    """The training images with the method's views; returns (dataset, where, notes).

    on_cuda: the run trains on a GPU, where `augment.pipeline=auto` is decided by measurement; the dataset
    starts with the cpu pipeline and the trainer switches it (`set_pipeline`).
    """
    from hexa_zoo.data import ImageFolderDataset, load_rgb_array
    from hexa_zoo.embedded import resolve_data

    root = resolve_data(cfg.data)
    if cfg.data == "embedded":
        root = root / "classify" / "train"
    pipeline = resolve_pipeline(cfg.augment, on_cuda) or "cpu"
    make_views = multicrop_transform if cfg.method_config().multicrop else two_view_transform
    views = make_views(cfg.augment, pipeline)
    base = ImageFolderDataset(root, transform=views, loader=load_rgb_array)  # MultiView takes arrays
    notes, indices = [], None
    if 0 < cfg.limit_images < len(base):
        picked = torch.randperm(len(base), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.limit_images]
        indices = sorted(picked.tolist())
        notes.append(f"training on a seeded subset of {cfg.limit_images} of the {len(base)} images (limit_images)")
    return SeededViews(base, cfg.seed, indices), str(root), notes


def require_a_batch(data: SeededViews, batch: int, root: str) -> None:
    """Refuse, before the first step, data that cannot fill one global batch of readable images."""
    from hexa_zoo.data import first_readable
    from hexa_zoo.errors import DataError

    readable, bad = first_readable(data.base, batch, data.indices)
    if readable >= batch:
        return
    shown = "; ".join(f"{b.path} ({b.reason[:80]})" for b in bad[:3]) + (" ..." if len(bad) > 3 else "")
    raise DataError(f"{root}: {len(data)} image file(s), {readable} readable and {len(bad)} unreadable"
                    + (f" ({shown})" if bad else "") + f"; one training batch needs {batch} readable images, "
                    "so nothing would train",
                    "point --data at a folder of decodable images (JPEG, PNG, ...), replace the broken files, "
                    f"or lower --batch-size to at most {readable}" if readable >= 2 else
                    "point --data at a folder of decodable images (JPEG, PNG, ...) or replace the broken files")


def set_pipeline(data: SeededViews, pipeline: str) -> bool:
    """Switch where the dataset's views are coloured and blurred; True if it changed (loader workers hold a
    copy of the dataset: a change takes effect with the next iterator)."""
    views = data.base.transform
    changed = views.pipeline != pipeline
    views.pipeline = pipeline
    return changed


def fit_batch(batch_size: int, dataset_size: int, world_size: int) -> tuple[int, list[str]]:
    """Per-process batch for a global `batch_size`, shrunk when the data is too small; returns (batch, notes)."""
    notes = []
    per_rank = batch_size // world_size
    if per_rank * world_size != batch_size:
        notes.append(f"batch {batch_size} does not split over {world_size} processes: using "
                     f"{per_rank * world_size} ({per_rank} per process)")
    if per_rank < 2:
        raise ConfigError(f"batch {batch_size} gives {per_rank} image(s) per process on {world_size} processes",
                          "raise --batch-size to at least 2 per process")
    shard = math.ceil(dataset_size / world_size)  # DistributedSampler pads every shard to this size
    if shard < 2:
        raise ConfigError(f"only {dataset_size} image(s) for {world_size} process(es)",
                          "give the run at least two images per process")
    if per_rank > shard:
        notes.append(f"batch {per_rank * world_size} is larger than the dataset ({dataset_size} images): "
                     f"using {shard * world_size} ({shard} per process)")
        per_rank = shard
    dropped = shard % per_rank
    if dropped:
        notes.append(f"{dropped} of {shard} images per process are left out of each epoch (incomplete last "
                     "batch dropped, as MoCo and swav do; the permutation changes every epoch)")
    return per_rank, notes


def make_loader(data: Dataset, batch_size: int, sampler: ResumableSampler, *, workers: int, pin_memory: bool,
                seed: int) -> DataLoader:
    """Batches of `(views, targets, indices, bad_paths)`: unreadable images are dropped and listed."""
    from hexa_zoo.data import collate_skipping_bad, ignore_interrupt

    loader_rng = torch.Generator().manual_seed(seed)  # DataLoader draws worker seeds here, not globally
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_skipping_bad, drop_last=True, pin_memory=pin_memory, generator=loader_rng,
                      worker_init_fn=ignore_interrupt)


def even_out(views, index: torch.Tensor, per_rank: int, world_size: int, device: torch.device):
    """A batch thinned by unreadable images: skip it when (nearly) empty; under DDP refill it.

    DDP and MoCo's cross-process shuffle need the same batch size on every process, so a short
    batch is topped up by repeating its first images; a batch empty on any process is skipped by all.
    Returns (views, index), or (None, None) for a batch to skip.
    """
    good = len(index)
    if world_size > 1:
        fewest = torch.tensor([good], device=device)
        dist.all_reduce(fewest, op=dist.ReduceOp.MIN)
        if fewest.item() == 0:
            return None, None
        if good < per_rank:
            repeat = torch.arange(per_rank) % good
            return select(views, repeat), index[repeat]
        return views, index
    return (views, index) if good >= 2 else (None, None)
