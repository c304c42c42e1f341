"""The augmentation pipelines: the CPU and the gpu path draw the same parameters and agree, both match the
official ops (torchvision on PIL, PIL's blur) given those parameters, and the parameters follow the recipes.

Tolerances (grey levels of 255), from what the paths do differently: the CPU path rounds to uint8 after
every op as PIL does, the gpu path stays in float; OpenCV's HSV and saturation round where PIL truncates;
the official blur is PIL's three box passes, ours a true Gaussian. Mean |difference| per view <= 2.5
levels (twice that under multi-crop's strong jitter, and 1.25 on average over views), and 99% of pixels within 16 (a strong contrast or saturation factor after a rounding step
amplifies its one-level difference; hue moves a few low-chroma pixels further).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from scipy import stats
from torch.utils.data import default_collate
from torchvision import transforms

from pretrain.data.augment import (BRIGHTNESS, CONTRAST, GRAYSCALE, HUE, JITTER_ON, ORDER, SATURATION, SIGMA, AugmentConfig,
                              PendingViews, apply_crop, as_chw, colour_on_cpu, crop_box, draw_view, multicrop_recipes,
                              multicrop_transform, resolve_pipeline, two_view_recipes, two_view_transform)
from pretrain.data.device_augment import finish_views

MEAN_LEVELS, P99_LEVELS = 2.5, 16


def photo(seed: int, size=(150, 110)) -> Image.Image:
    """A small natural-ish picture: a smooth colour field, two discs, noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.stack([128 + 90 * np.sin(xx * rng.uniform(0.01, 0.06) + c) * np.cos(yy * rng.uniform(0.01, 0.06))
                    for c in range(3)], -1)
    for _ in range(2):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 40)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))


def levels_apart(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a.float() - b.float()).abs().flatten()
    return diff.mean().item(), diff.quantile(0.99).item()


@pytest.mark.parametrize("recipe", ["moco", "multicrop"])
def test_cpu_and_gpu_paths_draw_the_same_parameters_and_agree(recipe):
    aug = AugmentConfig(image_size=64, crop_sizes=(64, 32), crop_counts=(2, 2))
    make = two_view_transform if recipe == "moco" else multicrop_transform
    cpu, gpu = make(aug, "cpu"), make(aug, "gpu")
    finished, pending = [], []
    for i in range(12):
        img = photo(i)
        torch.manual_seed(i)  # as SeededViews seeds each sample
        finished.append(cpu(img))
        torch.manual_seed(i)
        pending.append(gpu(img))
        views = pending[-1]
        assert isinstance(views, PendingViews) and all(v.dtype == torch.uint8 for v in views.images)
        for done, crop, params in zip(finished[-1], views.images, views.params):
            # The same crop and parameters: the CPU path's output is the CPU colour ops on the gpu path's crop.
            hwc = np.ascontiguousarray(crop.permute(1, 2, 0).numpy())
            assert torch.equal(done, torch.from_numpy(colour_on_cpu(hwc, params)).permute(2, 0, 1))
    on_device = finish_views(default_collate(pending), torch.device("cpu"))  # the GPU ops, run on the CPU
    on_cpu = finish_views(default_collate(finished), torch.device("cpu"))
    means = []
    for a, b in zip(on_cpu, on_device):
        assert b.dtype == torch.float32 and b.min() >= 0 and b.max() <= 1
        for x, y in zip(a, b):
            mean, p99 = levels_apart(x * 255, y * 255)
            # swav's strong jitter (factors up to 1.8, one after another) multiplies the CPU path's
            # per-op rounding: a view may differ by up to twice the usual tolerance.
            assert mean <= 2 * MEAN_LEVELS and p99 <= 1.5 * P99_LEVELS, (mean, p99)
            means.append(mean)
    assert np.mean(means) <= MEAN_LEVELS / 2
    params = default_collate(pending).params
    assert params[:, :, JITTER_ON].any() and params[:, :, GRAYSCALE].any() and (params[:, :, SIGMA] > 0).any()


def official_view(img: Image.Image, box, flip: bool, colour: torch.Tensor, size: int) -> torch.Tensor:
    """The official ops (torchvision's functional ops on PIL, MoCo's PIL blur) with given parameters."""
    x = TF.resized_crop(img, *box, [size, size])
    if flip:
        x = TF.hflip(x)
    p = colour.tolist()
    if p[JITTER_ON]:
        ops = [(TF.adjust_brightness, BRIGHTNESS), (TF.adjust_contrast, CONTRAST),
               (TF.adjust_saturation, SATURATION), (TF.adjust_hue, HUE)]
        for op in p[ORDER]:
            fn, column = ops[int(op)]
            x = fn(x, p[column])
    if p[GRAYSCALE]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p[SIGMA]:
        x = x.filter(ImageFilter.GaussianBlur(radius=p[SIGMA]))
    return torch.from_numpy(np.array(x)).permute(2, 0, 1)


