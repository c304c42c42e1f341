"""Semi-supervised evaluation: fine-tune every layer on 1% or 10% of the labels (swav's eval_semisup.py).

The recipe (facebookresearch/swav `eval_semisup.py`, SimCLR's ImageNet subsets):

- the training images are the SimCLR subset list (`1percent.txt`: 12,811 images, `10percent.txt`:
  128,116), given by path and verified; or, where the lists are not at hand, a deterministic
  class-balanced sample of the same fraction, recorded as such (`subset_source` in the record);
- a new head Linear(features, classes) on the pre-trained trunk; all layers train;
- 20 epochs, batch 256, SGD momentum 0.9, no weight decay, lr x0.2 at epochs 12 and 16;
  trunk / head lr: 1% = 0.02 / 5, 10% = 0.01 / 0.2;
- train RandomResizedCrop(224) + flip, evaluate Resize(256) + CenterCrop(224); report top-1 and top-5.

swav prints the best validation accuracy over epochs: the paper preset reports that (`report=best`);
the named variant `paper_final` reports the last epoch (no choice made on the validation set). The record
says which.

    hexa transfer semisup --model hexa_moco_r50 --data /data/imagenet --preset paper \\
        --set subset_list=/data/simclr/1percent.txt
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from hexa_zoo.data import ignore_interrupt
from hexa_zoo.errors import ConfigError, DataError

from ..readers import imagenet_subsets
from ..common import benchmark_name, feature_dim
from ..checkpoints import RunCheckpoint
from ..metrics import topk_accuracy
from ..randomness import EpochSampler, SeededItems, quiet_loader_generator, seeded
from ..runner import ProtocolRun

log = logging.getLogger(__name__)

# swav eval_semisup.py: (trunk lr, head lr) per label fraction.
PUBLISHED_LR = {"1percent": (0.02, 5.0), "10percent": (0.01, 0.2)}
FRACTION = {"1percent": 0.01, "10percent": 0.10}


@dataclass(frozen=True)
class SemisupConfig:
    """Constants of the swav semi-supervised protocol; `None` learning rates take the published ones."""

    labels: Literal["1percent", "10percent"] = "1percent"
    subset_list: str | None = None      # SimCLR 1percent.txt / 10percent.txt; None: class-balanced sampler
    subset_check_sha256: bool = True    # verify the list against SimCLR's recorded checksum
    train_split: str = "train"          # sub-folders of the data root (ImageNet layout)
    val_split: str = "val"
    epochs: int = 20
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_trunk: float | None = None       # 1%: 0.02, 10%: 0.01
    lr_head: float | None = None        # 1%: 5, 10%: 0.2
    decay_epochs: tuple[int, ...] = (12, 16)
    gamma: float = 0.2
    image_size: int = 224
    resize_size: int = 256
    report: Literal["final", "best"] = "final"
    workers: int = 8
    amp: bool = True                    # bfloat16 autocast on CUDA (ignored on CPU)
    resume: str = ""                    # "auto": checkpoint every epoch and continue a killed run
    device: str | None = None

    def learning_rates(self) -> tuple[float, float]:
        """(trunk lr, head lr): the overrides where given, else swav's values for `labels`."""
        trunk, head = PUBLISHED_LR[self.labels]
        return (trunk if self.lr_trunk is None else self.lr_trunk,
                head if self.lr_head is None else self.lr_head)


PRESETS: dict[str, SemisupConfig] = {
    "paper": SemisupConfig(report="best"),       # swav eval_semisup prints the best epoch
    "paper_final": SemisupConfig(),              # the last epoch: nothing chosen on val
    # The embedded dataset has few images per class: 10% keeps several per class; 64 px, two epochs.
    "embedded": SemisupConfig(labels="10percent", epochs=2, batch_size=32, decay_epochs=(1,),
                              image_size=48, resize_size=56, workers=0),
}


def embedded_sizes(share: float) -> dict:
    """The embedded preset's settings at `share` (0-1) of its full size: one epoch, the step after it."""
    return {"epochs": 1, "decay_epochs": [1]}


