"""DeepCluster-v2 (Caron et al. 2020, in facebookresearch/swav) and HEXA_DCluster.

DeepCluster-v2 alternates clustering and classification. An online network (a timm trunk, a projection
head Linear-BN-ReLU-Linear whose output is L2-normalised, and 3 heads of 3000 prototypes) embeds every
crop of a multi-crop batch (2 global crops and several small ones). A per-rank memory bank keeps the
embeddings of crops 0 and 1 of every image from the last epoch. At the start of each epoch spherical
k-means (pretrain/kmeans.py, 10 iterations, distributed) clusters the bank once per head; the centroids
are copied into that head's prototypes and each image gets a hard cluster assignment. During the epoch
every crop of an image is trained to predict its assignment: the loss is the cross-entropy of the
prototype scores / T (T = 0.1) against the assignment, averaged over heads. The prototypes are frozen
(gradients dropped) for the first iterations, as swav does.

swav fills the memory bank with a forward pass over the data before training (`init_memory`); here the
first epoch does that pass: with no assignments yet, `training_step` only fills the bank and calls no
backward (the trainer then has nothing to step).

HEXA_DCluster adds two harder views of crop 0 (pretrain/hard_views.py): an adversarial view pushed in
a small L-infinity ball to raise its cross-entropy against its own assignment, and a CutMix view with
the mixed one-hot target lambda * onehot(a_i) + (1 - lambda) * onehot(a_perm(i)). Loss:
L_clean + w_adv L_adv + w_cutmix L_cutmix.

State dict keys mirror swav's: `trunk.*` (timm keys), `projection_head.{0,1,3}.*`,
`prototypes.prototypes{h}.weight`; plus the memory bank, assignments and counters as buffers; with
`hard_views.aux_bn`, also the hard views' BN twins `aux_bn.twins.*` (pretrain/aux_bn.py).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError

from .aux_bn import AuxBatchNorm, hard_view_norm, idle_main_term
from .hard_views import HardViewConfig, adversarial_view, cutmix
from .kmeans import cluster_memory
from .losses import IGNORE_INDEX, mixed_targets, prototype_cross_entropy
from .processes import distributed
from .moco import create_trunk, trunk_output_size


@dataclass(frozen=True)
class DeepClusterConfig:
    """DeepCluster-v2's constants (swav's deepclusterv2 scripts) and the HEXA views."""

    feat_dim: int = 128                                   # projection output size
    hidden_mlp: int = 2048                                # projection hidden size
    nmb_prototypes: tuple[int, ...] = (3000, 3000, 3000)  # prototypes per head
    temperature: float = 0.1
    kmeans_iters: int = 10
    crops_for_assign: tuple[int, ...] = (0, 1)            # crops kept in the memory bank
    freeze_prototypes_niters: int = 300000                # scale to the run's length (e.g. ~5% of its steps)
    sync_bn: bool = True                                  # SyncBN under DDP on GPUs (swav); CPU/gloo keeps BN
    hard_views: HardViewConfig = field(default_factory=HardViewConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.feat_dim >= 1 and self.hidden_mlp >= 1, "deepcluster.feat_dim and hidden_mlp must be >= 1",
             "use feat_dim=128, hidden_mlp=2048"),
            (len(self.nmb_prototypes) >= 1 and min(self.nmb_prototypes) >= 2,
             f"deepcluster.nmb_prototypes must list at least one head of >= 2 prototypes, got {self.nmb_prototypes}",
             "use e.g. nmb_prototypes=[3000,3000,3000]"),
            (self.temperature > 0, f"deepcluster.temperature must be positive, got {self.temperature}",
             "use temperature=0.1"),
            (self.kmeans_iters >= 1, f"deepcluster.kmeans_iters must be >= 1, got {self.kmeans_iters}",
             "use kmeans_iters=10"),
            (len(self.crops_for_assign) >= 1 and min(self.crops_for_assign) >= 0,
             f"deepcluster.crops_for_assign must list crop numbers, got {self.crops_for_assign}", "use [0,1]"),
            (self.freeze_prototypes_niters >= 0, "deepcluster.freeze_prototypes_niters must be >= 0",
             "use 0 to train the prototypes from the start"),
        ]
        for ok, message, fix in checks:
            if not ok:
                raise ConfigError(message, fix)


class MultiPrototypes(nn.Module):
    """swav's prototype heads: `prototypes{h}` = Linear(feat_dim, K_h, bias=False)."""

    def __init__(self, feat_dim: int, nmb_prototypes: Sequence[int]):
        super().__init__()
        self.nmb_heads = len(nmb_prototypes)
        for h, k in enumerate(nmb_prototypes):
            self.add_module(f"prototypes{h}", nn.Linear(feat_dim, k, bias=False))

    def head(self, h: int) -> nn.Linear:
        return getattr(self, f"prototypes{h}")

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.head(h)(x) for h in range(self.nmb_heads)]


