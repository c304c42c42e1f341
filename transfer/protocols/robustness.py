"""Robustness of trunk + linear head on ImageNet-V2, -R, -A, -Sketch and -C (and corruptions of the embedded set).

The head is the one `hexa transfer linear` trained on ImageNet (`--head RECORD_OR_FILE`; its classes are the
ImageNet train folders' WordNet ids, sorted), read with the transform it was trained with. Layouts:

- ImageNet-V2 (`imagenetv2-matched-frequency-format-val/`): `<class index 0..999>/<image>`;
- ImageNet-Sketch (`sketch/`): `<wnid>/<image>`, the 1000 classes;
- ImageNet-R and ImageNet-A: `<wnid>/<image>`, 200 classes each: the head's logits are restricted to those
  200 classes, mapped by WordNet id (as the datasets' own evaluation code does);
- ImageNet-C: `<corruption>/<severity 1..5>/<wnid>/<image>`. Reported per corruption: the top-1 error
  averaged over severities and the corruption error CE = sum_s E_s / sum_s E_s(AlexNet); mCE is the mean CE
  over the 15 corruptions (Hendrycks & Dietterich 2019), normalised by AlexNet's published errors.

`embedded-c`: ImageNet-C-style corruptions (Hendrycks' formulas and severities for the noises, brightness,
contrast, pixelate and JPEG) of the embedded test split, made in memory; without `--head` the fast linear head
is trained first. AlexNet has no errors on it, so it reports the mean error and the error relative to clean.

    hexa transfer robustness --model moco_v2_r50 --dataset imagenet-r --data /data/imagenet-r \\
        --head results/linear-moco_v2_r50-....json --preset paper
    hexa transfer robustness --model hexa_moco_r18.embedded --dataset embedded-c --data embedded --out results/
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hexa_zoo.errors import ConfigError, DataError

from ..common import benchmark_name
from ..readers.images import IMAGE_SUFFIXES, read_classification_splits
from ..features import ArrayImages, EvalTransform
from ..heads import load_head
from ..probe import fast_head
from ..randomness import numpy_rng
from ..runner import ProtocolRun

log = logging.getLogger(__name__)

DATASETS = ("imagenet-v2", "imagenet-r", "imagenet-a", "imagenet-sketch", "imagenet-c", "embedded-c")

# AlexNet's top-1 error per ImageNet-C corruption, averaged over the five severities: hendrycks/robustness
# (ImageNet-C/test.py, get_ce_alexnet), the normaliser of the published mCE; quoted so by google-research/augmix
# (imagenet.py, ALEXNET_ERR).
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
ALEXNET_SOURCE = "hendrycks/robustness ImageNet-C/test.py (get_ce_alexnet)"


@dataclass(frozen=True)
class RobustnessConfig:
    dataset: str = "imagenet-r"
    head: str = ""               # a linear record or head file (required for the ImageNet sets)
    max_per_class: int = 0       # embedded-c: images of each class of the test split
    head_max_per_class: int = 0  # embedded-c without --head: train images a class for the fast head (0: all, as
                                 # `linear --preset embedded_fast`; capping it at max_per_class chose the weight
                                 # decay on one held-out image a class, and the head was far weaker)
    corruptions: tuple[str, ...] = ("gaussian_noise", "shot_noise", "impulse_noise", "brightness", "contrast",
                                    "pixelate", "jpeg_compression")   # embedded-c only
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    resize: int = 64             # embedded-c (the ImageNet sets read the head's own transform)
    crop: int = 64
    batch_size: int = 64
    device: str = ""


PRESETS: dict[str, RobustnessConfig] = {
    "paper": RobustnessConfig(),
    "embedded": RobustnessConfig(dataset="embedded-c", max_per_class=10, severities=(1, 3, 5)),
}


# ------------------------------------------------------------------------------ corruptions (embedded-c)

def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C's corruption `name` at `severity` (1..5) of a uint8 (H, W, 3) image (Hendrycks' constants)."""
    from PIL import Image

    x = image.astype(np.float64) / 255.0
    s = severity - 1
    if name == "gaussian_noise":
        x = x + rng.normal(size=x.shape, scale=(0.08, 0.12, 0.18, 0.26, 0.38)[s])
    elif name == "shot_noise":
        lam = (60, 25, 12, 5, 3)[s]
        x = rng.poisson(x * lam) / lam
    elif name == "impulse_noise":
        amount = (0.03, 0.06, 0.09, 0.17, 0.27)[s]
        mask = rng.random(x.shape[:2])
        x = x.copy()
        x[mask < amount / 2] = 0.0
        x[(mask >= amount / 2) & (mask < amount)] = 1.0
    elif name == "brightness":  # in HSV, V + c (Hendrycks uses skimage's rgb2hsv; matplotlib's is the same map)
        from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

        hsv = rgb_to_hsv(x)
        hsv[..., 2] = np.clip(hsv[..., 2] + (0.1, 0.2, 0.3, 0.4, 0.5)[s], 0, 1)
        x = hsv_to_rgb(hsv)
    elif name == "contrast":
        means = x.mean(axis=(0, 1), keepdims=True)
        x = (x - means) * (0.4, 0.3, 0.2, 0.1, 0.05)[s] + means
    elif name == "pixelate":
        h, w = image.shape[:2]
        c = (0.6, 0.5, 0.4, 0.3, 0.25)[s]
        small = Image.fromarray(image).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
        return np.asarray(small.resize((w, h), Image.BOX))
    elif name == "jpeg_compression":
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=(25, 18, 15, 10, 7)[s])
        return np.asarray(Image.open(buf).convert("RGB"))
    else:
        raise ConfigError(f"unknown corruption {name!r} for embedded-c",
                          "choose from gaussian_noise, shot_noise, impulse_noise, brightness, contrast, pixelate, "
                          "jpeg_compression")
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


