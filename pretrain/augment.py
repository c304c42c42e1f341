"""View augmentations for pre-training, built with torchvision.transforms.v2.

Two recipes, each a transform that takes one RGB PIL image and returns a *list* of views:

- MoCo-v2 "aug-plus" (facebookresearch/moco, `--aug-plus`): two views, each
  RandomResizedCrop(size, scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 ->
  RandomGrayscale p 0.2 -> GaussianBlur sigma [0.1, 2] with p 0.5 -> horizontal flip.
- DeepCluster-v2 / SwAV multi-crop (facebookresearch/swav): `crop_counts[i]` crops of `crop_sizes[i]`
  pixels with RandomResizedCrop scale (`crop_min_scale[i]`, `crop_max_scale[i]`), each flipped,
  colour-distorted (jitter 0.8, 0.8, 0.8, 0.2 with p 0.8, grayscale p 0.2) and blurred (p 0.5).
  The first group holds the two global views.

Views are float tensors in pixel space [0, 1] and are deliberately *not* normalised: the methods
normalise inside the model (`method.normalize`), so adversarial perturbations live in pixel space.

torchvision's blur needs a kernel size where PIL's (used by the official code) does not; we take
the SimCLR choice, about a tenth of the crop side, odd, at least 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; defaults are MoCo-v2 aug-plus at 224 px and swav's 2x224 + 6x96 multi-crop."""

    image_size: int = 224                                   # two-view (MoCo) crop side
    crop_scale: tuple[float, float] = (0.2, 1.0)            # two-view RandomResizedCrop scale
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    hflip_p: float = 0.5
    # Multi-crop (DeepCluster-v2): one entry per crop group, the first being the global crops.
    crop_sizes: tuple[int, ...] = (224, 96)
    crop_counts: tuple[int, ...] = (2, 6)
    crop_min_scale: tuple[float, ...] = (0.14, 0.05)
    crop_max_scale: tuple[float, ...] = (1.0, 0.14)
    multicrop_color_jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)


def _blur_kernel(size: int) -> int:
    k = max(3, int(0.1 * size))
    return k if k % 2 == 1 else k + 1


def one_view(size: int, scale: tuple[float, float], jitter: tuple[float, float, float, float],
             aug: AugmentConfig) -> v2.Compose:
    """One augmented view of a PIL image: crop, colour, grayscale, blur, flip; float tensor in [0, 1]."""
    return v2.Compose([
        v2.ToImage(),  # uint8 tensor: the ops below are faster on tensors than on PIL images
        v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        v2.RandomApply([v2.ColorJitter(*jitter)], p=aug.color_jitter_p),
        v2.RandomGrayscale(p=aug.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(_blur_kernel(size), sigma=tuple(aug.blur_sigma))], p=aug.blur_p),
        v2.RandomHorizontalFlip(p=aug.hflip_p),
        v2.ToDtype(torch.float32, scale=True),
    ])


class MultiView:
    """Apply each view transform to the same image; returns the list of views in order."""

    def __init__(self, transforms: list[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"MultiView({len(self.transforms)} views)"


def two_view_transform(aug: AugmentConfig) -> MultiView:
    """MoCo-v2 aug-plus: two independently augmented views of `aug.image_size` pixels."""
    view = one_view(aug.image_size, aug.crop_scale, aug.color_jitter, aug)
    return MultiView([view, view])


def multicrop_transform(aug: AugmentConfig) -> MultiView:
    """DeepCluster-v2 / SwAV multi-crop: the global crops first, then the small ones."""
    groups = (aug.crop_sizes, aug.crop_counts, aug.crop_min_scale, aug.crop_max_scale)
    if len({len(g) for g in groups}) != 1:
        from hexa_zoo.errors import ConfigError

        raise ConfigError(f"multi-crop settings disagree in length: sizes {aug.crop_sizes}, counts "
                          f"{aug.crop_counts}, min scales {aug.crop_min_scale}, max scales {aug.crop_max_scale}",
                          "give one value per crop group in each of augment.crop_sizes/crop_counts/"
                          "crop_min_scale/crop_max_scale")
    if not aug.crop_counts or aug.crop_counts[0] < 2:
        from hexa_zoo.errors import ConfigError

        raise ConfigError(f"multi-crop needs two global crops first, got counts {aug.crop_counts}",
                          "set augment.crop_counts so that its first entry is 2, e.g. [2, 6]")
    views = []
    for size, count, lo, hi in zip(*groups):
        view = one_view(size, (lo, hi), aug.multicrop_color_jitter, aug)
        views.extend([view] * count)
    return MultiView(views)
