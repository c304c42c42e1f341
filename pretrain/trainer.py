"""The pre-training loop: one process, or many under torchrun (DDP over GPUs and nodes).

    from pretrain.config import load_recipe
    from pretrain.trainer import train
    result = train(load_recipe("hexa_moco_r18_embedded", ["epochs=2"]))

What it does, in order: joins the process group if torchrun started it (NCCL on CUDA, gloo on CPU);
reads the images (`--data embedded` or a folder); fits the batch and the method's sizes to the data,
saying so in one line per change; trains with the method's `training_step`; checkpoints atomically
every `checkpoint_every_steps` steps and at each epoch end; logs CSV rows and TensorBoard events;
finally publishes the trunk to the local zoo.

Exact resume. The data order is a seeded permutation per epoch (DistributedSampler's), and every
sample's augmentation draws from its own RNG seeded by (seed, epoch, index), whatever process or
worker loads it. A checkpoint records the position inside the epoch; resuming skips the batches already
consumed and restores every RNG state (torch, CUDA, numpy, python). So on CPU, in one process, a run
killed at any point and resumed with `--resume auto` gives the same losses and weights as one that
never stopped.

Files in `out`: config.yaml (the resolved recipe), log.csv and tb/ (loss, each view's loss, lr,
img/s), checkpoints/checkpoint_e<epoch>_b<batch>.pt (written by rank 0; the newest
`keep_checkpoints` are kept), and under torchrun rank<r>_e..._b....pt beside them with each other
rank's own buffers (BN statistics, DeepCluster's memory bank) and RNG. Multi-node: put `out` on a
filesystem every node sees. Unreadable images are dropped from their batch, counted per epoch and
listed in bad_images.txt; under DDP a thinned batch is topped up by repeating its own images, since
every process must hold the same batch.

Published name: `<method>_r18` / `<method>_r50` for timm's resnet18 / resnet50 (the registered names,
loadable by `timm.create_model(name, pretrained=True)` once hexa_zoo is imported); any other arch
publishes as `<method>_<arch>` (dots and slashes as underscores), a zoo folder loadable with
`hexa_zoo.load_trunk(folder)` or timm's `local-dir:` but not by name, since only registered names resolve.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hexa_zoo.config import save_config
from hexa_zoo.errors import ConfigError, HexaError
from hexa_zoo.fileio import atomic_torch_save, atomic_write_text

from .augment import multicrop_transform, two_view_transform
from .config import PretrainConfig

log = logging.getLogger("pretrain")

CHECKPOINT_DIR = "checkpoints"
CSV_NAME = "log.csv"


class TrainingDivergedError(HexaError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainResult:
    out_dir: Path
    zoo_dir: Path | None          # the published zoo folder (None when publish=false)
    final_logs: dict              # last step's logs plus run totals (steps, bad_images, notes, ...)


# ----------------------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_processes() -> tuple[Processes, bool]:
    """Join torchrun's process group (from RANK/WORLD_SIZE/LOCAL_RANK); returns (processes, we_created_it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return Processes(rank, world, local, device), created


def cpu_threads(threads: int, workers: int) -> int | None:
    """torch threads for a CPU process: `threads`, or the cores left per process after the loader workers.

    None (leave torch alone) when OMP_NUM_THREADS is set. Oversubscribed cores are ruinous here: on
    2 cores, 2 threads beside a loader worker train 3-4x slower than 1 thread.
    """
    if threads:
        return threads
    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, per_process - workers)


def zoo_model_name(method: str, arch: str) -> str:
    """`hexa_moco` + `resnet18` -> `hexa_moco_r18`; other archs -> `<method>_<arch>` (see module doc)."""
    short = {"resnet18": "r18", "resnet50": "r50"}.get(arch)
    return f"{method}_{short}" if short else f"{method}_{arch.replace('.', '_').replace('/', '_')}"


# ---------------------------------------------------------------------------------------------- data
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch, independent of loader workers and processes."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