class FineTuneClassifier(nn.Module):
    """The pre-trained trunk with a new linear head (swav: `projection_head = Linear(2048, 1000)`)."""

    def __init__(self, trunk: nn.Module, num_classes: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(feature_dim(trunk), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def build_optimizer(model: FineTuneClassifier,
                    cfg: SemisupConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    """SGD with the trunk and the head in separate groups (their own lr), and the step schedule."""
    lr_trunk, lr_head = cfg.learning_rates()
    groups = [{"params": list(model.trunk.parameters()), "lr": lr_trunk, "name": "trunk"},
              {"params": list(model.head.parameters()), "lr": lr_head, "name": "head"}]
    optimizer = torch.optim.SGD(groups, lr=lr_trunk, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.decay_epochs), gamma=cfg.gamma)
    return optimizer, scheduler


def transforms(cfg: SemisupConfig, mean: Sequence[float], std: Sequence[float]):
    """swav's train (RandomResizedCrop + flip) and val (Resize + CenterCrop) transforms."""
    from torchvision.transforms import v2

    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    train = v2.Compose([v2.RandomResizedCrop(cfg.image_size, antialias=True), v2.RandomHorizontalFlip(), *tail])
    val = v2.Compose([v2.Resize(cfg.resize_size, antialias=True), v2.CenterCrop(cfg.image_size), *tail])
    return train, val


def select_subset(samples: Sequence[tuple[str, int]], cfg: SemisupConfig, seed: int) -> tuple[list[int], dict]:
    """Indices of the labelled subset within `samples`, and a description of where it came from."""
    if cfg.subset_list:
        names = imagenet_subsets.read_subset_list(cfg.subset_list, which=cfg.labels, check_sha256=cfg.subset_check_sha256)
        indices = imagenet_subsets.subset_indices(names, samples, cfg.subset_list)
        return indices, {"which": "simclr_list", "path": str(cfg.subset_list), "labels": cfg.labels,
                         "size": len(indices), "sha256_checked": cfg.subset_check_sha256}
    indices = imagenet_subsets.balanced_subset(samples, FRACTION[cfg.labels], seed)
    return indices, {"which": "balanced_sampler", "labels": cfg.labels, "fraction": FRACTION[cfg.labels],
                     "seed": seed, "size": len(indices)}


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """Fine-tune `model` on the labelled subset of `data`/train, evaluate on `data`/val, write one record."""
    from hexa_zoo.data import ImageFolderDataset

    run = ProtocolRun.start("semisup", SemisupConfig, PRESETS, model, data, preset=preset, overrides=overrides,
                            seed=seed)
    cfg, trunk, info = run.cfg, run.trunk, run.info
    if cfg.labels not in PUBLISHED_LR:
        raise ConfigError(f"labels={cfg.labels!r}", "use labels=1percent or labels=10percent")
    root = run.root
    if str(data) == "embedded":
        root = root / "classify"
    train_tf, val_tf = transforms(cfg, info["mean"], info["std"])
    for split in (cfg.train_split, cfg.val_split):
        if not (root / split).is_dir():
            raise DataError(f"{root / split} is not a folder",
                            f"--data must hold {cfg.train_split}/ and {cfg.val_split}/ class folders (ImageNet layout)")
    train_full = ImageFolderDataset(root / cfg.train_split, transform=train_tf)
    val_set = ImageFolderDataset(root / cfg.val_split, transform=val_tf)
    if list(val_set.classes) != list(train_full.classes):
        raise DataError(f"{root / cfg.val_split} and {root / cfg.train_split} have different class folders",
                        "use the same class sub-folders in both splits")
    indices, subset_info = select_subset(train_full.samples, cfg, seed)
    train_set = SeededItems(Subset(train_full, indices), seed, "semisup augment")
    notes = [_subset_note(subset_info)]
    files = [train_full.samples[i][0] for i in indices] + [p for p, _ in val_set.samples]
    run.use_data(root, files, fingerprint_root=root, subset=subset_info, num_classes=len(train_full.classes),
                 train_images_total=len(train_full), val_images=len(val_set))
    checkpoint = RunCheckpoint.for_run(run, out)

    device = run.device
    with seeded(seed, "semisup head"):  # nn.Linear's default init, from the run's own stream
        net = FineTuneClassifier(trunk, len(train_full.classes)).to(device)
    for p in net.parameters():
        p.requires_grad_(True)  # load_model hands out a frozen trunk; here every layer trains
    optimizer, scheduler = build_optimizer(net, cfg)
    best, bad, history, first = None, [], [], 0
    state = checkpoint.load()
    if state is not None:  # every epoch's order and crops come from seeded streams: the rest repeats exactly
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first, history, best, bad = state["epoch"], state["history"], state["best"], state["bad"]
        notes.append(f"resumed after epoch {first} of {cfg.epochs} from {checkpoint.path.name}")
    for epoch in range(first, cfg.epochs):
        loss = train_one_epoch(net, _loader(train_set, cfg, shuffle=True, seed=seed, epoch=epoch), optimizer, device,
                               cfg, epoch, bad)
        scheduler.step()
        if cfg.report == "best" or epoch == cfg.epochs - 1:
            acc = evaluate(net, _loader(val_set, cfg, shuffle=False), device, cfg, bad)
            history.append({"epoch": epoch + 1, "train_loss": loss, **acc})
            if best is None or acc["top1"] > best["top1"]:
                best = {"epoch": epoch + 1, **acc}
        checkpoint.save({"epoch": epoch + 1, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "history": history, "best": best,
                         "bad": [str(b) for b in bad]})
    final = history[-1]
    chosen = best if cfg.report == "best" else final
    notes.append(f"reported: {'best epoch (' + str(best['epoch']) + ') over' if cfg.report == 'best' else 'last of'}"
                 f" {cfg.epochs} epochs, on {cfg.val_split}/ ({len(val_set)} images)")
    if len(train_full.classes) < 5:
        notes.append(f"only {len(train_full.classes)} classes: top-5 is trivially 100")
    if bad:
        unreadable = sorted(set(map(str, bad)))  # the same file fails once per epoch: count files
        notes.append(f"{len(unreadable)} unreadable image(s) skipped: {unreadable[:10]}")
    pct = "1pct" if cfg.labels == "1percent" else "10pct"
    # A verified SimCLR list is an ImageNet subset by construction: name the benchmark so.
    name = ("embedded" if str(data) == "embedded" else
            "imagenet" if subset_info["which"] == "simclr_list" else root.name.lower())
    record = run.finish(benchmark_name(name, f"semisup_{pct}"), out,
                        {"top1": [chosen["top1"]], "top5": [chosen["top5"]]}, config=_resolved(cfg),
                        notes=notes + [f"epoch {h['epoch']}: loss {h['train_loss']:.4f} top1 {h['top1']:.2f} "
                                       f"top5 {h['top5']:.2f}" for h in history])
    checkpoint.done()
    return record


def _resolved(cfg: SemisupConfig) -> SemisupConfig:
    lr_trunk, lr_head = cfg.learning_rates()
    return replace(cfg, lr_trunk=lr_trunk, lr_head=lr_head)


def _subset_note(info: dict) -> str:
    if info["which"] == "simclr_list":
        return f"labelled subset: SimCLR list {info['path']} ({info['size']} images, verified)"
    return (f"labelled subset: deterministic class-balanced sample of {info['fraction']:.0%} "
            f"({info['size']} images, seed {info['seed']}), NOT the SimCLR list")


def _loader(dataset, cfg: SemisupConfig, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> DataLoader:
    """Training (`shuffle`): epoch `epoch`'s order from the stream (seed, "semisup order", epoch)."""
    from hexa_zoo.data import collate_skipping_bad

    sampler = EpochSampler(len(dataset), seed, "semisup order", epoch=epoch) if shuffle else None
    # A last batch of one image breaks BatchNorm in training: drop it (it is at most one image per epoch).
    drop_last = shuffle and len(dataset) % cfg.batch_size == 1
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, generator=quiet_loader_generator(),
                      num_workers=cfg.workers, collate_fn=collate_skipping_bad, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      worker_init_fn=ignore_interrupt)


def _autocast(device: torch.device, cfg: SemisupConfig):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def train_one_epoch(net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                    cfg: SemisupConfig, epoch: int, bad: list) -> float:
    """One epoch of cross-entropy fine-tuning; returns the mean training loss."""
    net.train()
    criterion = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for images, targets, _, bad_paths in tqdm(loader, desc=f"semisup epoch {epoch + 1}/{cfg.epochs}", leave=False):
        bad.extend(bad_paths)
        if len(targets) == 0:
            continue
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, cfg):
            loss = criterion(net(images).float(), targets)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"semisup: training loss became {loss.item()} in epoch {epoch + 1}; "
                                     "lower lr_trunk/lr_head")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(targets), count + len(targets)
    return total / max(count, 1)


@torch.inference_mode()
def evaluate(net: nn.Module, loader: DataLoader, device: torch.device, cfg: SemisupConfig, bad: list) -> dict:
    """Top-1 and top-5 accuracy (percent) over the whole loader."""
    net.eval()
    hits = {1: 0.0, 5: 0.0}
    n = 0
    for images, targets, _, bad_paths in tqdm(loader, desc="semisup eval", leave=False):
        bad.extend(bad_paths)
        if len(targets) == 0:
            continue
        with _autocast(device, cfg):
            logits = net(images.to(device, non_blocking=True)).float()
        acc = topk_accuracy(logits.cpu(), targets, ks=(1, 5))
        for k in hits:
            hits[k] += acc[k] * len(targets) / 100.0
        n += len(targets)
    if n == 0:
        raise DataError("no readable validation image", "check the val/ folder")
    return {"top1": 100.0 * hits[1] / n, "top5": 100.0 * hits[5] / n}