def test_cpu_path_matches_the_official_ops_given_the_same_parameters():
    recipe = two_view_recipes(AugmentConfig(image_size=64))[0]
    from pretrain.data.augment import apply_on_cpu

    for i in range(30):
        img = photo(100 + i)
        image = as_chw(img)
        params = draw_view(recipe, image.shape[1], image.shape[2], random.Random(i))
        ours = apply_on_cpu(image, params, recipe.size)
        mean, p99 = levels_apart(ours, official_view(img, params.box, params.flip, params.colour, recipe.size))
        assert mean <= MEAN_LEVELS and p99 <= P99_LEVELS, (i, params, mean, p99)
        plain = params._replace(colour=torch.tensor([0.0] * 5 + [0, 1, 2, 3] + [0.0, 0.0]))
        cropped = apply_crop(image, plain, recipe.size)  # the crop alone: PIL's antialiased bilinear filter
        mean, _ = levels_apart(cropped, official_view(img, plain.box, plain.flip, plain.colour, recipe.size))
        assert mean < 0.5  # torch and PIL round the same filter differently, rarely by a level


def binomial_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("recipe", ["moco", "multicrop"])
def test_parameter_distributions_follow_the_recipe(recipe):
    aug = AugmentConfig()
    recipes = two_view_recipes(aug) if recipe == "moco" else multicrop_recipes(aug)
    view = recipes[-1]  # the second MoCo view / a small multi-crop crop
    rng, height, width, n = random.Random(0), 375, 500, 4000
    drawn = [draw_view(view, height, width, rng) for _ in range(n)]
    colour = torch.stack([d.colour for d in drawn])
    jitter = colour[:, JITTER_ON] > 0
    assert binomial_ok(int(jitter.sum()), n, view.jitter_p)
    assert binomial_ok(int(colour[:, GRAYSCALE].sum()), n, view.grayscale_p)
    assert binomial_ok(int(sum(d.flip for d in drawn)), n, view.hflip_p)
    sigma = colour[:, SIGMA][colour[:, SIGMA] > 0]
    assert binomial_ok(len(sigma), n, view.blur_p)
    lo, hi = view.blur_sigma
    assert lo <= sigma.min() and sigma.max() <= hi
    assert stats.kstest(sigma.numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    b, c, s, h = view.jitter
    for column, low, high in ((BRIGHTNESS, 1 - b, 1 + b), (CONTRAST, 1 - c, 1 + c), (SATURATION, max(0, 1 - s), 1 + s),
                              (HUE, -h, h)):
        values = colour[jitter, column].numpy()
        assert stats.kstest(values, stats.uniform(low, high - low).cdf).pvalue > 1e-3, column
    firsts = np.bincount(colour[jitter, ORDER][:, 0].long().numpy(), minlength=4)
    assert all(binomial_ok(int(k), int(jitter.sum()), 0.25) for k in firsts)  # a uniform random op order
    # Crops: the same area fractions and aspect ratios as torchvision's own RandomResizedCrop sampler.
    ours = np.array([d.box[2] * d.box[3] for d in drawn]) / (height * width)
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = np.array([np.prod(transforms.RandomResizedCrop.get_params(image, list(view.scale), [3 / 4, 4 / 3])[2:])
                       for _ in range(n)]) / (height * width)
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    assert view.scale[0] * 0.97 <= ours.min() and ours.max() <= view.scale[1] * 1.03  # pixel rounding only
    ratios = np.array([d.box[3] / d.box[2] for d in drawn])
    assert 3 / 4 * 0.93 <= ratios.min() and ratios.max() <= 4 / 3 * 1.07  # pixel rounding only


def test_crop_box_falls_back_to_the_centre_crop_like_torchvision():
    # 100 x 10 cannot hold 90% of its area at a ratio in [3/4, 4/3]: both fall back to the centre crop.
    theirs = transforms.RandomResizedCrop.get_params(torch.zeros(3, 100, 10), [0.9, 1.0], [3 / 4, 4 / 3])
    assert crop_box(100, 10, (0.9, 1.0), random.Random(0)) == tuple(theirs) == (43, 0, 13, 10)


def test_pipeline_switch():
    assert resolve_pipeline(AugmentConfig(), on_cuda=True) is None  # decided by measurement (test_pipeline_choice)
    assert resolve_pipeline(AugmentConfig(), on_cuda=False) == "cpu"
    assert resolve_pipeline(AugmentConfig(pipeline="gpu"), on_cuda=False) == "gpu"
    from hexa_zoo.errors import HexaError

    with pytest.raises(HexaError, match="augment.pipeline"):
        resolve_pipeline(AugmentConfig(pipeline="tpu"), on_cuda=False)