# -------------------------------------------------------------------------------------------- readers

def _folder_images(folder: Path) -> list[tuple[Path, str]]:
    """(image, its class folder's name) for every image under `folder/<class>/`, sorted."""
    return [(p, p.parent.name) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and
            p.is_file()]


def _labelled(folder: Path, classes: Sequence[str], by_index: bool) -> tuple[list[Path], np.ndarray]:
    items = _folder_images(folder)
    if not items:
        raise DataError(f"no images under {folder}", "pass the dataset's extracted folder (<class>/<image>)")
    index = {c: i for i, c in enumerate(classes)}
    labels = []
    for path, name in items:
        if by_index:
            if not name.isdigit() or int(name) >= len(classes):
                raise DataError(f"{path.parent} is not a class index of the head's {len(classes)} classes",
                                "ImageNet-V2 folders are named 0 .. 999")
            labels.append(int(name))
        elif name not in index:
            raise DataError(f"{path.parent.name} (in {folder}) is not a class of the head",
                            "use a head trained on ImageNet, whose classes are the WordNet ids")
        else:
            labels.append(index[name])
    return [p for p, _ in items], np.asarray(labels, dtype=np.int64)


def accuracy(logits: torch.Tensor, labels: np.ndarray, allowed: Sequence[int] | None = None) -> float:
    """Top-1 (percent); with `allowed`, the prediction is among those classes only (ImageNet-R / -A)."""
    if allowed is not None:
        allowed_t = torch.as_tensor(list(allowed))
        pred = allowed_t[logits[:, allowed_t].argmax(1)]
    else:
        pred = logits.argmax(1)
    return float(100.0 * (pred.numpy() == labels).mean())


def mce(errors: dict[str, list[float]]) -> dict[str, float]:
    """Per corruption: mean error over severities and CE against AlexNet (both percent); mCE over the 15."""
    out = {}
    for name, errs in errors.items():
        out[f"error_{name}"] = float(np.mean(errs))
        if name in ALEXNET_ERRORS:
            out[f"CE_{name}"] = float(np.sum(errs) / (len(errs) * ALEXNET_ERRORS[name]))  # percent / fraction
    ces = [out[f"CE_{n}"] for n in ALEXNET_ERRORS if f"CE_{n}" in out]
    if len(ces) == len(ALEXNET_ERRORS):
        out["mCE"] = float(np.mean(ces))
    return out


# ------------------------------------------------------------------------------------------------ run

