"""Linear evaluation of a frozen trunk: MoCo's main_lincls protocol, and a fast variant on cached features.

`variant="sgd"` (preset `paper`) is facebookresearch/moco's main_lincls.py: the trunk is frozen and kept
in eval mode (BN statistics untouched), a new fc (normal init std 0.01, bias 0) is trained with SGD
lr 30, momentum 0.9, weight decay 0, batch 256, for 100 epochs, lr x0.1 at epochs 60 and 80;
train images RandomResizedCrop(224) + horizontal flip, val images Resize(256) + CenterCrop(224).
After training, a sanity check confirms every trunk tensor (weights and BN buffers) is bit-identical
to before. Reported: top-1/top-5 of the final epoch, and the best top-1 over epochs (what main_lincls
prints as best_acc1). Validation features come from the shared cached extractor (the trunk is frozen
and the val transform deterministic, so this equals main_lincls's per-epoch forward, minus the cost).

`variant="fast"` (preset `paper_fast`, `embedded_fast`) is not MoCo's protocol and is labelled so in
its record and benchmark name (`<data>_linear_fast`): cached features of un-augmented train images,
standardised, then full-batch multinomial logistic regression (L-BFGS) for each weight decay in a
small grid; the grid point with the best top-1 on a held-out 10% of train (stratified) is refit on
all of train and evaluated on val.

    hexa transfer linear --model hexa_moco_r18.embedded --data embedded --out results/
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hexa_zoo.data import ignore_interrupt
from hexa_zoo.errors import DataError

from ..common import benchmark_name, embedded_images_per_class, feature_dim
from ..readers.images import LabeledImages, read_classification_splits
from ..checkpoints import RunCheckpoint
from ..heads import save_head
from ..metrics import topk_accuracy
from ..probe import FastProbe, train_fast_probe
from ..randomness import EpochSampler, SeededItems, quiet_loader_generator, torch_generator
from ..runner import ProtocolRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearConfig:
    variant: Literal["sgd", "fast"] = "sgd"
    # main_lincls (variant sgd)
    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    milestones: tuple[int, ...] = (60, 80)
    train_crop: int = 224       # RandomResizedCrop size
    resize: int = 256           # val: Resize(resize) + CenterCrop(crop)
    crop: int = 224
    num_workers: int | None = None
    amp: bool = False           # bfloat16 trunk forward on CUDA
    resume: str = ""            # "auto": checkpoint every epoch and continue a killed run (variant sgd)
    # fast variant (transfer/probe.py)
    fast_weight_decays: tuple[float, ...] = FastProbe.weight_decays
    fast_holdout: float = FastProbe.holdout
    fast_max_iter: int = FastProbe.max_iter
    # data
    train_split: str = "train"
    eval_split: str = "val"
    max_per_class: int = 0      # > 0: only the first N images of each class per split (quick runs)
    device: str = ""


PRESETS: dict[str, LinearConfig] = {
    "paper": LinearConfig(),
    "paper_fast": LinearConfig(variant="fast"),
    # 64 px images, 2000 training images: the same recipe, 10 epochs with the steps at the same fractions.
    "embedded": LinearConfig(epochs=10, milestones=(6, 8), train_crop=64, resize=64, crop=64),
    "embedded_fast": LinearConfig(variant="fast", resize=64, crop=64),
}


def embedded_sizes(share: float) -> dict:
    """The embedded preset's settings at `share` (0-1) of its full size, for a caller short of time (the demo):
    the fast variant, and below a third fewer images per class (as kNN, so one feature cache serves both)."""
    sizes: dict = {"variant": "fast"}
    if share < 1 / 3:
        sizes["max_per_class"] = embedded_images_per_class(share)
    return sizes


# --------------------------------------------------------------------------------- main_lincls

def lr_at(cfg: LinearConfig, epoch: int) -> float:
    """main_lincls's step schedule: lr x0.1 at each milestone epoch passed."""
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.milestones)


def new_fc(in_features: int, num_classes: int, generator: torch.Generator | None = None) -> nn.Linear:
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=0.01, generator=generator)
    nn.init.zeros_(fc.bias)
    return fc


def _train_loader(train: LabeledImages, cfg: LinearConfig, info: dict, device: torch.device, seed: int):
    """main_lincls's augmented training images (only those in `train`), labelled by `train.classes`."""
    from torchvision.transforms import v2

    from hexa_zoo.data import ImageFolderDataset, collate_skipping_bad, loader_workers

    tf = v2.Compose([v2.RandomResizedCrop(cfg.train_crop, antialias=True), v2.RandomHorizontalFlip(),
                     v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info["mean"], info["std"])])
    folder = ImageFolderDataset(train.root, transform=tf)
    position = {str(Path(p)): i for i, (p, _) in enumerate(folder.samples)}
    data = torch.utils.data.Subset(folder, [position[str(p)] for p in train.paths])
    index = {name: i for i, name in enumerate(train.classes)}
    remap = torch.tensor([index[name] for name in folder.classes])
    workers = loader_workers(len(data), at_least=1024) if cfg.num_workers is None else cfg.num_workers
    # The order of each epoch and each image's crop and flip come from their own seeded streams.
    sampler = EpochSampler(len(data), seed, "linear order")
    loader = torch.utils.data.DataLoader(SeededItems(data, seed, "linear augment"), batch_size=cfg.batch_size,
                                         sampler=sampler, num_workers=workers, collate_fn=collate_skipping_bad,
                                         pin_memory=device.type == "cuda", generator=quiet_loader_generator(),
                                         drop_last=False, persistent_workers=workers > 0,
                                         worker_init_fn=ignore_interrupt)
    return loader, sampler, remap


