"""The pre-training loop: one process, or many under torchrun (DDP over GPUs and nodes).

    from pretrain.config import load_recipe
    from pretrain.loop.trainer import train
    result = train(load_recipe("hexa_moco_r18_embedded", ["epochs=2"]))

The config arrives resolved (`load_recipe` read every recipe file it needs); nothing here reads one.
What it does, in order: joins the process group if torchrun started it (`processes`); reads the
images (`--data embedded` or a folder) as seeded views (`sampling`); fits the batch and the method's
sizes to the data, saying so in one line per change (`PretrainConfig.fitted`), and builds the method
(`config.build_method`: the family's class from `config.METHOD_CLASSES`); trains with the method's `training_step` (SGD or
LARC, warm-up then cosine: `optim`), on CUDA with `augment.pipeline=auto` timing both augmentation
paths over the first steps and keeping the faster (`pipeline_choice`); checkpoints atomically every
`checkpoint_every_steps` steps and at each epoch end (`checkpoint`); logs CSV rows and TensorBoard
events (`runlog`); finally publishes the trunk to the local zoo (`publishing`).

Exact resume: the data order and every sample's augmentation are seeded by position (`sampling`), and
a checkpoint records the position inside the epoch and every RNG state (`checkpoint`). So on CPU, in
one process, a run killed at any point and resumed with `--resume auto` gives the same losses and
weights as one that never stopped.

Files in `out`: config.yaml (the resolved recipe), log.csv and tb/ (loss, each view's loss, lr, img/s,
data_wait, augment_ms: the device time per step spent finishing the views), checkpoints/ (see
`checkpoint`; multi-node: put `out` on a filesystem every node sees) and bad_images.txt. Unreadable
images are dropped from their batch, counted per epoch and listed there; under DDP a thinned batch is
topped up by repeating its own images, since every process must hold the same batch.

Published name: `<method>_r18` / `<method>_r50` for timm's resnet18 / resnet50 (the registered names,
loadable by `timm.create_model(name, pretrained=True)` once hexa_zoo is imported); any other arch
publishes as `<method>_<arch>` (dots and slashes as underscores), a zoo folder loadable with
`hexa_zoo.load_trunk(folder)` or timm's `local-dir:` but not by name, since only registered names resolve.
The tag says what ran (`PretrainConfig.resolved_tag`): "embedded", or "<data>_ep<epochs>" for a folder,
unless `tag` names one; `TrainResult.load_hint` is the line that loads it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from cluster.preemption import listening, stop_if_asked
from hexa_zoo.config import save_config
from hexa_zoo.errors import ConfigError, HexaError
from hexa_zoo.fileio import atomic_write_text
from hexa_zoo.seeding import seed_everything

from ..config import PretrainConfig, build_method
from ..data.augment import resolve_pipeline
from ..data.device_augment import finish_views
from ..data.pipeline_choice import DeviceTime, PipelineChoice, broadcast_from_rank0, synchronized_clock
from ..data.sampling import (ResumableSampler, build_dataset, even_out, fit_batch, make_loader, require_a_batch,
                             sample_seed, set_pipeline)
from ..methods.hard_views import attack_passes, free_step_note
from ..methods.method import compile_trunks
from ..processes import Processes, cpu_threads, init_processes
from .checkpoint import (choose_checkpoint, load_checkpoint, load_rank_state, remove_unfinished_writes,
                         save_checkpoint, save_rank_state, set_rng_state)
from .divergence import stop_if_diverged
from .epoch_tally import EpochTally, epoch_summary, report_bad_images
from .monitor import KnnMonitor, monitor_splits
from .optim import learning_rate, make_optimizer
from .publishing import check_publish_target, load_hint, publish_trunk
from .runlog import DataWait, RunLog

log = logging.getLogger("pretrain")


@dataclass
class TrainResult:
    out_dir: Path
    zoo_dir: Path | None          # the published zoo folder (None when publish=false)
    final_logs: dict              # last step's logs plus run totals (steps, bad_images, notes, ...)
    model: str | None = None      # the published `name.tag`
    load_hint: str | None = None  # the line that loads it


def autocast_dtype(name: str) -> torch.dtype:
    """`amp_dtype` as a torch dtype; ConfigError for anything but float16 or bfloat16."""
    if name not in ("float16", "bfloat16"):
        raise ConfigError(f"amp_dtype must be float16 or bfloat16, got {name!r}", "set amp_dtype=float16 or bfloat16")
    return getattr(torch, name)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def train(cfg: PretrainConfig, *, resume: str | None = None,
          method_factory: Callable[[PretrainConfig, int, int], nn.Module] | None = None) -> TrainResult:
    """Pre-train `cfg.method` on `cfg.data`, write checkpoints and logs into `cfg.out`, publish the trunk.

    resume: None (a fresh run; refuses an `out` that already holds checkpoints), "auto" (the newest
    checkpoint in `out/checkpoints`, or a fresh start when there is none) or a checkpoint path.
    method_factory: builds the method from (cfg, dataset_size, steps_per_epoch); defaults to `build_method`.
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
                 method_factory: Callable[[PretrainConfig, int, int], nn.Module]):
        self.procs, self.out = procs, Path(cfg.out)
        self.cuda = procs.device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # crop sizes are fixed: let cuDNN pick its fastest kernels, as MoCo
        log.setLevel(logging.INFO if procs.is_main else logging.WARNING)
        self.overwrite = check_publish_target(cfg, self.out, resume)
        seed_everything(cfg.seed)  # same seed on every rank: identical initial weights
        self.data, self.data_root, notes = build_dataset(cfg, on_cuda=self.cuda)
        per_rank, batch_notes = fit_batch(cfg.batch_size, len(self.data), procs.world_size)
        notes += batch_notes
        require_a_batch(self.data, per_rank * procs.world_size, self.data_root)
        if per_rank * procs.world_size != cfg.batch_size:
            cfg = dataclasses.replace(cfg, batch_size=per_rank * procs.world_size)  # lr scales with it
        self.sampler = ResumableSampler(self.data, procs.world_size, procs.rank, cfg.seed)
        self.steps_per_epoch = self.sampler.num_samples // per_rank
        cfg, method_notes = cfg.fitted(len(self.data), procs.world_size, self.steps_per_epoch)
        self.cfg, self.per_rank = cfg, per_rank
        self.method = method_factory(cfg, len(self.data), self.steps_per_epoch)
        free_note = free_step_note(cfg.hard_views, self.method)
        self.notes = notes + method_notes + ([free_note] if free_note else [])
        self.monitor = self._make_monitor() if procs.is_main else None
        self.method.to(procs.device)
        self.channels_last = self.cuda and cfg.channels_last
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        # before DDP wraps the network
        self.compiled = compile_trunks(self.method, cfg.compile_mode, cfg.compile_backend) if cfg.compile else ""
        if procs.distributed:
            self.method.setup_distributed()
        self.optimizer = make_optimizer(cfg, self.method.param_groups())
        self.amp_dtype = autocast_dtype(cfg.amp_dtype)
        self.amp = cfg.amp and (self.cuda or self.amp_dtype == torch.bfloat16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        # Only an attack that takes its own gradients needs the loss scale (reading it syncs the GPU).
        self.attack_needs_scale = self.scaler.is_enabled() and attack_passes(cfg.hard_views, self.method) > 0
        self.epoch, self.batch = 0, 0  # position: epoch in progress, batches of it done
        self.steps_taken = 0  # optimizer steps this process ran (a run with none must not publish)
        self.pipeline = PipelineChoice(resolve_pipeline(cfg.augment, self.cuda), cfg.augment.pipeline_trial_steps,
                                       clock=synchronized_clock(procs.device),
                                       broadcast=broadcast_from_rank0(procs.device))
        self.augment_time = DeviceTime(procs.device)  # finish_views: the device side of the augmentation
        self.last_checkpoint: Path | None = None
        self._resume(resume)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _resume(self, resume: str | None) -> None:
        path = choose_checkpoint(self.out, resume, self.procs.world_size)
        if path is None:
            seed_everything(self.cfg.seed + self.procs.rank)
            self.resumed_step = None
            return
        ckpt = load_checkpoint(path, self.cfg, self.steps_per_epoch)
        self.epoch, self.batch = ckpt["epoch"], ckpt["batch_in_epoch"]
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.pipeline.load_state_dict(ckpt.get("pipeline_choice"))
        rng = ckpt["rng"]
        if not self.procs.is_main:  # rank r's own buffers (BN statistics, DeepCluster's memory bank) and RNG
            mine = load_rank_state(self.out, self.procs.rank, self.epoch, self.batch)
            if mine is not None:
                self.method.load_state_dict(mine["buffers"], strict=False)
                rng = mine["rng"]
            else:
                rng = None
                seed_everything(sample_seed(self.cfg.seed, self.epoch * self.steps_per_epoch + self.batch,
                                            self.procs.rank))
        if rng is not None:
            set_rng_state(rng, self.procs.device)
        self.last_checkpoint = path
        self.resumed_step = self.epoch * self.steps_per_epoch + self.batch
        log.info("resumed from %s (epoch %d, step %d)", path, self.epoch + 1, self.resumed_step)

    def _save(self) -> None:
        """Rank 0 writes the checkpoint; under DDP every other rank writes its own buffers and RNG beside it."""
        if not self.procs.is_main:
            save_rank_state(self.out, self.procs.rank, epoch=self.epoch, batch=self.batch, method=self.method,
                            device=self.procs.device, keep=self.cfg.keep_checkpoints)
            return
        self.last_checkpoint = save_checkpoint(
            self.out, self.cfg, epoch=self.epoch, batch=self.batch, steps_per_epoch=self.steps_per_epoch,
            world_size=self.procs.world_size, method=self.method, optimizer=self.optimizer, scaler=self.scaler,
            device=self.procs.device, pipeline_choice=self.pipeline.state_dict())

    # -- one step ----------------------------------------------------------------------------------
    def _step(self, views: list[torch.Tensor], index: torch.Tensor, lr: float) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with self.augment_time:  # uint8 -> float [0, 1]; pipeline gpu: colour, grayscale and blur here
            views = finish_views(views, self.procs.device, fmt)
        index = index.to(self.procs.device, non_blocking=True)

        def backward(loss: torch.Tensor, **kwargs) -> None:
            with torch.autocast(self.procs.device.type, enabled=False):
                self.scaler.scale(loss).backward(**kwargs)

        loss_scale = self.scaler.get_scale() if self.attack_needs_scale else 1.0  # the attack's own gradients
        self.optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(self.procs.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        with autocast:
            logs = self.method.training_step(views, index, backward, loss_scale=loss_scale)
        logs = {k: float(v) for k, v in logs.items()}
        stop_if_diverged(logs, lr, self.procs, epoch=self.epoch + 1,
                         step=self.epoch * self.steps_per_epoch + self.batch + 1, last_checkpoint=self.last_checkpoint)
        # DeepCluster's first epoch only fills its memory bank: no gradients, nothing to step (and
        # GradScaler refuses to step an optimizer that saw no gradients).
        if any(p.grad is not None for group in self.optimizer.param_groups for p in group["params"]):
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.method.on_step_end()
        return logs

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, procs, main = self.cfg, self.procs, self.procs.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_unfinished_writes(self.out)
            save_config(cfg, self.out / "config.yaml")
            log.info("%s on %s: %d images from %s, %d process(es)%s x batch %d, %d steps/epoch, device %s%s%s",
                     cfg.method, cfg.arch, len(self.data), self.data_root, procs.world_size,
                     f" ({dist.get_backend()} DDP)" if procs.distributed else "", self.per_rank,
                     self.steps_per_epoch, procs.device,
                     f" ({torch.get_num_threads()} threads)" if procs.device.type == "cpu" else "",
                     f", {cfg.amp_dtype} autocast" if self.amp else "")
            if self.compiled:
                log.info("%s", self.compiled)
            for note in self.notes:
                log.info("adapted to the data: %s", note)
        loader = make_loader(self.data, self.per_rank, self.sampler, workers=cfg.workers, pin_memory=self.cuda,
                             seed=cfg.seed)
        runlog = RunLog(self.out, enabled=main, tensorboard=cfg.tensorboard, resume_step=self.resumed_step)
        logs, bad_total, bad_paths, t0 = {}, 0, [], time.perf_counter()
        try:
            with listening():  # a preemption signal: stop at the next step boundary with a checkpoint (in _train_on)
                while self.epoch < cfg.epochs:
                    logs, bad, count = self._epoch(loader, runlog, t0, logs)
                    bad_total += count
                    bad_paths += bad
        finally:
            runlog.close()
        if main and bad_paths:
            atomic_write_text(self.out / "bad_images.txt", "\n".join(bad_paths) + "\n")
        if cfg.publish and not self.steps_taken and not self.resumed_step:  # every rank: none may wait at a barrier
            raise HexaError(f"the run completed no training step (every batch of {self.data_root} was unreadable "
                            f"or skipped; see {self.out / 'bad_images.txt'}), so nothing was published",
                            "check the images with PIL, replace the broken ones, then run again")
        final = dict(logs, steps=self.epoch * self.steps_per_epoch, epochs=cfg.epochs, bad_images=bad_total,
                     notes=list(self.notes), wall_time_s=time.perf_counter() - t0)
        zoo_dir, model = (publish_trunk(cfg, _unwrap(self.method.trunk), final, images=len(self.data),
                                        data_root=self.data_root, overwrite=self.overwrite)
                          if main and cfg.publish else (None, None))
        if procs.distributed:
            dist.barrier()
        return TrainResult(self.out, zoo_dir, final, model, load_hint(model, zoo_dir) if model else None)

    def _epoch(self, loader: DataLoader, runlog: RunLog, t0: float, logs: dict) -> tuple[dict, list[str], int]:
        """Train from the current position to the epoch's end; returns (last logs, bad paths here, bad count all)."""
        cfg, main = self.cfg, self.procs.is_main
        self.data.set_epoch(self.epoch)
        if self.batch == 0:
            self.method.on_epoch_start(self.epoch)
        self.method.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=self.steps_per_epoch, initial=self.batch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                   disable=not (main and cfg.progress), dynamic_ncols=True, leave=False)
        tally = EpochTally(runlog, DataWait(), bar, t0, logs)
        while self.batch < self.steps_per_epoch:
            # Loader workers hold a copy of the dataset: a pipeline switch (auto's trial) restarts them here.
            pipeline = self.pipeline.pipeline_at(self.epoch * self.steps_per_epoch + self.batch)
            set_pipeline(self.data, pipeline)
            self.sampler.start_at(self.epoch, self.batch * self.per_rank)
            before = self.batch
            for views, _targets, index, bad_here in tally.waits.timed(loader):
                tally.bad += [str(p) for p in bad_here]
                self._train_on(views, index, tally)
                if (self.batch < self.steps_per_epoch and pipeline
                        != self.pipeline.pipeline_at(self.epoch * self.steps_per_epoch + self.batch)):
                    break
            if self.batch == before:
                break  # the loader had nothing left
        bar.close()
        if main:
            log.info("epoch %d/%d: %s", self.epoch + 1, cfg.epochs, "; ".join(filter(None, [
                epoch_summary(tally.means()), tally.waits.summary(
                    workers=cfg.workers, pipeline=self.data.base.transform.pipeline, on_cuda=self.cuda)])))
        count = report_bad_images(tally.bad, self.epoch, self.procs)
        if self.monitor is not None and ((self.epoch + 1) % cfg.monitor.every == 0 or self.epoch + 1 == cfg.epochs):
            step = (self.epoch + 1) * self.steps_per_epoch
            found = self.monitor.evaluate(_unwrap(self.method.trunk), self.method.normalize, self.procs.device)
            log.info("epoch %d/%d: kNN top-1 %.2f on the held-out split (k %d)", self.epoch + 1, cfg.epochs,
                     found["knn_top1"], cfg.monitor.k)
            runlog.row(step, dict(found, step=step, epoch=self.epoch + 1))
        self.epoch, self.batch = self.epoch + 1, 0
        self._save()
        return tally.logs, tally.bad, count

    def _train_on(self, views, index: torch.Tensor, tally: EpochTally) -> None:
        """One loader batch: the step (unless the batch is skipped), auto's trial, the log row, the checkpoint."""
        cfg = self.cfg
        step = self.epoch * self.steps_per_epoch + self.batch
        lr = learning_rate(cfg, step, self.steps_per_epoch)
        views, index = even_out(views, index, self.per_rank, self.procs.world_size, self.procs.device)
        images = 0
        if index is not None:
            images = len(index) * self.procs.world_size
            tally.count_step(self._step(views, index, lr), images)
            self.steps_taken += 1
        self.batch += 1
        undecided = self.pipeline.chosen is None
        self.pipeline.step_done(step, images)
        if undecided and self.pipeline.chosen is not None:
            self.notes.append(self.pipeline.summary())
        tally.bar.update(1)
        if (step + 1) % cfg.log_every_steps == 0 and tally.logs:
            tally.log_row(step + 1, self.epoch + 1, lr, self.augment_time.window_ms())
        if (cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0
                and self.batch < self.steps_per_epoch):
            self._save()
        if self.batch < self.steps_per_epoch:  # the epoch's end saves anyway: a request waits one more step
            stop_if_asked(self._save, step + 1, self.procs.distributed, self.procs.device)

    def _make_monitor(self) -> KnnMonitor | None:
        """The online kNN monitor when `monitor.every` asks for one and there is a held-out split."""
        cfg = self.cfg
        if not cfg.monitor.every:
            return None
        splits = monitor_splits(cfg.data, cfg.monitor)
        if splits is None:
            self.notes.append(f"monitor: {cfg.data} has no sibling val/ folder and monitor.data is empty: "
                              "the online kNN monitor is off")
            return None
        size = cfg.augment.crop_sizes[0] if cfg.method_config().multicrop else cfg.augment.image_size
        return KnnMonitor(*splits, cfg.monitor, image_size=size)
