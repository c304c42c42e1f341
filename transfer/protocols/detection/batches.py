"""Training and test images for the detector: the dataset (flip when training) and detectron2's endless,
aspect-grouped batches, seeded by position so a resumed run continues the same stream."""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hexa_zoo.data import ignore_interrupt
from hexa_zoo.errors import ConfigError, DataError

from ...randomness import EpochSampler, SeededItems, quiet_loader_generator
from ...readers.detection import DetectionImage
from .config import DetectionConfig

class DetectionDataset(Dataset):
    """Images as float tensors in [0, 1] with torchvision detection targets; horizontal flip when training."""

    def __init__(self, images: Sequence[DetectionImage], *, train: bool, masks_from=None):
        from torchvision.transforms import v2

        self.images, self.train, self.masks_from = list(images), train, masks_from
        self.flip = v2.RandomHorizontalFlip(0.5)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        item = self.images[i]
        try:
            with Image.open(item.path) as im:
                image = im.convert("RGB")
        except OSError as err:
            raise DataError(f"cannot read image {item.path}: {err}", "replace or remove the file") from None
        size = (image.height, image.width)
        tensor = tv_tensors.Image(F.to_dtype(F.to_image(image), torch.float32, scale=True))
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(item.boxes), format="XYXY", canvas_size=size),
                  "labels": torch.from_numpy(item.labels)}
        if self.masks_from is not None:
            masks = [self.masks_from.annToMask(a) for a in item.coco_anns]
            target["masks"] = tv_tensors.Mask(torch.from_numpy(np.stack(masks)) if masks
                                              else torch.zeros((0, *size), dtype=torch.uint8))
        if self.train:
            tensor, target = self.flip(tensor, target)
        target = {k: v.as_subclass(torch.Tensor) for k, v in target.items()}
        return tensor.as_subclass(torch.Tensor), target, i


def collate(batch):
    return tuple(zip(*batch))


class AspectGroupedBatches:
    """Endless training batches of sample codes (epoch * n + i), as detectron2 builds them.

    Each epoch's order comes from `sampler` (`EpochSampler`, reshuffled per epoch); with `wide` given, an
    image joins the bucket of its orientation (width >= height or not) and a bucket that holds `batch`
    images is one batch (detectron2's AspectRatioGroupedDataset), so padding to a common size wastes less;
    leftovers carry over into the next epoch. Without `wide`, batches are consecutive images.
    """

    def __init__(self, sampler: EpochSampler, batch: int, wide: Sequence[bool] | None = None):
        self.sampler, self.batch, self.wide = sampler, batch, wide

    def __iter__(self) -> Iterator[list[int]]:
        buckets: dict[bool, list[int]] = {True: [], False: []}
        n = len(self.wide) if self.wide is not None else None
        for epoch in itertools.count():
            self.sampler.set_epoch(epoch)
            for code in self.sampler:
                bucket = buckets[bool(self.wide[code % n])] if self.wide is not None else buckets[True]
                bucket.append(code)
                if len(bucket) == self.batch:
                    yield bucket[:]
                    bucket.clear()


class _Skipping:
    """A batch sampler without its first `skip` batches (a resumed run continues the same stream)."""

    def __init__(self, batches, skip: int):
        self.batches, self.skip = batches, skip

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.skip, None)


def infinite_batches(dataset: "DetectionDataset", cfg: DetectionConfig, seed: int, *, rank: int = 0,
                     world: int = 1, skip: int = 0) -> Iterator[tuple]:
    """Training batches, endlessly (detectron2 trains by iterations, not epochs), grouped by aspect ratio.

    Under torchrun each process takes its share of every epoch and `batch_size / world` images a step.
    `skip` leaves out the first batches without loading them (a resumed run).
    """
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size={cfg.batch_size} does not split over {world} processes",
                          "use a batch size divisible by the number of GPUs")
    sampler = EpochSampler(len(dataset), seed, "detection order", rank=rank, world=world)
    batch = min(cfg.batch_size // world, len(sampler))
    wide = [im.wide for im in dataset.images] if cfg.aspect_grouping else None
    items = SeededItems(dataset, seed, "detection flip")  # each image's flip from its own stream
    yield from DataLoader(items, batch_sampler=_Skipping(AspectGroupedBatches(sampler, batch, wide), skip),
                          num_workers=cfg.workers, collate_fn=collate, generator=quiet_loader_generator(),
                          worker_init_fn=ignore_interrupt)
