"""Fine-tuning on the many-shot datasets, as ssl-transfer's `finetune.py` (Ericsson et al., CVPR 2021).

The pre-trained trunk and a new linear head train together: SGD with Nesterov momentum 0.9, a cosine schedule
over 5000 steps of batch 64, RandomResizedCrop(224, bicubic) + horizontal flip (evaluation: bicubic
Resize(224) + CenterCrop(224)); cross-entropy, or binary cross-entropy for VOC2007's labels. The learning rate
and weight decay come from ssl-transfer's grid: lr in logspace(-4, -1, 4) and wd = w / lr for w in
{0} + logspace(-6, -3, 4); each pair is trained on train and scored on the validation split (official, or a
seeded 20% of train, as `manyshot`), and the best pair is trained again on train + val and scored on test.
Metrics as `manyshot`. `--resume auto` checkpoints every `checkpoint_every` steps and after each grid point.

    hexa transfer finetune --model moco_v2_r50 --dataset flowers --data /data/flowers --out results/ \\
        --preset paper --resume auto
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hexa_zoo.data import ignore_interrupt, load_rgb

from ..checkpoints import RunCheckpoint
from ..common import benchmark_name, feature_dim
from ..features import ArrayImages
from ..metrics import MANYSHOT_SCORES
from ..readers.manyshot import Split, read_manyshot, split_validation
from ..randomness import EpochSampler, SeededItems, quiet_loader_generator, seeded
from ..runner import ProtocolRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    dataset: str = ""             # one of readers.manyshot.LAYOUTS (--dataset NAME); the embedded preset: embedded
    steps: int = 5000
    batch_size: int = 64
    momentum: float = 0.9
    lrs: tuple[float, ...] = ()          # () = ssl-transfer's logspace(-4, -1, grid_size), largest first
    ws: tuple[float, ...] = ()           # () = {0} + logspace(-6, -3, grid_size); weight decay = w / lr
    grid_size: int = 4
    image_size: int = 224
    val_fraction: float = 0.2
    val_seed: int = 0
    train_list: str = ""
    test_list: str = ""
    workers: int = 4
    resume: str = ""
    checkpoint_every: int = 500
    device: str = ""


PRESETS: dict[str, FinetuneConfig] = {
    "paper": FinetuneConfig(),
    "embedded": FinetuneConfig(dataset="embedded", steps=30, batch_size=32, lrs=(0.01,), ws=(0.0, 1e-5), image_size=64, workers=0,
                               checkpoint_every=10),
}


def grid(cfg: FinetuneConfig) -> list[tuple[float, float]]:
    """(lr, weight decay) pairs in ssl-transfer's order."""
    lrs = list(cfg.lrs) or torch.logspace(-4, -1, cfg.grid_size).flip(dims=(0,)).tolist()
    ws = list(cfg.ws) or [0.0] + torch.logspace(-6, -3, cfg.grid_size).tolist()
    return [(lr, w / lr) for lr in lrs for w in ws]


class _Images(Dataset):
    """(transformed image, label) of a Split's files or in-memory arrays."""

    def __init__(self, split: Split, rows: np.ndarray, transform):
        self.split, self.rows, self.transform = split, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        from PIL import Image

        row = int(self.rows[i])
        images = self.split.images
        img = Image.fromarray(images.arrays[row]) if isinstance(images, ArrayImages) else load_rgb(images[row])
        return self.transform(img), torch.as_tensor(self.split.labels[row])


def transforms(size: int, mean, std):
    from torchvision.transforms import v2

    bicubic = v2.InterpolationMode.BICUBIC
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    train = v2.Compose([v2.RandomResizedCrop(size, interpolation=bicubic, antialias=True), v2.RandomHorizontalFlip(),
                        *tail])
    test = v2.Compose([v2.Resize(size, interpolation=bicubic, antialias=True), v2.CenterCrop(size), *tail])
    return train, test


