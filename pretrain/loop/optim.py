"""The optimiser and its learning rate: SGD or LARC (swav's LARS), linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch

from ..config import PretrainConfig


class LARC(torch.optim.SGD):
    """SGD with layer-wise adaptive rate control, as apex's LARC that swav wraps around SGD.

    Per parameter tensor p with gradient g: rate = trust * |p| / (|g| + wd * |p| + eps); with `clip`,
    rate = min(rate / lr, 1). The gradient becomes (g + wd * p) * rate and SGD steps without its own
    weight decay. Tensors whose weight or gradient norm is zero are left to plain SGD (as apex does).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, clip: bool = False, eps: float = 1e-8):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust_coefficient, self.clip, self.eps = trust_coefficient, clip, eps

    @torch.no_grad()
    def step(self, closure=None):
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, wd in zip(self.param_groups, decays):
            group["weight_decay"] = 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm, g_norm = p.norm(), p.grad.norm()
                rate = self.trust_coefficient * w_norm / (g_norm + wd * w_norm + self.eps)
                if self.clip:
                    rate = torch.clamp(rate / group["lr"], max=1.0)
                adapted = (p.grad + wd * p) * rate
                p.grad.copy_(torch.where((w_norm > 0) & (g_norm > 0), adapted, p.grad))
        try:
            return super().step(closure)
        finally:
            for group, wd in zip(self.param_groups, decays):
                group["weight_decay"] = wd


def make_optimizer(cfg: PretrainConfig, param_groups) -> torch.optim.Optimizer:
    """SGD, or LARC around SGD for `optimizer="lars"`, at the batch-scaled base lr."""
    lr = cfg.scaled(cfg.lr)
    if cfg.optimizer == "lars":
        return LARC(param_groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coefficient=cfg.lars_trust_coefficient, clip=cfg.lars_clip)
    # fused: one pass over each tensor for decay, momentum and update (on the CPU about half the time of
    # torch's default per-tensor loop for a ResNet-18; bench/pretrain_step.py)
    return torch.optim.SGD(param_groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)


def learning_rate(cfg: PretrainConfig, step: int, steps_per_epoch: int) -> float:
    """The lr before optimizer step `step` (0-based): linear warm-up, then cosine to `final_lr`.

    `schedule_unit="epoch"` holds the lr for a whole epoch (MoCo's `--cos`); "step" moves it every
    iteration (swav). All rates scale with the global batch (`cfg.scaled`).
    """
    base, final, start = cfg.scaled(cfg.lr), cfg.scaled(cfg.final_lr), cfg.scaled(cfg.warmup_start_lr)
    t = step / steps_per_epoch
    if cfg.schedule_unit == "epoch":
        t = math.floor(t)
    if t < cfg.warmup_epochs:
        return start + (base - start) * t / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return base
    progress = (t - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * min(progress, 1.0)))
