"""View augmentations for pre-training: MoCo-v2 aug-plus and swav's multi-crop, at a few ms per view.

Two recipes, each a transform that takes one RGB PIL image and returns one entry per view:

- MoCo-v2 "aug-plus" (facebookresearch/moco, `--aug-plus`): two views, each
  RandomResizedCrop(size, scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 ->
  RandomGrayscale p 0.2 -> GaussianBlur sigma U[0.1, 2] with p 0.5 -> horizontal flip.
- DeepCluster-v2 / SwAV multi-crop (facebookresearch/swav): `crop_counts[i]` crops of `crop_sizes[i]`
  pixels with RandomResizedCrop scale (`crop_min_scale[i]`, `crop_max_scale[i]`), each flipped,
  colour-distorted (jitter 0.8, 0.8, 0.8, 0.2 with p 0.8, grayscale p 0.2) and blurred (p 0.5).
  The first group holds the two global views.

How: every view's random parameters are drawn first (`draw_view`, from a Python RNG seeded by torch's,
which `sampling.SeededViews` seeds per sample), by torchvision's sampling rules for the crop and the
jitter and MoCo's for the blur (tests/test_augment.py checks the distributions). Then they apply:

- `augment.pipeline=cpu`: all of it in the loader worker (`apply_on_cpu`): the crop-and-resize with
  torch's uint8 antialiased bilinear kernel (PIL's filter; the official code calls PIL), the colour
  ops as OpenCV lookup tables and conversions on uint8 with PIL's formulas (brightness, contrast and
  hue exactly, saturation rounded instead of truncated), the blur as a true Gaussian whose kernel
  covers +-3 sigma (the official PIL blur approximates it with three box passes).
- `augment.pipeline=gpu`: the worker only crops, resizes and flips (`apply_crop`) and ships each
  view's colour parameters beside its uint8 pixels (`PendingViews`); `device_augment` applies
  jitter, grayscale and blur batched on the training device just before the step.
- `augment.pipeline=auto` (the default): on CUDA the run times both over its first steps and keeps the
  faster (`pipeline_choice`); on the CPU, cpu.

The flip is applied right after the crop in both recipes (swav's order). MoCo flips last, but a
mirror commutes with every colour op and with a symmetric blur under a symmetric border, so the
pixels are the same. Views leave the workers as uint8 (a quarter of float32's bytes through the
loader's shared memory); `device_augment.finish_views` makes them float [0, 1] on the device. They
are deliberately *not* normalised: the methods normalise inside the model (`method.normalize`), so
adversarial perturbations live in pixel space.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


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
    # Where colour jitter, grayscale and blur run: "cpu" (loader workers), "gpu" (batched on the training
    # device just before the step; runs on the CPU too), "auto" (on CUDA both are timed over the first
    # `pipeline_trial_steps` steps each and the faster kept: pretrain/data/pipeline_choice.py; cpu otherwise).
    pipeline: Literal["auto", "cpu", "gpu"] = "auto"
    pipeline_trial_steps: int = 10


def resolve_pipeline(aug: AugmentConfig, on_cuda: bool) -> Literal["cpu", "gpu"] | None:
    """The pipeline a run uses from the start: the recipe's choice, "auto" meaning cpu off CUDA and None on
    CUDA (decided by measurement, `pipeline_choice`)."""
    if aug.pipeline not in ("auto", "cpu", "gpu"):
        from hexa_zoo.errors import ConfigError

        raise ConfigError(f"augment.pipeline must be auto, cpu or gpu, got {aug.pipeline!r}",
                          "set augment.pipeline=auto (measured on CUDA, cpu otherwise)")
    if aug.pipeline == "auto":
        return None if on_cuda else "cpu"
    return aug.pipeline


# ------------------------------------------------------------------------------ the parameters
@dataclass(frozen=True)
class ViewRecipe:
    """The distribution of one view: everything `draw_view` needs."""

    size: int
    scale: tuple[float, float]
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue strengths
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    hflip_p: float


# The colour parameters of one view as one float row, the layout `device_augment` reads.
JITTER_ON, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
ORDER = slice(5, 9)              # the jitter's op order: a permutation of 0..3 (brightness, contrast, saturation, hue)
GRAYSCALE, SIGMA = 9, 10         # sigma 0: no blur
N_PARAMS = 11


class ViewParams(NamedTuple):
    box: tuple[int, int, int, int]  # crop top, left, height, width in the source image
    flip: bool
    colour: torch.Tensor            # N_PARAMS floats, layout above


def crop_box(height: int, width: int, scale: tuple[float, float], rng: random.Random,
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, height, width): torchvision's get_params, step for step.

    Up to ten tries of an area fraction U(scale) and a log-uniform aspect ratio; then the centre crop
    at the nearest allowed ratio.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_view(recipe: ViewRecipe, height: int, width: int, rng: random.Random) -> ViewParams:
    """One view's random parameters, with the official samplers and probabilities.

    Crop: `crop_box` (RandomResizedCrop). Jitter with p `jitter_p` (RandomApply), then ColorJitter's
    draw: a random order of the four ops and one factor each, U[max(0, 1 - s), 1 + s] (hue U[-s, s]).
    Grayscale with p `grayscale_p`; blur with p `blur_p`, sigma U(`blur_sigma`) (MoCo's GaussianBlur).
    """
    box = crop_box(height, width, recipe.scale, rng)
    flip = rng.random() < recipe.hflip_p
    colour = [0.0] * N_PARAMS
    colour[ORDER] = [0.0, 1.0, 2.0, 3.0]
    if rng.random() < recipe.jitter_p:
        colour[JITTER_ON] = 1.0
        order = [0, 1, 2, 3]
        rng.shuffle(order)
        colour[ORDER] = [float(o) for o in order]
        b, c, s, h = recipe.jitter
        for column, low, high in ((BRIGHTNESS, max(0.0, 1 - b), 1 + b), (CONTRAST, max(0.0, 1 - c), 1 + c),
                                  (SATURATION, max(0.0, 1 - s), 1 + s), (HUE, -h, h)):
            colour[column] = rng.uniform(low, high)
    colour[GRAYSCALE] = float(rng.random() < recipe.grayscale_p)
    if rng.random() < recipe.blur_p:
        colour[SIGMA] = rng.uniform(*recipe.blur_sigma)
    return ViewParams(box, flip, torch.tensor(colour))


def image_rng() -> random.Random:
    """The RNG of one image's views, seeded from torch's global RNG (which SeededViews seeds per sample).
    Python's RNG draws a scalar in tens of nanoseconds; torch's takes microseconds."""
    return random.Random(int(torch.randint(0, 2**62, (1,))))


# ------------------------------------------------------------------------------ applying them
def as_chw(img) -> torch.Tensor:
    """An RGB PIL image or uint8 HWC array as a uint8 tensor (3, H, W), laid out channels-last as decoded."""
    with warnings.catch_warnings():  # np.asarray: one copy of PIL's bytes (np.array: two), read-only;
        warnings.simplefilter("ignore", UserWarning)  # torch warns about that, but nothing writes to it
        return torch.from_numpy(np.asarray(img)).permute(2, 0, 1)


def apply_crop(image: torch.Tensor, params: ViewParams, size: int) -> torch.Tensor:
    """Crop `params.box` of a uint8 (3, H, W) image, resize it to `size` (bilinear, antialiased: PIL's
    filter) and flip it; returns uint8 (3, size, size) in channels-last memory."""
    top, left, h, w = params.box
    crop = image[:, top:top + h, left:left + w].unsqueeze(0)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.flip(-1) if params.flip else out


_cv2_ready = None


def _cv2():
    """OpenCV with one thread per process: one view is far too small for a thread pool."""
    global _cv2_ready
    import cv2

    if _cv2_ready != os.getpid():
        cv2.setNumThreads(1)
        _cv2_ready = os.getpid()
    return cv2


def blur_radius(sigma: float) -> int:
    """Half-width of a Gaussian kernel that covers +-3 sigma."""
    return max(1, math.ceil(3 * sigma))


def _lut(values: np.ndarray) -> np.ndarray:
    """A uint8 lookup table from float32 values, clipped and truncated as PIL's Image.blend does."""
    return np.clip(values, 0, 255).astype(np.uint8)


def colour_on_cpu(hwc: np.ndarray, colour: torch.Tensor) -> np.ndarray:
    """Jitter (in the drawn order), grayscale and blur of one uint8 HWC RGB view, with OpenCV."""
    cv2 = _cv2()
    p = colour.tolist()
    levels = np.arange(256, dtype=np.float32)
    if p[JITTER_ON]:
        for op in (int(v) for v in p[ORDER]):
            if op == 0:  # brightness: blend with black
                hwc = cv2.LUT(hwc, _lut(levels * np.float32(p[BRIGHTNESS])))
            elif op == 1:  # contrast: blend with the rounded mean of the grayscale image
                mean = np.float32(int(cv2.mean(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY))[0] + 0.5))
                hwc = cv2.LUT(hwc, _lut(mean + np.float32(p[CONTRAST]) * (levels - mean)))
            elif op == 2:  # saturation: blend with the grayscale image
                gray = cv2.cvtColor(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
                hwc = cv2.addWeighted(hwc, p[SATURATION], gray, 1 - p[SATURATION], 0)
            else:  # hue: shift H (0-255 for the full circle, as PIL's HSV) with wrap-around
                hsv = cv2.cvtColor(hwc, cv2.COLOR_RGB2HSV_FULL)
                shift = int(p[HUE] * 255)
                hsv[..., 0] = cv2.LUT(hsv[..., 0], ((np.arange(256) + shift) % 256).astype(np.uint8))
                hwc = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    if p[GRAYSCALE]:
        hwc = cv2.cvtColor(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if p[SIGMA] > 0:
        k = 2 * blur_radius(p[SIGMA]) + 1
        hwc = cv2.GaussianBlur(hwc, (k, k), p[SIGMA], borderType=cv2.BORDER_REPLICATE)
    return hwc


def apply_on_cpu(image: torch.Tensor, params: ViewParams, size: int) -> torch.Tensor:
    """The whole view on the CPU: crop, flip, colour, blur; uint8 (3, size, size)."""
    hwc = np.ascontiguousarray(apply_crop(image, params, size).permute(1, 2, 0).numpy())
    return torch.from_numpy(colour_on_cpu(hwc, params.colour)).permute(2, 0, 1)


class PendingViews(NamedTuple):
    """Cropped uint8 views whose colour ops run on the device (`device_augment`); collates batch-wise."""

    images: list[torch.Tensor]  # one uint8 (3, S, S) per view (after collate: (B, 3, S, S))
    params: torch.Tensor        # (views, N_PARAMS) (after collate: (B, views, N_PARAMS))


class MultiView:
    """Draw and apply each view's parameters for one RGB image (PIL, or a uint8 HWC array as
    `hexa_zoo.data.load_rgb_array` decodes it); returns the views in order.

    `pipeline` "cpu": a list of finished uint8 views. "gpu": PendingViews (cropped and flipped;
    colour parameters beside them for the device).
    """

    def __init__(self, recipes: list[ViewRecipe], pipeline: Literal["cpu", "gpu"] = "cpu"):
        self.recipes, self.pipeline = list(recipes), pipeline

    def __call__(self, img):
        image, rng = as_chw(img), image_rng()
        params = [draw_view(r, image.shape[1], image.shape[2], rng) for r in self.recipes]
        if self.pipeline == "gpu":
            crops = [apply_crop(image, p, r.size) for p, r in zip(params, self.recipes)]
            return PendingViews(crops, torch.stack([p.colour for p in params]))
        return [apply_on_cpu(image, p, r.size) for p, r in zip(params, self.recipes)]

    def __len__(self) -> int:
        return len(self.recipes)

    def __repr__(self) -> str:
        return f"MultiView({len(self.recipes)} views, pipeline {self.pipeline})"


def _recipe(size: int, scale, jitter, aug: AugmentConfig) -> ViewRecipe:
    return ViewRecipe(size, tuple(scale), tuple(jitter), aug.color_jitter_p, aug.grayscale_p, aug.blur_p,
                      tuple(aug.blur_sigma), aug.hflip_p)


def two_view_recipes(aug: AugmentConfig) -> list[ViewRecipe]:
    """MoCo-v2 aug-plus: two independently augmented views of `aug.image_size` pixels."""
    return [_recipe(aug.image_size, aug.crop_scale, aug.color_jitter, aug)] * 2


def multicrop_recipes(aug: AugmentConfig) -> list[ViewRecipe]:
    """DeepCluster-v2 / SwAV multi-crop: the global crops first, then the small ones."""
    from hexa_zoo.errors import ConfigError

    groups = (aug.crop_sizes, aug.crop_counts, aug.crop_min_scale, aug.crop_max_scale)
    if len({len(g) for g in groups}) != 1:
        raise ConfigError(f"multi-crop settings disagree in length: sizes {aug.crop_sizes}, counts "
                          f"{aug.crop_counts}, min scales {aug.crop_min_scale}, max scales {aug.crop_max_scale}",
                          "give one value per crop group in each of augment.crop_sizes/crop_counts/"
                          "crop_min_scale/crop_max_scale")
    if not aug.crop_counts or aug.crop_counts[0] < 2:
        raise ConfigError(f"multi-crop needs two global crops first, got counts {aug.crop_counts}",
                          "set augment.crop_counts so that its first entry is 2, e.g. [2, 6]")
    recipes = []
    for size, count, lo, hi in zip(*groups):
        recipes.extend([_recipe(size, (lo, hi), aug.multicrop_color_jitter, aug)] * count)
    return recipes


def two_view_transform(aug: AugmentConfig, pipeline: Literal["cpu", "gpu"] = "cpu") -> MultiView:
    return MultiView(two_view_recipes(aug), pipeline)


def multicrop_transform(aug: AugmentConfig, pipeline: Literal["cpu", "gpu"] = "cpu") -> MultiView:
    return MultiView(multicrop_recipes(aug), pipeline)

