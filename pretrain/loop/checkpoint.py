"""Checkpoints: written atomically, listed by position, loaded with weights_only, checked on resume.

A checkpoint `out/checkpoints/checkpoint_e<epoch>_b<batch>.pt` (rank 0) holds the method's state
(weights, MoCo's queue and key encoder, DeepCluster's memory bank...), the optimizer, the AMP scaler,
every RNG state and the position (epoch in progress, batches of it done). Under torchrun every other
rank writes `rank<r>_e<epoch>_b<batch>.pt` beside it with its own buffers (BN statistics, its share of
the memory bank) and RNG. The newest `keep_checkpoints` of each kind are kept.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_torch_save

from ..config import PretrainConfig

log = logging.getLogger("pretrain")

CHECKPOINT_DIR = "checkpoints"


def checkpoint_name(epoch: int, batch: int) -> str:
    """Sorts by position: epoch to resume in, batches of it already done."""
    return f"checkpoint_e{epoch:05d}_b{batch:07d}.pt"


def list_checkpoints(out: str | Path) -> list[Path]:
    """This run's checkpoints, oldest first."""
    return sorted((Path(out) / CHECKPOINT_DIR).glob("checkpoint_e*_b*.pt"))


def rng_state(device: torch.device) -> dict:
    """Every RNG the run draws from, in types that torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Put back every RNG state that `rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def rank_file(out: str | Path, rank: int, epoch: int, batch: int) -> Path:
    """Where rank `rank` (> 0) keeps its own buffers and RNG for the checkpoint at (epoch, batch)."""
    return Path(out) / CHECKPOINT_DIR / f"rank{rank}_e{epoch:05d}_b{batch:07d}.pt"


def remove_unfinished_writes(out: str | Path) -> None:
    """Delete temporary files left by a checkpoint write that was killed."""
    for stale in (Path(out) / CHECKPOINT_DIR).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(out: str | Path, cfg: PretrainConfig, *, epoch: int, batch: int, steps_per_epoch: int,
                    world_size: int, method: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, device: torch.device, pipeline_choice: dict | None = None) -> Path:
    """Rank 0's checkpoint at (epoch in progress, batches of it done); drops all but the newest kept."""
    state = {
        "epoch": epoch, "batch_in_epoch": batch, "steps_per_epoch": steps_per_epoch,
        "step": epoch * steps_per_epoch + batch,
        "method": cfg.method, "arch": cfg.arch, "config": cfg.to_dict(),
        "world_size": world_size,
        "model": method.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "pipeline_choice": pipeline_choice,  # augment.pipeline=auto's measured decision (pipeline_choice.py)
        # The loader's position is (epoch, batch_in_epoch): its order is the sampler's seeded
        # permutation of that epoch and each sample's augmentation seed is (seed, epoch, index).
        "rng": dict(rng_state(device), loader={"epoch": epoch, "batch_in_epoch": batch, "seed": cfg.seed}),
    }
    path = Path(out) / CHECKPOINT_DIR / checkpoint_name(epoch, batch)
    atomic_torch_save(state, path)
    for old in list_checkpoints(out)[:-cfg.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def save_rank_state(out: str | Path, rank: int, *, epoch: int, batch: int, method: nn.Module,
                    device: torch.device, keep: int) -> None:
    """A rank other than 0 saves its own buffers (not the parameters, which DDP keeps equal) and RNG."""
    params = {name for name, _ in method.named_parameters()}
    buffers = {k: v for k, v in method.state_dict().items() if k not in params}
    atomic_torch_save({"buffers": buffers, "rng": rng_state(device)}, rank_file(out, rank, epoch, batch))
    for old in sorted((Path(out) / CHECKPOINT_DIR).glob(f"rank{rank}_e*_b*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def choose_checkpoint(out: str | Path, resume: str | None, world_size: int) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start.

    resume: None (a fresh run; refuses an `out` that already holds checkpoints), "auto" (the newest
    checkpoint, or None when there is none) or a checkpoint path. Under DDP every rank takes rank 0's pick.
    """
    out = Path(out)
    existing = list_checkpoints(out)
    if resume is None:
        if existing:
            raise ConfigError(f"{out} already holds checkpoints (newest {existing[-1].name})",
                              "pass --resume auto to continue that run, or choose another --out")
        return None
    path = Path(resume) if resume != "auto" else (existing[-1] if existing else None)
    if world_size > 1:  # every rank resumes from the checkpoint rank 0 picked
        chosen = [str(path) if path else ""]
        dist.broadcast_object_list(chosen, src=0)
        path = Path(chosen[0]) if chosen[0] else None
    if path is None:
        log.info("--resume auto: no checkpoint in %s, starting from scratch", out / CHECKPOINT_DIR)
        return None
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist",
                          "pass --resume auto or an existing checkpoint (multi-node: --out on a shared filesystem)")
    return path


def load_checkpoint(path: Path, cfg: PretrainConfig, steps_per_epoch: int) -> dict:
    """Load `path` (weights_only) after checking that it belongs to this run; ConfigError if not."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # What the run trains on must not change under it (epochs, lr and the like may: extend or tune a run).
    saved = dict(ckpt["config"], method=ckpt["method"], arch=ckpt["arch"])
    for key in ("method", "arch", "data", "limit_images", "seed"):
        if saved.get(key) != getattr(cfg, key):
            raise ConfigError(f"checkpoint {path} was trained with {key}={saved.get(key)!r}, this run asks for "
                              f"{key}={getattr(cfg, key)!r}",
                              f"resume with {key}={saved.get(key)!r}, or start a new run in another --out")
    if ckpt["batch_in_epoch"] and ckpt["steps_per_epoch"] != steps_per_epoch:
        raise ConfigError(f"checkpoint {path} stopped mid-epoch with {ckpt['steps_per_epoch']} steps per epoch; "
                          f"this run has {steps_per_epoch} (different batch, data or process count)",
                          "resume with the same --batch-size, data and number of processes")
    return ckpt


def load_rank_state(out: str | Path, rank: int, epoch: int, batch: int) -> dict | None:
    """Rank `rank`'s own buffers and RNG saved beside the checkpoint at (epoch, batch); None (warned) if absent."""
    own = rank_file(out, rank, epoch, batch)
    if own.is_file():
        return torch.load(own, map_location="cpu", weights_only=True)
    log.warning("rank %d: no %s beside the checkpoint; this rank continues with rank 0's buffers", rank, own.name)
    return None