def run(model: str, data: str, out: str | Path, *, preset: str = "paper", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """Top-1, errors and mCE of `model` + a linear head on one robustness set."""
    run = ProtocolRun.start("robustness", RobustnessConfig, PRESETS, model, data, preset=preset, overrides=overrides,
                            seed=seed)
    cfg = run.cfg
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown robustness dataset {cfg.dataset!r}", f"choose one of: {', '.join(DATASETS)}")
    root = run.root
    notes = []
    if cfg.dataset == "embedded-c":
        metrics, head_entry = _embedded_c(run, cfg, notes)
        return run.finish(benchmark_name(run.dataset["name"], "robustness_c"), out, metrics, notes=notes,
                          artifacts={"head": head_entry})
    if not cfg.head:
        raise ConfigError(f"{cfg.dataset} needs the ImageNet linear head", "pass --head <the record of a "
                          "`hexa transfer linear` run on ImageNet>")
    head, meta = load_head(cfg.head, trunk_sha256=run.info["weights_sha256"])
    classes = meta["classes"]
    tf = _head_transform(meta, run)
    head_entry = {"path": meta["path"], "sha256": meta["sha256"], "source": meta["source"]}
    notes.append(f"head: {meta['source']} ({meta['protocol']}, {len(classes)} classes, sha256 {meta['sha256'][:12]})")
    if cfg.dataset == "imagenet-c":
        groups = {}
        for corruption in sorted(p.name for p in root.iterdir() if p.is_dir()):
            for sev in sorted(p.name for p in (root / corruption).iterdir() if p.is_dir() and p.name.isdigit()):
                groups[(corruption, int(sev))] = _labelled(root / corruption / sev, classes, by_index=False)
        if not groups:
            raise DataError(f"{root} holds no <corruption>/<severity>/<wnid>/ folders",
                            "pass the extracted ImageNet-C folder (https://github.com/hendrycks/robustness)")
        run.use_data(root, [p for paths, _ in groups.values() for p in paths], fingerprint_root=root,
                     dataset=cfg.dataset, groups=len(groups))
        errors: dict[str, list[float]] = {}
        for (corruption, sev), (paths, labels) in sorted(groups.items()):
            logits = _logits(run, head, paths, tf, f"{corruption}/{sev}")
            errors.setdefault(corruption, []).append(100.0 - accuracy(logits, labels))
        metrics = mce(errors)
        notes.append(f"CE normalised by AlexNet's errors ({ALEXNET_SOURCE})")
        if "mCE" not in metrics:
            notes.append(f"mCE left out: only {sorted(errors)} of the 15 corruptions are present")
        return run.finish(f"{cfg.dataset.replace('-', '_')}", out, metrics, notes=notes, artifacts={"head": head_entry})
    paths, labels = _labelled(root, classes, by_index=cfg.dataset == "imagenet-v2")
    run.use_data(root, paths, fingerprint_root=root, dataset=cfg.dataset, images=len(paths))
    allowed = sorted(set(labels.tolist())) if cfg.dataset in ("imagenet-r", "imagenet-a") else None
    top1 = accuracy(_logits(run, head, paths, tf, cfg.dataset), labels, allowed)
    if allowed is not None:
        notes.append(f"logits restricted to the {len(allowed)} classes present, mapped by WordNet id")
    return run.finish(cfg.dataset.replace("-", "_"), out, {"top1": top1}, notes=notes, artifacts={"head": head_entry})


def _head_transform(meta: dict, run: ProtocolRun) -> EvalTransform:
    import json

    described = json.loads(meta.get("transform") or "{}")
    if not described:
        return run.transform(256, 224)
    return EvalTransform(**{**described, "mean": tuple(described["mean"]), "std": tuple(described["std"])})


def _logits(run: ProtocolRun, head, images, tf: EvalTransform, desc: str) -> torch.Tensor:
    feats = run.features(images, tf, desc=desc)
    with torch.no_grad():
        return head(feats)


def _embedded_c(run: ProtocolRun, cfg: RobustnessConfig, notes: list) -> tuple[dict, dict]:
    """Corruptions of the embedded test split; the head from --head or trained here (fast) on train/val."""
    train, test = read_classification_splits(run.data_spec, run.root, "train", "test", cfg.max_per_class)
    if not cfg.head:  # the fast head's train split is not the test set's size
        train, _ = read_classification_splits(run.data_spec, run.root, "train", "test", cfg.head_max_per_class)
    tf = run.transform(cfg.resize, cfg.crop)
    run.use_data(run.root, train.paths + test.paths, splits={"train": len(train.paths), "test": len(test.paths)},
                 corruptions=list(cfg.corruptions), severities=list(cfg.severities))
    if cfg.head:
        head, meta = load_head(cfg.head, trunk_sha256=run.info["weights_sha256"])
        head_entry = {"path": meta["path"], "sha256": meta["sha256"], "source": meta["source"]}
    else:
        head, head_notes = fast_head(run, train, test, tf)
        head_entry = {"trained_here": "linear_fast"}
        notes += ["head: the fast linear head, trained here on the train split"] + head_notes
    clean_images = np.stack([np.asarray(tf.pil_to_uint8()(_rgb(p))).transpose(1, 2, 0) for p in test.paths])
    clean = accuracy(_logits(run, head, ArrayImages(clean_images, [f"clean/{i}" for i in range(len(test.paths))]),
                            _identity_transform(tf), "clean"), test.labels)
    errors: dict[str, list[float]] = {}
    for name in cfg.corruptions:
        for sev in cfg.severities:
            rng = numpy_rng(run.seed, f"corruption {name}", sev)
            images = np.stack([corrupt(im, name, sev, rng) for im in clean_images])
            logits = _logits(run, head, ArrayImages(images, [f"{name}/{sev}/{i}" for i in range(len(images))]),
                             _identity_transform(tf), f"{name}/{sev}")
            errors.setdefault(name, []).append(100.0 - accuracy(logits, test.labels))
    metrics = {"top1_clean": clean, **{f"error_{n}": float(np.mean(e)) for n, e in errors.items()}}
    metrics["mean_error"] = float(np.mean([metrics[f"error_{n}"] for n in errors]))
    metrics["relative_error"] = metrics["mean_error"] - (100.0 - clean)
    notes.append(f"ImageNet-C-style corruptions {list(cfg.corruptions)} at severities {list(cfg.severities)} of the "
                 "embedded test split; no AlexNet errors exist for it, so no mCE")
    return metrics, head_entry


def _rgb(path: Path):
    from hexa_zoo.data import load_rgb

    return load_rgb(path)


def _identity_transform(tf: EvalTransform) -> EvalTransform:
    """The images are already resized and cropped: only normalisation remains."""
    return EvalTransform(resize=tf.crop, crop=tf.crop, mean=tf.mean, std=tf.std, square=True,
                         interpolation=tf.interpolation)