class _Online(nn.Module):
    """The trained network as one module (what DDP wraps): crops -> (embeddings, scores per head)."""

    def __init__(self, trunk: nn.Module, projection_head: nn.Module, prototypes: MultiPrototypes,
                 aux_bn: AuxBatchNorm | None = None):
        super().__init__()
        self.trunk, self.projection_head, self.prototypes = trunk, projection_head, prototypes
        if aux_bn is not None:  # registered here so DDP averages the twins' gradients too
            self.aux_bn = aux_bn

    def forward(self, crops: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        # swav's multi-resolution forward: one trunk pass per run of same-sized crops, one head pass for all
        features, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            features.append(self.trunk(torch.cat(crops[start:end])))
            start = end
        emb = F.normalize(self.projection_head(torch.cat(features)), dim=1)
        return emb, self.prototypes(emb)


class DeepClusterV2(nn.Module):
    """DeepCluster-v2 / HEXA_DCluster with the trainer interface of pretrain/ (see the module docstring)."""

    def __init__(self, cfg: DeepClusterConfig, arch: str, dataset_size: int):
        super().__init__()
        self.cfg, self.arch, self.dataset_size = cfg, arch, dataset_size
        self.nmb_prototypes = tuple(cfg.nmb_prototypes)
        self.trunk = create_trunk(arch)
        features = trunk_output_size(self.trunk)
        self.projection_head = nn.Sequential(
            nn.Linear(features, cfg.hidden_mlp), nn.BatchNorm1d(cfg.hidden_mlp), nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden_mlp, cfg.feat_dim))
        self.prototypes = MultiPrototypes(cfg.feat_dim, self.nmb_prototypes)
        self._allocate_memory(dataset_size, torch.device("cpu"))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # training steps taken
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.aux_bn = (AuxBatchNorm(nn.ModuleList([self.trunk, self.projection_head]))
                       if cfg.hard_views.use_aux_bn else None)
        self.__dict__["_online"] = _Online(self.trunk, self.projection_head, self.prototypes, self.aux_bn)
        self.__dict__["_ddp"] = None
        self._trained = False

    # ---- the trainer interface ------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] -> ImageNet-normalised input."""
        return (x - self.mean) / self.std

    def param_groups(self) -> list[dict]:
        """One group with every trained parameter (swav applies weight decay to all of them)."""
        return [{"params": [p for p in self._online.parameters() if p.requires_grad], "name": "online"}]

    def adapt_to_data(self, dataset_size: int, batch_size: int) -> list[str]:
        """Fewer prototypes than images in rank 0's bank (swav's k-means asserts it). `batch_size` is global.

        Call after init_process_group (the bank is per rank) and before building the optimiser.
        """
        if dataset_size != self.dataset_size:  # a fresh method: nothing in the bank to keep
            self._allocate_memory(dataset_size, self.memory_embeddings.device)
        world = dist.get_world_size() if distributed() else 1
        per_rank, local_batch = dataset_size // world, max(1, batch_size // world)
        in_bank = (per_rank // local_batch) * local_batch or per_rank  # the last partial batch may be dropped
        notes, sizes = [], []
        for h, k in enumerate(self.nmb_prototypes):
            if k > in_bank:
                notes.append(f"deepcluster.nmb_prototypes[{h}] = {k} is more than the {in_bank} images rank 0 "
                             f"clusters ({dataset_size} images, {world} process(es), global batch {batch_size}): "
                             f"using {in_bank} prototypes")
                k = in_bank
            sizes.append(max(2, k))
        if tuple(sizes) != self.nmb_prototypes:
            self.nmb_prototypes = tuple(sizes)
            device = self.memory_embeddings.device
            self.prototypes = MultiPrototypes(self.cfg.feat_dim, sizes).to(device)
            self.assignments = torch.full((len(sizes), self.dataset_size), IGNORE_INDEX, dtype=torch.long, device=device)
            self.__dict__["_online"] = _Online(self.trunk, self.projection_head, self.prototypes, self.aux_bn)
        return notes

    def setup_distributed(self) -> list[str]:
        """SyncBN (on GPUs, as swav) and DDP over the online network. Call after moving to the device."""
        notes = []
        on_gpu = self.memory_embeddings.is_cuda
        if self.cfg.sync_bn and on_gpu:
            nn.SyncBatchNorm.convert_sync_batchnorm(self.trunk)
            nn.SyncBatchNorm.convert_sync_batchnorm(self.projection_head)
        elif self.cfg.sync_bn:
            notes.append("deepcluster.sync_bn: SyncBatchNorm needs GPUs; on CPU each process keeps its own BN")
            warnings.warn(notes[-1])
        device_ids = [self.memory_embeddings.device.index] if on_gpu else None
        self.__dict__["_ddp"] = nn.parallel.DistributedDataParallel(self._online, device_ids=device_ids)
        return notes

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        """k-means on last epoch's bank -> prototypes and assignments; then the bank is rewritten this epoch."""
        if int(self.memory_epoch) == epoch:  # resumed inside this epoch: its clustering is already restored
            return
        filled = (self.memory_index >= 0).any().float()
        if distributed():
            dist.all_reduce(filled, op=dist.ReduceOp.MAX)  # every rank must join the k-means collectives
        if int(self.memory_epoch) >= 0 and bool(filled):
            centroids, assignments = cluster_memory(self.memory_embeddings, self.memory_index,
                                                    self.nmb_prototypes, self.dataset_size, self.cfg.kmeans_iters)
            for h, c in enumerate(centroids):
                self.prototypes.head(h).weight.copy_(c)
            self.assignments.copy_(assignments)
            self.assignments_epoch.fill_(epoch)
        self.memory_epoch.fill_(epoch)
        self.memory_ptr.zero_()

    def on_step_end(self) -> None:
        """Count training steps (the prototype freeze is measured in them)."""
        if self._trained:
            self.iteration += 1

    def training_step(self, views: list[Tensor], index: Tensor,
                      backward: Callable[[Tensor], None]) -> dict[str, float]:
        """Losses of one multi-crop batch: backward on each part (clean, adversarial, CutMix); update the bank."""
        hv, temperature = self.cfg.hard_views, self.cfg.temperature
        self._trained = int(self.assignments_epoch) >= 0
        if not self._trained:  # first epoch: swav's init_memory pass, nothing to learn from yet
            with torch.no_grad():
                emb, _ = self._online([self.normalize(views[c]) for c in self.cfg.crops_for_assign])
            self._write_memory(emb, index, rows=range(len(self.cfg.crops_for_assign)))
            return {"loss": 0.0, "loss_clean": 0.0, "filling_memory": 1.0}

        views = list(views)
        targets = [a[index.to(a.device)] for a in self.assignments]
        parts = 1 + hv.use_adversarial + hv.use_cutmix
        free = hv.use_adversarial and hv.free
        if free:
            views[0] = views[0].detach().clone().requires_grad_(True)

        with self._sync(last=parts == 1):
            emb, scores = self._forward([self.normalize(v) for v in views])
            loss_clean = prototype_cross_entropy(scores, [t.repeat(len(views)) for t in targets], temperature)
            backward(loss_clean)
        self._write_memory(emb.detach(), index, rows=self.cfg.crops_for_assign)
        logs = {"loss_clean": loss_clean.item(),
                "assigned": (targets[0] != IGNORE_INDEX).float().mean().item() * 100}
        total = logs["loss_clean"]

        if hv.use_adversarial:
            def attack_loss(x: Tensor) -> Tensor:  # unwrapped network: attack forwards bypass DDP
                return prototype_cross_entropy(self._online([self.normalize(x)])[1], targets, temperature)

            with hard_view_norm(self.aux_bn), self._sync(last=not hv.use_cutmix):
                x_adv = adversarial_view(views[0], attack_loss, hv, input_grad=views[0].grad if free else None,
                                         model=self._online)
                loss_adv = prototype_cross_entropy(self._forward([self.normalize(x_adv)])[1], targets, temperature)
                backward(hv.w_adv * loss_adv + idle_main_term(self.aux_bn))
            logs["loss_adv"] = loss_adv.item()
            total += hv.w_adv * logs["loss_adv"]

        if hv.use_cutmix:
            x_mix, perm, lam = cutmix(views[0].detach(), hv.cutmix_alpha)
            soft = [mixed_targets(t, t[perm], lam, k) for t, k in zip(targets, self.nmb_prototypes)]
            with hard_view_norm(self.aux_bn), self._sync(last=True):
                loss_cutmix = prototype_cross_entropy(self._forward([self.normalize(x_mix)])[1], soft, temperature)
                backward(hv.w_cutmix * loss_cutmix + idle_main_term(self.aux_bn))
            logs["loss_cutmix"] = loss_cutmix.item()
            logs["cutmix_lambda"] = lam
            total += hv.w_cutmix * logs["loss_cutmix"]

        if int(self.iteration) < self.cfg.freeze_prototypes_niters:
            for p in self.prototypes.parameters():  # swav: "cancel some gradients"
                p.grad = None
        return {"loss": total, **logs}

    # ---- optional: per-rank memory for multi-process resume ---------------------------------------
    def local_memory_state(self) -> dict[str, Tensor]:
        """This rank's memory bank (swav saves one `mb<rank>.pth` per rank). `state_dict()` holds only the
        bank of the rank that saves it; a multi-process resume without these files clusters rank 0's bank
        on every rank for one epoch (correct, but only 1/world of the images then get assignments)."""
        return {k: getattr(self, k).detach().clone() for k in ("memory_embeddings", "memory_index", "memory_ptr")}

    def load_local_memory_state(self, state: dict[str, Tensor]) -> None:
        """Restore this rank's memory bank saved by `local_memory_state` (after `load_state_dict`)."""
        for k, v in state.items():
            getattr(self, k).copy_(v)

    # ---- internals ------------------------------------------------------------------------------
    def _allocate_memory(self, dataset_size: int, device: torch.device) -> None:
        """Empty memory bank (per rank: the most images one rank sees in an epoch) and assignments."""
        self.dataset_size = dataset_size
        world = dist.get_world_size() if distributed() else 1
        bank = math.ceil(dataset_size / world)
        n_crops = len(self.cfg.crops_for_assign)
        self.register_buffer("memory_embeddings", torch.zeros(n_crops, bank, self.cfg.feat_dim, device=device))
        self.register_buffer("memory_index", torch.full((bank,), -1, dtype=torch.long, device=device))
        self.register_buffer("memory_ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("memory_epoch", torch.tensor(-1, device=device))  # the epoch now writing the bank
        self.register_buffer("assignments", torch.full((len(self.nmb_prototypes), dataset_size), IGNORE_INDEX,
                                                       dtype=torch.long, device=device))
        self.register_buffer("assignments_epoch", torch.tensor(-1, device=device))  # the epoch they were made for

    def _forward(self, crops: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        return (self._ddp if self._ddp is not None else self._online)(crops)

    def _sync(self, last: bool):
        """DDP all-reduces gradients only on the last backward of a step."""
        return self._ddp.no_sync() if self._ddp is not None and not last else contextlib.nullcontext()

    @torch.no_grad()
    def _write_memory(self, emb: Tensor, index: Tensor, rows: Sequence[int]) -> None:
        """Store the embeddings of the crops in `crops_for_assign`; crop i's are the `rows[i]`-th block of `emb`."""
        batch = index.shape[0]
        slots = (int(self.memory_ptr) + torch.arange(batch, device=self.memory_index.device)) % self.memory_index.shape[0]
        self.memory_index[slots] = index.to(self.memory_index.device)
        for i, position in enumerate(rows):
            self.memory_embeddings[i, slots] = emb[position * batch:(position + 1) * batch].to(self.memory_embeddings.dtype)
        self.memory_ptr.fill_((int(self.memory_ptr) + batch) % self.memory_index.shape[0])