def train_and_score(trunk: nn.Module, num_classes: int, multilabel: bool, train: Dataset, test: Dataset,
                    lr: float, wd: float, cfg: FinetuneConfig, device: torch.device, seed: int, score,
                    *, tag: str, resume: dict | None = None, save=None) -> float:
    """Fine-tune a copy of `trunk` + a new head for cfg.steps steps on `train`; the score on `test`."""
    with seeded(seed, f"finetune head {tag}"):
        model = nn.Sequential(copy.deepcopy(trunk), nn.Linear(feature_dim(trunk), num_classes)).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, nesterov=True, weight_decay=wd)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.steps)
    criterion = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start = resume["step"]
    sampler = EpochSampler(len(train), seed, f"finetune order {tag}")
    items = SeededItems(train, seed, f"finetune augment {tag}")
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    model.train()
    step = start
    while step < cfg.steps:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        codes = list(sampler)[skip * cfg.batch_size:]  # a resumed run continues inside its epoch
        loader = DataLoader(items, batch_size=cfg.batch_size, sampler=codes, num_workers=cfg.workers,
                            generator=quiet_loader_generator(), worker_init_fn=ignore_interrupt)
        for images, targets in loader:
            loss = criterion(model(images.to(device)), targets.to(device).float() if multilabel else targets.to(device))
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"finetune: loss became {loss.item()} at step {step} (lr {lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if save is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict()})
            if step >= cfg.steps:
                break
    model.eval()
    outputs, labels = [], []
    with torch.no_grad():
        for images, targets in DataLoader(test, batch_size=cfg.batch_size, num_workers=cfg.workers,
                                          worker_init_fn=ignore_interrupt):
            outputs.append(model(images.to(device)).float().cpu())
            labels.append(targets)
    return score(torch.cat(labels).numpy(), torch.cat(outputs).numpy())


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """ssl-transfer's fine-tuning of `model` on one many-shot dataset (`--dataset NAME`)."""
    run = ProtocolRun.start("finetune", FinetuneConfig, PRESETS, model, data, preset=preset, overrides=overrides,
                            seed=seed)
    cfg = run.cfg
    root = run.root
    ds = read_manyshot(cfg.dataset, root, train_list=cfg.train_list, test_list=cfg.test_list)
    run.use_data(root, ds.files, fingerprint_root=root, dataset=cfg.dataset, num_classes=len(ds.classes),
                 metric=ds.metric)
    train_tf, test_tf = transforms(cfg.image_size, run.info["mean"], run.info["std"])
    everything = np.arange(len(ds.train.labels))
    if ds.val is not None:
        fit = _Images(ds.train, everything, train_tf)
        val = _Images(ds.val, np.arange(len(ds.val.labels)), test_tf)
        trainval = torch.utils.data.ConcatDataset([fit, _Images(ds.val, np.arange(len(ds.val.labels)), train_tf)])
    else:
        fit_rows, val_rows = split_validation(len(everything), cfg.val_fraction, cfg.val_seed)
        fit, val = _Images(ds.train, fit_rows, train_tf), _Images(ds.train, val_rows, test_tf)
        trainval = _Images(ds.train, everything, train_tf)
    test = _Images(ds.test, np.arange(len(ds.test.labels)), test_tf)
    score, multilabel = MANYSHOT_SCORES[ds.metric], ds.metric == "mAP"
    pairs = grid(cfg)
    checkpoint = RunCheckpoint.for_run(run, out)
    state = checkpoint.load() or {"scores": [], "train": None}
    notes = [f"resumed at grid point {len(state['scores']) + 1} of {len(pairs)}"] if state["scores"] or state["train"] \
        else []

    def save(train_state):
        checkpoint.save({"scores": state["scores"], "train": train_state})

    for i in range(len(state["scores"]), len(pairs)):
        lr, wd = pairs[i]
        state["scores"].append(train_and_score(run.trunk, len(ds.classes), multilabel, fit, val, lr, wd, cfg,
                                               run.device, seed, score, tag=f"grid {i}", resume=state["train"],
                                               save=save))
        state["train"] = None
        save(None)
    best = int(np.argmax(state["scores"]))
    lr, wd = pairs[best]
    resume = state["train"] if len(state["scores"]) == len(pairs) else None
    test_score = train_and_score(run.trunk, len(ds.classes), multilabel, trainval, test, lr, wd, cfg, run.device,
                                 seed, score, tag="final", resume=resume, save=save)
    notes += [f"metric: {ds.metric}; lr {lr:.4g}, weight decay {wd:.4g} chosen on the validation split among "
              f"{len(pairs)} pairs, then trained on train + val for {cfg.steps} steps",
              "validation score per (lr, wd): " + ", ".join(f"({a:.3g}, {b:.3g}): {s:.2f}"
                                                            for (a, b), s in zip(pairs, state["scores"]))]
    name = "embedded" if str(data) == "embedded" else cfg.dataset
    metric = {"mean": test_score, "std": 0.0, "n": 1, "values": [test_score], "lr": lr, "weight_decay": wd}
    record = run.finish(benchmark_name(name, "finetune"), out, {ds.metric: metric}, notes=notes)
    checkpoint.done()
    return record
