"""Training the detector as detectron2 does: SGD without weight decay on norms, warm-up then steps, iterations
not epochs, checkpoints to resume from, precise BN before testing; under torchrun, SyncBN and DDP."""

from __future__ import annotations

import math
import os
from typing import Iterator

import torch
from torch import nn
from tqdm import tqdm

from .config import DetectionConfig

def distributed_setup() -> tuple[int, int, torch.device | None]:
    """(rank, world size, this process's GPU) under torchrun; (0, 1, None) in a single process."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def for_distributed(detector: nn.Module, cfg: DetectionConfig, device: torch.device) -> nn.Module:
    """SyncBatchNorm over all processes (MoCo: naiveSyncBN) and DistributedDataParallel around it."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":  # SyncBatchNorm runs on GPUs only; CPU processes keep per-process BN
        # in place for every module but the BatchNorms, so the C4 mask features still reach the box branch
        detector = nn.SyncBatchNorm.convert_sync_batchnorm(detector)
    return DistributedDataParallel(detector, device_ids=[device.index] if device.type == "cuda" else None)


def build_optimizer(model: nn.Module, cfg: DetectionConfig) -> torch.optim.SGD:
    """SGD as detectron2 builds it: weight decay on everything but normalisation layers."""
    norm, other, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a parameter reached through two modules counts once
                seen.add(id(p))
                (norm if is_norm else other).append(p)
    return torch.optim.SGD([{"params": other, "weight_decay": cfg.weight_decay},
                            {"params": norm, "weight_decay": cfg.weight_decay_norm}],
                           lr=cfg.base_lr, momentum=cfg.momentum)


def lr_factor(iteration: int, cfg: DetectionConfig) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up from `warmup_factor`, then x`gamma` at each step."""
    decay = cfg.gamma ** sum(iteration >= s for s in cfg.steps)
    if iteration >= cfg.warmup_iters:
        return decay
    alpha = iteration / cfg.warmup_iters
    return decay * (cfg.warmup_factor * (1 - alpha) + alpha)


def train_detector(model: nn.Module, batches: Iterator, cfg: DetectionConfig, device: torch.device,
                   run_index: int = 0, *, resume: dict | None = None, save=None) -> list[dict]:
    """`cfg.max_iter` iterations of SGD on the summed detection losses; returns periodic loss logs.

    `save(state)` is called every `cfg.checkpoint_every` iterations with the model, optimizer, schedule, the
    global torch RNG (the RPN and RoI samplers draw from it) and the logs; `resume` is such a state to
    continue from (`batches` must then start at its iteration)."""
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    inner = getattr(model, "module", model)
    logs, start = [], 0
    if resume is not None:
        inner.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        logs, start = resume["logs"], resume["iteration"]
    model.train()
    bar = tqdm(range(start, cfg.max_iter), desc=f"detection run {run_index + 1}/{cfg.runs}", leave=False)
    for it in bar:
        images, targets, _ = next(batches)
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"detection: loss became {loss.item()} at iteration {it}; "
                                     f"lower base_lr (now {cfg.base_lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if it % cfg.log_every == 0 or it == cfg.max_iter - 1:
            entry = {"iter": it + 1, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                     **{k: v.item() for k, v in losses.items()}}
            logs.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
        if save is not None and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.max_iter:
            save({"iteration": it + 1, "model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "logs": logs})
    return logs


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterator, iters: int, device: torch.device) -> None:
    """Re-estimate BatchNorm statistics as averages over `iters` training batches (detectron2 PreciseBN)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or iters <= 0:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    model.train()
    for _ in range(iters):
        images, targets, _ = next(batches)
        model([im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
