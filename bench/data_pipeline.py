"""Benchmark (not a test): images per second per CPU core of the augmentation pipelines, ours against the official.

    python bench/data_pipeline.py [--images 48] [--rounds 5] [--device cuda]
    python bench/data_pipeline.py --write-images DIR --images 2048   # only write the JPEGs (an ImageFolder)

It writes its own ImageNet-sized JPEGs (500x375, quality 90: smooth shapes under texture and noise,
nothing downloaded), then times on one thread, from the file to the views:
- `decode`: the decoding alone as the loader workers do it (hexa_zoo.data.load_rgb_array: simplejpeg
  for JPEGs), and `decode_pil`, PIL's (hexa_zoo.data.load_rgb: the candidate it replaced);
- `official_moco_v2`: MoCo-v2's aug-plus as facebookresearch/moco writes it (torchvision transforms on
  PIL images, its PIL GaussianBlur, ToTensor, Normalize; two crops), written out below as the reference;
- `ours_cpu` / `ours_gpu_path_cpu_side`: pretrain/data/augment.py's two views with `augment.pipeline`
  cpu (everything in the worker) and gpu (what stays in the worker: decode, crop, resize, flip);
- the same three for multi-crop (2x224 + 6x96, DeepCluster-v2 / SwAV) against swav's
  MultiCropDataset (crop, flip, get_color_distortion, PILRandomGaussianBlur, ToTensor, Normalize).
The pipelines take turns, all images each, in an order that alternates by round; ratios are medians
of the per-round ratios (ours over the official's images/s), so a busy machine slows them alike.
`draft_applicable` is the fraction of drawn crops for which PIL's reduced-size JPEG decoding (`draft`,
half size) would still leave the crop at least its output size, so could be used: on these images 0,
since a 375-px side halved is under 224 (and a 96-px crop's box is under 192 px).
pillow-simd is not timed: the views' resize is torch's, not PIL's, so it would change only decoding.
`--device` also times the device side of the gpu path (jitter, grayscale, blur) on a batch of two 224-px
views per image, against the implementation it replaced (bench/device_augment_v1.py) in the same run;
`--device-only` times only that. Goal (issue 19): >= 25k img/s at batch 256 on an H200.
The figures are printed last, as one JSON line. Goals (issue 11): cpu >= 2x, gpu path's CPU side >= 5x.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from hexa_zoo.data import load_rgb, load_rgb_array
from pretrain.data.augment import AugmentConfig, multicrop_transform, two_view_transform
from pretrain.config import load_recipe

IMAGENET_SIZE = (500, 375)  # the most common ImageNet train image size (width, height)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n ImageNet-sized JPEGs in an ImageFolder tree (folder/c0, folder/c1): shapes, texture, noise."""
    rng = np.random.default_rng(seed)
    width, height = IMAGENET_SIZE
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    paths = []
    for i in range(n):
        img = np.zeros((height, width, 3), np.float32)
        for c in range(3):  # a smooth colour field
            fx, fy, phase = rng.uniform(0.002, 0.02, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] = 128 + 80 * np.sin(xx * fx + phase) * np.cos(yy * fy)
        for _ in range(6):  # some discs of other colours
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 120)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        img += 12 * np.sin(xx * 0.7 + yy * 0.3)[..., None] + rng.normal(0, 10, img.shape)  # texture and noise
        path = folder / f"c{i % 2}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- the official pipelines, as their repos write them
def pil_loader(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class MocoGaussianBlur:
    """moco/loader.py GaussianBlur: PIL's blur with sigma uniform in [0.1, 2]."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def official_moco_v2():
    """main_moco.py --aug-plus, wrapped in TwoCropsTransform."""
    view = T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([MocoGaussianBlur([0.1, 2.0])], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean=MEAN, std=STD),
    ])
    return lambda path: [view(img) for img in [pil_loader(path)] * 2]


class SwavPILRandomGaussianBlur:
    """swav/src/multicropdataset.py PILRandomGaussianBlur."""

    def __init__(self, p=0.5, radius_min=0.1, radius_max=2.0):
        self.prob, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img):
        if not np.random.rand() <= self.prob:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


def official_swav_multicrop(sizes, counts, min_scales, max_scales):
    """swav's MultiCropDataset transform with get_color_distortion(s=1.0)."""
    colour = [T.Compose([T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), T.RandomGrayscale(p=0.2)]),
              SwavPILRandomGaussianBlur()]
    views = []
    for size, count, lo, hi in zip(sizes, counts, min_scales, max_scales):
        views += [T.Compose([T.RandomResizedCrop(size, scale=(lo, hi)), T.RandomHorizontalFlip(p=0.5),
                             T.Compose(colour), T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])] * count
    return lambda path: [v(img) for img in [pil_loader(path)] for v in views]


def ours(transform):
    def run(path):
        torch.default_generator.manual_seed(zlib.crc32(str(path).encode()))  # as SeededViews seeds each sample
        return transform(load_rgb_array(path))
    return run


def draft_applicable(views, draws: int = 4000) -> float:
    """Fraction of crops whose box, decoded at half size, still covers the output (where `draft` could act)."""
    from pretrain.data.augment import draw_view

    width, height = IMAGENET_SIZE
    rng, hits = random.Random(0), 0
    recipes = views.recipes
    for i in range(draws):
        recipe = recipes[i % len(recipes)]
        _, _, h, w = draw_view(recipe, height, width, rng).box
        hits += min(h, w) >= 2 * recipe.size
    return hits / draws