def train_linear_sgd(trunk: nn.Module, info: dict, train: LabeledImages, val_feats: torch.Tensor,
                     val_labels: torch.Tensor, cfg: LinearConfig, device: torch.device, seed: int,
                     checkpoint: RunCheckpoint | None = None) -> tuple[dict[str, float], list[str], nn.Linear]:
    """main_lincls on a frozen trunk; returns (metrics, notes, the head). Raises if the trunk changed.

    With `checkpoint`, the head, the optimizer and the history are saved after every epoch and a saved run
    continues after its last finished epoch (every epoch's order and crops come from seeded streams)."""
    trunk = trunk.to(device).eval()
    before = {k: v.detach().clone() for k, v in trunk.state_dict().items()}
    fc = new_fc(feature_dim(trunk), len(train.classes), torch_generator(seed, "linear head")).to(device)
    optimizer = torch.optim.SGD(fc.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader, sampler, remap = _train_loader(train, cfg, info, device, seed)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    trunk = trunk.to(memory_format=memory_format)
    use_amp = cfg.amp and device.type == "cuda"
    notes, bad_total, history, loss, first = [], 0, [], torch.tensor(float("nan")), 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        fc.load_state_dict(state["fc"])
        optimizer.load_state_dict(state["optimizer"])
        first, history, bad_total = state["epoch"], state["history"], state["bad_total"]
        notes.append(f"resumed after epoch {first} of {cfg.epochs} from {checkpoint.path.name}")
    for epoch in range(first, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        sampler.set_epoch(epoch)
        fc.train()
        for images, targets, _, bad in tqdm(loader, desc=f"linear epoch {epoch + 1}/{cfg.epochs}", disable=None,
                                            leave=False):
            bad_total += len(bad)
            if len(targets) == 0:
                continue
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                feats = trunk(images)
            loss = F.cross_entropy(fc(feats.float()), remap[targets].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            acc = topk_accuracy(fc(val_feats.to(device)).cpu(), val_labels, ks=(1, 5))
        history.append(acc)
        if checkpoint is not None:
            checkpoint.save({"epoch": epoch + 1, "fc": fc.state_dict(), "optimizer": optimizer.state_dict(),
                             "history": history, "bad_total": bad_total})
        log.info("linear epoch %d: lr %.4g loss %.4f val top1 %.2f top5 %.2f", epoch + 1, lr_at(cfg, epoch),
                 loss.item(), acc[1], acc[5])
    changed = [k for k, v in trunk.state_dict().items() if not torch.equal(v.to(before[k].device), before[k])]
    if changed:
        raise RuntimeError(f"sanity check failed: the frozen trunk changed during linear evaluation ({changed[:5]})")
    notes.append("sanity check passed: every trunk tensor is unchanged after training")
    if bad_total:
        notes.append(f"{bad_total} unreadable training image(s) were skipped (counted over all epochs)")
    final = history[-1]
    return {"top1": final[1], "top5": final[5], "top1_best": max(h[1] for h in history)}, notes, fc


# ------------------------------------------------------------------------------------------- run

def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """Linear evaluation of `model` on an ImageFolder dataset's train/val splits."""
    run = ProtocolRun.start("linear", LinearConfig, PRESETS, model, data, preset=preset, overrides=overrides,
                            seed=seed)
    cfg = run.cfg
    train, val = read_classification_splits(data, run.root, cfg.train_split, cfg.eval_split, cfg.max_per_class)
    if len(train.classes) < 2:
        raise DataError(f"{train.root} has {len(train.classes)} class folder(s)", "linear evaluation needs two or more")
    run.use_data(run.root, train.paths + val.paths, splits={cfg.train_split: len(train.paths),
                                                        cfg.eval_split: len(val.paths)},
                 num_classes=len(train.classes))
    tf = run.transform(cfg.resize, cfg.crop)
    val_feats = run.features(val.paths, tf, desc="linear val")
    checkpoint = RunCheckpoint.for_run(run, out)
    if cfg.variant == "sgd":
        metrics, notes, head = train_linear_sgd(run.trunk, run.info, train, val_feats, torch.from_numpy(val.labels),
                                                cfg, run.device, seed, checkpoint)
        protocol_name = "linear"
    else:
        train_feats = run.features(train.paths, tf, desc="linear train")
        probe = FastProbe(cfg.fast_weight_decays, cfg.fast_holdout, cfg.fast_max_iter)
        metrics, notes, head = train_fast_probe(train_feats, train.labels, val_feats, val.labels, len(train.classes),
                                                probe, run.device, seed)
        protocol_name = "linear_fast"
    log.info("linear (%s): %s", cfg.variant, ", ".join(f"{n}={v:.2f}" for n, v in metrics.items()))
    saved = save_head(out, head, classes=train.classes, info=run.info, transform=tf, protocol=protocol_name)
    record = run.finish(benchmark_name(run.dataset["name"], protocol_name), out, metrics,
                        notes=[f"variant: {cfg.variant}"] + notes, artifacts={"head": saved})
    checkpoint.done()
    return record
