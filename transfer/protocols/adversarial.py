"""Adversarial robustness of the linear probe: accuracy of trunk + linear head under L-infinity PGD.

The attack (Madry et al. 2018) works in pixel space [0, 1] on the evaluation images (Resize + CenterCrop,
as the head was trained to read them): a uniform random start in the eps-ball, then `steps` steps of
x <- proj(x + alpha * sign(grad of the cross-entropy)), alpha = 2.5 * eps / steps, each projected back into
the eps-ball and [0, 1]. eps in {1, 2, 4} / 255, 10 steps. The trunk is frozen and in eval mode; only the
input is differentiated. Reported: clean top-1 and top-1 under each eps, on the evaluation split.

The head is the one `hexa transfer linear` saved (`--head RECORD_OR_FILE`, named in the record); without
`--head`, the fast linear head (L-BFGS on cached features of train) is trained here first.

    hexa transfer adversarial --model hexa_moco_r18.embedded --data embedded --out results/
    hexa transfer adversarial --model moco_v2_r50 --data /data/imagenet --head results/linear-....json \\
        --preset paper
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hexa_zoo.data import load_rgb
from hexa_zoo.errors import ConfigError

from ..common import benchmark_name
from ..readers.images import read_classification_splits
from ..heads import load_head
from ..probe import fast_head
from ..randomness import quiet_loader_generator, torch_generator
from ..runner import ProtocolRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdversarialConfig:
    head: str = ""                          # a linear record or head file; "" trains the fast head here
    eps: tuple[float, ...] = (1.0, 2.0, 4.0)  # in units of 1/255
    steps: int = 10
    step_factor: float = 2.5                # alpha = step_factor * eps / steps
    random_start: bool = True
    resize: int = 256
    crop: int = 224
    train_split: str = "train"
    eval_split: str = "val"
    max_per_class: int = 0
    batch_size: int = 64
    device: str = ""


PRESETS: dict[str, AdversarialConfig] = {
    "paper": AdversarialConfig(),
    "embedded": AdversarialConfig(resize=64, crop=64, max_per_class=5, batch_size=50),
}


class Probe(nn.Module):
    """Pixels in [0, 1] -> normalise -> frozen trunk -> linear head."""

    def __init__(self, trunk: nn.Module, head: nn.Linear, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.trunk, self.head = trunk.eval(), head.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk((x - self.mean) / self.std))


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, alpha: float, *,
               start: torch.Tensor | None = None) -> torch.Tensor:
    """L-infinity PGD from `x + start` (start in [-eps, eps]; None: from x itself); returns x_adv."""
    x_adv = (x + start).clamp(0, 1) if start is not None else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


class _Pixels(Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.paths[i])), int(self.labels[i])


def adversarial_accuracy(model: nn.Module, loader: DataLoader, cfg: AdversarialConfig, device: torch.device,
                         seed: int) -> dict[str, float]:
    """Clean top-1 and top-1 under PGD at each eps (percent). Random starts come from the stream
    (seed, "pgd start", batch index), so the numbers do not depend on anything else that drew randomness."""
    correct = {"top1_clean": 0, **{f"top1_pgd_eps{e:g}": 0 for e in cfg.eps}}
    total = 0
    for b, (images, labels) in enumerate(loader):
        x = images.to(device).float() / 255.0
        y = labels.to(device)
        with torch.no_grad():
            correct["top1_clean"] += int((model(x).argmax(1) == y).sum())
        generator = torch_generator(seed, "pgd start", b)
        for e in cfg.eps:
            eps = e / 255.0
            start = ((torch.rand(x.shape, generator=generator) * 2 - 1) * eps).to(device) if cfg.random_start else None
            x_adv = pgd_attack(model, x, y, eps, cfg.steps, cfg.step_factor * eps / cfg.steps, start=start)
            with torch.no_grad():
                correct[f"top1_pgd_eps{e:g}"] += int((model(x_adv).argmax(1) == y).sum())
        total += len(y)
    return {k: 100.0 * v / total for k, v in correct.items()}


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """PGD accuracy of `model` + a linear head on `data`'s evaluation split (ImageFolder train/ + val/)."""
    run = ProtocolRun.start("adversarial", AdversarialConfig, PRESETS, model, data, preset=preset,
                            overrides=overrides, seed=seed)
    cfg = run.cfg
    train, val = read_classification_splits(data, run.root, cfg.train_split, cfg.eval_split, cfg.max_per_class)
    tf = run.transform(cfg.resize, cfg.crop)
    notes = []
    if cfg.head:
        head, meta = load_head(cfg.head, trunk_sha256=run.info["weights_sha256"])
        if meta["classes"] and meta["classes"] != train.classes:
            raise ConfigError(f"the head {meta['path']} was trained on classes {meta['classes'][:3]}..., not this "
                              f"dataset's {train.classes[:3]}...", "pass the head of a linear run on the same data")
        run.use_data(run.root, val.paths, splits={cfg.eval_split: len(val.paths)}, num_classes=len(train.classes))
        head_entry = {"path": meta["path"], "sha256": meta["sha256"], "source": meta["source"]}
        notes.append(f"head: {meta['source']} ({meta['protocol']}, sha256 {meta['sha256'][:12]})")
    else:
        run.use_data(run.root, train.paths + val.paths, splits={cfg.train_split: len(train.paths),
                                                            cfg.eval_split: len(val.paths)},
                     num_classes=len(train.classes))
        head, head_notes = fast_head(run, train, val, tf)
        head_entry = {"trained_here": "linear_fast"}
        notes += ["head: the fast linear head (L-BFGS on cached features of train), trained here"] + head_notes
    probe = Probe(run.trunk, head, run.info["mean"], run.info["std"]).to(run.device)
    loader = DataLoader(_Pixels(val.paths, val.labels, tf.pil_to_uint8()), batch_size=cfg.batch_size,
                        num_workers=0, generator=quiet_loader_generator())
    metrics = adversarial_accuracy(probe, loader, cfg, run.device, seed)
    log.info("adversarial: %s", ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    notes.append(f"L-inf PGD, {cfg.steps} steps of {cfg.step_factor} * eps / {cfg.steps}, "
                 f"{'random start' if cfg.random_start else 'no random start'}; eps in 1/255: {list(cfg.eps)}")
    return run.finish(benchmark_name(run.dataset["name"], "adversarial"), out, metrics, notes=notes,
                      artifacts={"head": head_entry})