def device_side(aug: AugmentConfig, paths, batch: int, device: torch.device, rounds: int) -> dict[str, float]:
    """Images per second of the gpu path's device side (jitter, grayscale, blur) on a batch of two views:
    pretrain/data/device_augment.py (`device_side`) and the implementation before it (`device_side_v1`,
    bench/device_augment_v1.py), taking turns on the same batch."""
    from torch.utils.data import default_collate

    from device_augment_v1 import finish_views_v1
    from pretrain.data.device_augment import finish_views

    transform = two_view_transform(aug, "gpu")
    items = [ours(transform)(paths[i % len(paths)]) for i in range(batch)]
    pending = default_collate(items)
    times: dict[str, list[float]] = {"device_side": [], "device_side_v1": []}
    for round_ in range(rounds + 1):
        for name, finish in (("device_side", finish_views), ("device_side_v1", finish_views_v1)):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            finish(pending, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_ > 0:  # round 0: allocator, cuDNN and lazy imports
                times[name].append(time.perf_counter() - start)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-images", metavar="DIR", help="only write the JPEGs into DIR (an ImageFolder) and exit")
    parser.add_argument("--device", default="", help="also time the gpu path's device side here (cpu or cuda)")
    parser.add_argument("--device-batch", type=int, default=256)
    parser.add_argument("--device-only", action="store_true", help="time only the device side (with --device)")
    args = parser.parse_args()
    if args.write_images:
        write_jpegs(Path(args.write_images), args.images)
        print(json.dumps({"wrote": args.images, "folder": args.write_images, "size": IMAGENET_SIZE}))
        return
    torch.set_num_threads(1)  # per core: the loader workers each run one thread
    moco = AugmentConfig()
    multi = load_recipe("dcluster_v2_r50_800ep").augment
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_jpegs(Path(tmp), args.images)]
        pipelines = {
            "decode": load_rgb_array,
            "decode_pil": load_rgb,
            "official_moco_v2": official_moco_v2(),
            "ours_cpu": ours(two_view_transform(moco, "cpu")),
            "ours_gpu_path_cpu_side": ours(two_view_transform(moco, "gpu")),
            "official_swav_multicrop": official_swav_multicrop(multi.crop_sizes, multi.crop_counts,
                                                               multi.crop_min_scale, multi.crop_max_scale),
            "ours_multicrop_cpu": ours(multicrop_transform(multi, "cpu")),
            "ours_multicrop_gpu_path_cpu_side": ours(multicrop_transform(multi, "gpu")),
        }
        rate: dict[str, list[float]] = {name: [] for name in pipelines}
        if args.device_only:
            pipelines = {}
        for round_ in range(args.rounds + 1 if pipelines else 0):
            order = list(pipelines) if round_ % 2 else list(pipelines)[::-1]
            for name in order:
                start = time.perf_counter()
                for path in paths:
                    pipelines[name](path)
                if round_ > 0:  # round 0 warms caches and lazy imports
                    rate[name].append(len(paths) / (time.perf_counter() - start))
            if round_ > 0:
                print(f"round {round_}/{args.rounds}: " + ", ".join(f"{n} {rate[n][-1]:.1f}" for n in pipelines),
                      flush=True)
        device_rate = (device_side(moco, paths, args.device_batch, torch.device(args.device), args.rounds)
                       if args.device else None)

    def ratio(name: str, reference: str) -> float:
        return round(statistics.median(a / b for a, b in zip(rate[name], rate[reference])), 2)

    if device_rate is not None:
        device_figures = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
                          "batch": args.device_batch, "views": "2x224",
                          "img_per_s": round(device_rate["device_side"], 1),
                          "img_per_s_v1": round(device_rate["device_side_v1"], 1),
                          "vs_v1": round(device_rate["device_side"] / device_rate["device_side_v1"], 2),
                          "goal_25k_img_per_s": device_rate["device_side"] >= 25000}
    if args.device_only:
        print(json.dumps({"benchmark": "data_pipeline_device_side", **device_figures}))
        return

    per_core = {n: round(statistics.median(r), 1) for n, r in rate.items()}
    for name, value in per_core.items():
        print(f"{name:>34}: {value:8.1f} images/s per core")
    figures = {"benchmark": "data_pipeline", "cpu": platform.processor() or platform.machine(),
               "images": args.images, "image_size": IMAGENET_SIZE, "rounds": args.rounds,
               "views": {"moco_v2": "2x224", "multicrop": "+".join(f"{c}x{s}" for c, s in
                                                                   zip(multi.crop_counts, multi.crop_sizes))},
               "img_per_s_per_core": per_core,
               "decode_vs_official": ratio("decode", "official_moco_v2"),
               "decode_vs_pil": ratio("decode", "decode_pil"),
               "draft_applicable": {"moco_v2": draft_applicable(two_view_transform(moco)),
                                    "multicrop": draft_applicable(multicrop_transform(multi))},
               "cpu_vs_official": ratio("ours_cpu", "official_moco_v2"),
               "gpu_path_cpu_side_vs_official": ratio("ours_gpu_path_cpu_side", "official_moco_v2"),
               "multicrop_cpu_vs_official": ratio("ours_multicrop_cpu", "official_swav_multicrop"),
               "multicrop_gpu_path_cpu_side_vs_official": ratio("ours_multicrop_gpu_path_cpu_side",
                                                                "official_swav_multicrop")}
    figures["goal_cpu_2x"] = figures["cpu_vs_official"] >= 2.0
    figures["goal_gpu_path_cpu_side_5x"] = figures["gpu_path_cpu_side_vs_official"] >= 5.0
    if device_rate is not None:
        figures["device_side"] = device_figures
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