class SeededViews(Dataset):
    """A dataset whose item `i` is augmented with torch's RNG seeded by (seed, epoch, i).

    Wraps hexa_zoo.data.ImageFolderDataset (optionally a subset of it, `indices`); returns
    `(views, target, i)` with `i` the position in this dataset, or the base dataset's BadImage.
    The global RNG outside the item is left as it was (fork_rng), so loading in the main process
    does not disturb the training RNG.
    """

    def __init__(self, base: Dataset, seed: int, indices: list[int] | None = None):
        self.base, self.seed, self.indices = base, seed, indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)

    def __getitem__(self, i: int):
        threads = torch.get_num_threads()
        # One image is far too small for intra-op threads: in the main process (workers=0) their
        # start-up costs 10-30x the work. Loader workers already run with one thread.
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, self.epoch, i))
                item = self.base[self.indices[i] if self.indices is not None else i]
        finally:
            torch.set_num_threads(threads)
        if isinstance(item, tuple):
            views, target, _ = item
            return views, target, i
        return item


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded permutation per epoch, one shard per rank) that can start mid-epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def start_at(self, epoch: int, skip_samples: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def build_dataset(cfg: PretrainConfig) -> tuple[SeededViews, str, list[str]]:
    """The training images with the method's views; returns (dataset, where, notes)."""
    from hexa_zoo.data import ImageFolderDataset
    from hexa_zoo.embedded import resolve_data

    root = resolve_data(cfg.data)
    if cfg.data == "embedded":
        root = root / "classify" / "train"
    views = two_view_transform(cfg.augment) if cfg.family == "moco" else multicrop_transform(cfg.augment)
    base = ImageFolderDataset(root, transform=views)
    notes, indices = [], None
    if 0 < cfg.limit_images < len(base):
        picked = torch.randperm(len(base), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.limit_images]
        indices = sorted(picked.tolist())
        notes.append(f"training on a seeded subset of {cfg.limit_images} of the {len(base)} images (limit_images)")
    return SeededViews(base, cfg.seed, indices), str(root), notes


def fit_batch(batch_size: int, dataset_size: int, world_size: int) -> tuple[int, list[str]]:
    """Per-process batch for a global `batch_size`, shrunk when the data is too small; returns (batch, notes)."""
    notes = []
    per_rank = batch_size // world_size
    if per_rank * world_size != batch_size:
        notes.append(f"batch {batch_size} does not split over {world_size} processes: using "
                     f"{per_rank * world_size} ({per_rank} per process)")
    if per_rank < 2:
        raise ConfigError(f"batch {batch_size} gives {per_rank} image(s) per process on {world_size} processes",
                          "raise --batch-size to at least 2 per process")
    shard = math.ceil(dataset_size / world_size)  # DistributedSampler pads every shard to this size
    if shard < 2:
        raise ConfigError(f"only {dataset_size} image(s) for {world_size} process(es)",
                          "give the run at least two images per process")
    if per_rank > shard:
        notes.append(f"batch {per_rank * world_size} is larger than the dataset ({dataset_size} images): "
                     f"using {shard * world_size} ({shard} per process)")
        per_rank = shard
    dropped = shard % per_rank
    if dropped:
        notes.append(f"{dropped} of {shard} images per process are left out of each epoch (incomplete last "
                     "batch dropped, as MoCo and swav do; the permutation changes every epoch)")
    return per_rank, notes


# --------------------------------------------------------------------------------------- optimisation
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
    lr = cfg.scaled(cfg.lr)
    if cfg.optimizer == "lars":
        return LARC(param_groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coefficient=cfg.lars_trust_coefficient, clip=cfg.lars_clip)
    return torch.optim.SGD(param_groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


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


# ---------------------------------------------------------------------------------------- checkpoints
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
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- logs
class RunLog:
    """CSV rows (out/log.csv) and TensorBoard scalars (out/tb) of one run, written by rank 0 only.

    On resume, rows after the checkpoint's step are dropped from the CSV (they were computed after the
    state we go back to), and TensorBoard is told to purge them.
    """

    FIXED = ("step", "epoch", "lr", "img_per_s", "time_s")

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled, self.path, self.writer, self.fields = enabled, out / CSV_NAME, None, None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [r for r in reader if None not in r.values() and r.get("step", "").isdigit()
                        and int(r["step"]) <= resume_step]
            lines = [",".join(self.fields)] if self.fields else []
            text = "".join(_csv_line(self.fields, r) for r in kept)
            atomic_write_text(self.path, ("\n".join(lines) + "\n" if lines else "") + text)
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", newline="")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=resume_step)

    def row(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(self.FIXED) + sorted(k for k in values if k not in self.FIXED)
            self.file.write(",".join(self.fields) + "\n")
        elif not set(values) <= set(self.fields):  # e.g. DeepCluster's losses appear after its first epoch
            self._widen(sorted(set(values) - set(self.fields)))
        self.file.write(_csv_line(self.fields, values))
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if key in ("step", "epoch", "time_s"):
                    continue
                group = "loss" if key.startswith("loss") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def _widen(self, new_fields: list[str]) -> None:
        """Rewrite the CSV with more columns (earlier rows get empty cells there)."""
        self.file.close()
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields = list(self.fields) + new_fields
        atomic_write_text(self.path, ",".join(self.fields) + "\n" + "".join(_csv_line(self.fields, r) for r in rows))
        self.file = open(self.path, "a", newline="")

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def _csv_line(fields: list[str], values: dict) -> str:
    return ",".join(repr(v) if isinstance(v, float) else str(v) for v in (values.get(k, "") for k in fields)) + "\n"


# ---------------------------------------------------------------------------------------------- train
def build_method(cfg: PretrainConfig, dataset_size: int) -> nn.Module:
    """The method object of `cfg.method` (MoCo or DeepClusterV2), with hard views for the HEXA methods."""
    if cfg.family == "moco":
        from .moco import MoCo as Method
    else:
        from .deepcluster import DeepClusterV2 as Method
    return Method(cfg.method_config(), arch=cfg.arch, dataset_size=dataset_size)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def train(cfg: PretrainConfig, *, resume: str | None = None,
          method_factory: Callable[[PretrainConfig, int], nn.Module] | None = None) -> TrainResult:
    """Pre-train `cfg.method` on `cfg.data`, write checkpoints and logs into `cfg.out`, publish the trunk.

    resume: None (a fresh run; refuses an `out` that already holds checkpoints), "auto" (the newest
    checkpoint in `out/checkpoints`, or a fresh start when there is none) or a checkpoint path.
    method_factory: builds the method from (cfg, dataset_size); defaults to `build_method`.
    """
    procs, created_group = init_processes()
    threads_before = torch.get_num_threads()
    threads = cpu_threads(cfg.threads, cfg.workers) if procs.device.type == "cpu" else None
    if threads:
        torch.set_num_threads(threads)
    try:
        return _Run(cfg, procs, resume, method_factory or build_method).fit()
    finally:
        torch.set_num_threads(threads_before)
        if created_group:
            dist.destroy_process_group()


class _Run:
    """One training run; `fit()` holds the loop, the other methods its steps."""

    def __init__(self, cfg: PretrainConfig, procs: Processes, resume: str | None,
                 method_factory: Callable[[PretrainConfig, int], nn.Module]):
        self.procs, self.out = procs, Path(cfg.out)
        self.cuda = procs.device.type == "cuda"
        log.setLevel(logging.INFO if procs.is_main else logging.WARNING)
        seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
        self.data, self.data_root, notes = build_dataset(cfg)
        per_rank, batch_notes = fit_batch(cfg.batch_size, len(self.data), procs.world_size)
        notes += batch_notes
        if per_rank * procs.world_size != cfg.batch_size:
            cfg = dataclasses.replace(cfg, batch_size=per_rank * procs.world_size)  # lr scales with it
        self.cfg, self.per_rank = cfg, per_rank
        self.method = method_factory(cfg, len(self.data))
        notes += list(self.method.adapt_to_data(len(self.data), cfg.batch_size))
        self.notes = notes
        self.method.to(procs.device)
        self.channels_last = self.cuda and cfg.channels_last
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if procs.world_size > 1:
            self.method.setup_distributed()
        self.optimizer = make_optimizer(cfg, self.method.param_groups())
        self.amp = self.cuda and cfg.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.sampler = ResumableSampler(self.data, procs.world_size, procs.rank, cfg.seed)
        self.steps_per_epoch = self.sampler.num_samples // per_rank
        self.epoch, self.batch = 0, 0  # position: epoch in progress, batches of it done
        self.last_checkpoint: Path | None = None
        self._resume(resume)

    # -- resume ------------------------------------------------------------------------------------
    def _resume(self, resume: str | None) -> None:
        existing = list_checkpoints(self.out)
        if resume is None:
            if existing:
                raise ConfigError(f"{self.out} already holds checkpoints (newest {existing[-1].name})",
                                  "pass --resume auto to continue that run, or choose another --out")
            seed_everything(self.cfg.seed + self.procs.rank)
            self.resumed_step = None
            return
        path = Path(resume) if resume != "auto" else (existing[-1] if existing else None)
        if self.procs.world_size > 1:  # every rank resumes from the checkpoint rank 0 picked
            chosen = [str(path) if path else ""]
            dist.broadcast_object_list(chosen, src=0)
            path = Path(chosen[0]) if chosen[0] else None
        if path is None:
            log.info("--resume auto: no checkpoint in %s, starting from scratch", self.out / CHECKPOINT_DIR)
            seed_everything(self.cfg.seed + self.procs.rank)
            self.resumed_step = None
            return
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist",
                              "pass --resume auto or an existing checkpoint (multi-node: --out on a shared filesystem)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        # What the run trains on must not change under it (epochs, lr and the like may: extend or tune a run).
        saved = dict(ckpt["config"], method=ckpt["method"], arch=ckpt["arch"])
        for key in ("method", "arch", "data", "limit_images", "seed"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ConfigError(f"checkpoint {path} was trained with {key}={saved.get(key)!r}, this run asks for "
                                  f"{key}={getattr(self.cfg, key)!r}",
                                  f"resume with {key}={saved.get(key)!r}, or start a new run in another --out")
        self.epoch, self.batch = ckpt["epoch"], ckpt["batch_in_epoch"]
        if self.batch and ckpt["steps_per_epoch"] != self.steps_per_epoch:
            raise ConfigError(f"checkpoint {path} stopped mid-epoch with {ckpt['steps_per_epoch']} steps per epoch; "
                              f"this run has {self.steps_per_epoch} (different batch, data or process count)",
                              "resume with the same --batch-size, data and number of processes")
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        if not self.procs.is_main:  # rank r's own buffers (BN statistics, DeepCluster's memory bank) and RNG
            own = self._rank_file(self.epoch, self.batch)
            if own.is_file():
                mine = torch.load(own, map_location="cpu", weights_only=True)
                self.method.load_state_dict(mine["buffers"], strict=False)
                rng = mine["rng"]
            else:
                log.warning("rank %d: no %s beside the checkpoint; this rank continues with rank 0's buffers",
                            self.procs.rank, own.name)
                rng = None
                seed_everything(sample_seed(self.cfg.seed, self.epoch * self.steps_per_epoch + self.batch,
                                            self.procs.rank))
        if rng is not None:
            set_rng_state(rng, self.procs.device)
        self.last_checkpoint = path
        self.resumed_step = self.epoch * self.steps_per_epoch + self.batch
        log.info("resumed from %s (epoch %d, step %d)", path, self.epoch + 1, self.resumed_step)

    def _rank_file(self, epoch: int, batch: int) -> Path:
        return self.out / CHECKPOINT_DIR / f"rank{self.procs.rank}_e{epoch:05d}_b{batch:07d}.pt"

    def _save(self) -> None:
        """Rank 0 writes the checkpoint; under DDP every other rank writes its own buffers and RNG beside it."""
        keep = self.cfg.keep_checkpoints
        if not self.procs.is_main:
            params = {name for name, _ in self.method.named_parameters()}
            buffers = {k: v for k, v in self.method.state_dict().items() if k not in params}
            atomic_torch_save({"buffers": buffers, "rng": rng_state(self.procs.device)},
                              self._rank_file(self.epoch, self.batch))
            for old in sorted(self._rank_file(0, 0).parent.glob(f"rank{self.procs.rank}_e*_b*.pt"))[:-keep]:
                old.unlink(missing_ok=True)
            return
        state = {
            "epoch": self.epoch, "batch_in_epoch": self.batch, "steps_per_epoch": self.steps_per_epoch,
            "step": self.epoch * self.steps_per_epoch + self.batch,
            "method": self.cfg.method, "arch": self.cfg.arch, "config": self.cfg.to_dict(),
            "world_size": self.procs.world_size,
            "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            # The loader's position is (epoch, batch_in_epoch): its order is the sampler's seeded
            # permutation of that epoch and each sample's augmentation seed is (seed, epoch, index).
            "rng": dict(rng_state(self.procs.device),
                        loader={"epoch": self.epoch, "batch_in_epoch": self.batch, "seed": self.cfg.seed}),
        }
        path = self.out / CHECKPOINT_DIR / checkpoint_name(self.epoch, self.batch)
        atomic_torch_save(state, path)
        self.last_checkpoint = path
        for old in list_checkpoints(self.out)[:-keep]:
            old.unlink(missing_ok=True)

    # -- one step ----------------------------------------------------------------------------------
    def _step(self, views: list[torch.Tensor], index: torch.Tensor, lr: float) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        views = [v.to(self.procs.device, non_blocking=True, memory_format=fmt) for v in views]
        index = index.to(self.procs.device, non_blocking=True)

        def backward(loss: torch.Tensor, **kwargs) -> None:
            with torch.autocast(self.procs.device.type, enabled=False):
                self.scaler.scale(loss).backward(**kwargs)

        self.optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            logs = self.method.training_step(views, index, backward)
        logs = {k: float(v) for k, v in logs.items()}
        self._stop_if_diverged(logs, lr)
        # DeepCluster's first epoch only fills its memory bank: no gradients, nothing to step (and
        # GradScaler refuses to step an optimizer that saw no gradients).
        if any(p.grad is not None for group in self.optimizer.param_groups for p in group["params"]):
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.method.on_step_end()
        return logs

    def _stop_if_diverged(self, logs: dict, lr: float) -> None:
        bad = [k for k, v in logs.items() if k.startswith("loss") and not math.isfinite(v)]
        flag = torch.tensor([float(bool(bad))], device=self.procs.device)
        if self.procs.world_size > 1:  # every rank must stop together, or the others hang
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() == 0:
            return
        step = self.epoch * self.steps_per_epoch + self.batch + 1
        where = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                 else "no checkpoint was written yet")
        values = ", ".join(f"{k}={logs[k]}" for k in bad) if bad else "on another process"
        raise TrainingDivergedError(
            f"loss is not finite ({values}) at epoch {self.epoch + 1}, step {step}, lr {lr:.4g}; "
            f"training stopped before the optimizer step, {where}",
            "lower the learning rate (--set lr=...), lengthen warm-up (--set warmup_epochs=...) or turn "
            "amp off (--set amp=false), then continue with --resume auto")

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, procs, main = self.cfg, self.procs, self.procs.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in (self.out / CHECKPOINT_DIR).glob(".*.tmp"):  # left by a write that was killed
                stale.unlink(missing_ok=True)
            save_config(cfg, self.out / "config.yaml")
            log.info("%s on %s: %d images from %s, %d process(es) x batch %d, %d steps/epoch, device %s%s",
                     cfg.method, cfg.arch, len(self.data), self.data_root, procs.world_size, self.per_rank,
                     self.steps_per_epoch, procs.device,
                     f" ({torch.get_num_threads()} threads)" if procs.device.type == "cpu" else "")
            for note in self.notes:
                log.info("adapted to the data: %s", note)
        loader_rng = torch.Generator().manual_seed(cfg.seed)  # DataLoader draws worker seeds here, not globally
        loader = DataLoader(self.data, batch_size=self.per_rank, sampler=self.sampler, num_workers=cfg.workers,
                            collate_fn=_collate(), drop_last=True, pin_memory=self.cuda, generator=loader_rng)
        runlog = RunLog(self.out, enabled=main, tensorboard=cfg.tensorboard, resume_step=self.resumed_step)
        logs, bad_total, bad_paths, t0 = {}, 0, [], time.perf_counter()
        try:
            while self.epoch < cfg.epochs:
                logs, bad, count = self._epoch(loader, runlog, t0, logs)
                bad_total += count
                bad_paths += bad
        finally:
            runlog.close()
        if main and bad_paths:
            atomic_write_text(self.out / "bad_images.txt", "\n".join(bad_paths) + "\n")
        final = dict(logs, steps=self.epoch * self.steps_per_epoch, epochs=cfg.epochs, bad_images=bad_total,
                     notes=list(self.notes), wall_time_s=time.perf_counter() - t0)
        zoo_dir = self._publish(final) if main and cfg.publish else None
        if procs.world_size > 1:
            dist.barrier()
        return TrainResult(self.out, zoo_dir, final)

    def _epoch(self, loader: DataLoader, runlog: RunLog, t0: float, logs: dict) -> tuple[dict, list[str], int]:
        """Train from the current position to the epoch's end; returns (last logs, bad paths here, bad count all)."""
        cfg, main = self.cfg, self.procs.is_main
        self.data.set_epoch(self.epoch)
        self.sampler.start_at(self.epoch, self.batch * self.per_rank)
        if self.batch == 0:
            self.method.on_epoch_start(self.epoch)
        self.method.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=self.steps_per_epoch, initial=self.batch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (main and cfg.progress), dynamic_ncols=True, leave=False)
        bad, seen, tick = [], 0, time.perf_counter()
        for views, _targets, index, bad_here in loader:
            bad += [str(p) for p in bad_here]
            step = self.epoch * self.steps_per_epoch + self.batch
            lr = learning_rate(cfg, step, self.steps_per_epoch)
            views, index = self._even_out(views, index)
            if index is not None:
                logs = self._step(views, index, lr)
                seen += len(index) * self.procs.world_size
            self.batch += 1
            bar.update(1)
            if (step + 1) % cfg.log_every_steps == 0 and logs:
                now = time.perf_counter()
                runlog.row(step + 1, dict(logs, step=step + 1, epoch=self.epoch + 1, lr=lr,
                                          img_per_s=seen / max(now - tick, 1e-9), time_s=now - t0))
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.3g}")
                seen, tick = 0, now
            if (cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0
                    and self.batch < self.steps_per_epoch):
                self._save()
        bar.close()
        count = self._report_bad_images(bad)
        self.epoch, self.batch = self.epoch + 1, 0
        self._save()
        return logs, bad, count

    def _even_out(self, views, index: torch.Tensor):
        """A batch thinned by unreadable images: skip it when (nearly) empty; under DDP refill it.

        DDP and MoCo's cross-process shuffle need the same batch size on every process, so a short
        batch is topped up by repeating its first images; a batch empty on any process is skipped by all.
        """
        good = len(index)
        if self.procs.world_size > 1:
            fewest = torch.tensor([good], device=self.procs.device)
            dist.all_reduce(fewest, op=dist.ReduceOp.MIN)
            if fewest.item() == 0:
                return None, None
            if good < self.per_rank:
                repeat = torch.arange(self.per_rank) % good
                return [v[repeat] for v in views], index[repeat]
            return views, index
        return (views, index) if good >= 2 else (None, None)

    def _report_bad_images(self, bad: list[str]) -> int:
        """Log the epoch's unreadable images (counted over all processes); returns the count."""
        count = torch.tensor([len(bad)], device=self.procs.device)
        if self.procs.world_size > 1:
            dist.all_reduce(count)
        if count.item() and self.procs.is_main:
            shown = "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
            log.warning("epoch %d: skipped %d unreadable image(s)%s", self.epoch + 1, int(count.item()),
                        f": {shown}" if bad else "")
        return int(count.item())

    def _publish(self, final: dict) -> Path:
        from hexa_zoo.publish import publish

        cfg = self.cfg
        trunk = _unwrap(self.method.trunk)
        weights = {k: v.detach().cpu().contiguous() for k, v in trunk.state_dict().items()}
        name = zoo_model_name(cfg.method, cfg.arch)
        card = {
            "description": cfg.description or (f"{cfg.method} pre-training of {cfg.arch} for {cfg.epochs} epoch(s) "
                                               f"on {cfg.data}, global batch {cfg.batch_size}."),
            "recipe": cfg.to_dict(),
            "data": f"{cfg.data} ({len(self.data)} images from {self.data_root})",
            "metrics": {"final_pretrain_loss": final.get("loss")},
        }
        zoo_dir = publish(weights, name, tag=cfg.resolved_tag(), zoo=Path(cfg.zoo) if cfg.zoo else None, card=card)
        log.info("published %s.%s to %s", name, cfg.resolved_tag(), zoo_dir)
        return zoo_dir


def _collate():
    from hexa_zoo.data import collate_skipping_bad

    return collate_skipping_bad
