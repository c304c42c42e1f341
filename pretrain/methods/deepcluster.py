"""DeepCluster-v2 (Caron et al. 2020, in facebookresearch/swav) and HEXA_DCluster.

DeepCluster-v2 alternates clustering and classification. An online network (a timm trunk, a projection
head Linear-BN-ReLU-Linear whose output is L2-normalised, and 3 heads of 3000 prototypes) embeds every
crop of a multi-crop batch (2 global crops and several small ones). A per-rank memory bank keeps the
embeddings of crops 0 and 1 of every image from the last epoch. At the start of each epoch spherical
k-means (pretrain/methods/kmeans.py, 10 iterations, distributed) clusters the bank once per head; the centroids
are copied into that head's prototypes and each image gets a hard cluster assignment. During the epoch
every crop of an image is trained to predict its assignment: the loss is the cross-entropy of the
prototype scores / T (T = 0.1) against the assignment, averaged over heads. The prototypes are frozen
(gradients dropped) for the first iterations, as swav does (its 800-epoch script: for all of them).

swav fills the memory bank with a forward pass over the data before training (`init_memory`); here the
first epoch does that pass: with no assignments yet, `clean_step` only fills the bank and has no loss.

As a pseudo-label method (pretrain/methods/method.py) the targets of a batch are its images' assignments; a
hard view of crop 0 predicts them too, and a CutMix view lambda * onehot(a_i) + (1 - lambda) *
onehot(a_perm(i)).

State dict keys mirror swav's: `trunk.*` (timm keys), `projection_head.{0,1,3}.*`,
`prototypes.prototypes{h}.weight`; plus the memory bank, assignments and counters as buffers; with
`hard_views.aux_bn`, also the hard views' BN twins `aux_bn.twins.*` (pretrain/methods/aux_bn.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError

from .hard_views import HardViewConfig
from .kmeans import cluster_memory
from .losses import IGNORE_INDEX, mixed_targets, prototype_cross_entropy
from .method import MultiCropNetwork, PseudoLabelMethod, create_trunk, frozen_steps, projection_head, trunk_output_size
from ..processes import distributed


@dataclass(frozen=True)
class DeepClusterConfig:
    """DeepCluster-v2's constants (swav's deepclusterv2 scripts)."""

    feat_dim: int = 128                                   # projection output size
    hidden_mlp: int = 2048                                # projection hidden size
    nmb_prototypes: tuple[int, ...] = (3000, 3000, 3000)  # prototypes per head
    temperature: float = 0.1
    kmeans_iters: int = 10
    crops_for_assign: tuple[int, ...] = (0, 1)            # crops kept in the memory bank
    freeze_prototypes_epochs: float = 958.5               # swav's 300000 iterations at 313 per epoch: the whole run
    sync_bn: bool = True                                  # SyncBN under DDP on GPUs (swav); CPU/gloo keeps BN
    multicrop = True                                      # not a field: what the method needs from the data

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
            (self.freeze_prototypes_epochs >= 0, "deepcluster.freeze_prototypes_epochs must be >= 0",
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


class DeepClusterV2(PseudoLabelMethod):
    """DeepCluster-v2 / HEXA_DCluster (see the module docstring)."""

    def __init__(self, cfg: DeepClusterConfig, hard_views: HardViewConfig, arch: str, dataset_size: int,
                 steps_per_epoch: int = 1):
        super().__init__(hard_views, steps_per_epoch)
        self.cfg, self.arch = cfg, arch
        self.sync_bn = cfg.sync_bn
        self.nmb_prototypes = tuple(cfg.nmb_prototypes)
        self.trunk = create_trunk(arch)
        self.projection_head = projection_head(trunk_output_size(self.trunk), cfg.hidden_mlp, cfg.feat_dim,
                                               batch_norm=True)
        self.prototypes = MultiPrototypes(cfg.feat_dim, self.nmb_prototypes)
        self._allocate_memory(dataset_size, torch.device("cpu"))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # training steps taken
        self.wiring.network = MultiCropNetwork(self.trunk, self.projection_head, self.prototypes)
        aux = self.make_aux_bn([self.trunk, self.projection_head])
        if aux is not None:  # in the state dict as swav-side `aux_bn.*`, and inside the network for DDP
            self.aux_bn = self.network.aux_bn = aux

    @classmethod
    def adapt(cls, section: DeepClusterConfig, *, dataset_size: int, batch_size: int, world_size: int,
              steps_per_epoch: int) -> tuple[DeepClusterConfig, list[str]]:
        """Fewer prototypes than images in rank 0's bank (swav's k-means asserts it)."""
        per_rank, local_batch = dataset_size // world_size, max(1, batch_size // world_size)
        in_bank = (per_rank // local_batch) * local_batch or per_rank  # the last partial batch may be dropped
        notes, sizes = [], []
        for h, k in enumerate(section.nmb_prototypes):
            if k > in_bank:
                notes.append(f"deepcluster.nmb_prototypes[{h}] = {k} is more than the {in_bank} images rank 0 "
                             f"clusters ({dataset_size} images, {world_size} process(es), global batch {batch_size}): "
                             f"using {in_bank} prototypes")
                k = in_bank
            sizes.append(max(2, k))
        return dataclasses.replace(section, nmb_prototypes=tuple(sizes)), notes

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

    @property
    def network(self) -> nn.Module:
        """trunk, projection head and prototypes as one network (its parts registered here under their own names)."""
        return self.wiring.network

    # ---- the pseudo-label interface -------------------------------------------------------------
    def clean_step(self, views: list[Tensor], index: Tensor) -> tuple[Tensor | None, list[Tensor], dict]:
        """Cross-entropy of every crop's scores against its image's assignments; the bank gets crops 0 and 1."""
        if int(self.assignments_epoch) < 0:  # first epoch: swav's init_memory pass, nothing to learn from yet
            with torch.no_grad():
                emb, _ = self.network([self.normalize(views[c]) for c in self.cfg.crops_for_assign])
            self._write_memory(emb, index, rows=range(len(self.cfg.crops_for_assign)))
            return None, None, {"filling_memory": 1.0}
        targets = [a[index.to(a.device)] for a in self.assignments]
        emb, scores = self.net()([self.normalize(v) for v in views])
        loss = prototype_cross_entropy(scores, [t.repeat(len(views)) for t in targets], self.cfg.temperature)
        self._write_memory(emb.detach(), index, rows=self.cfg.crops_for_assign)
        batch = index.shape[0]
        with torch.no_grad():
            anchor = prototype_cross_entropy([s[:batch] for s in scores], targets, self.cfg.temperature)
        return loss, targets, {"assigned": (targets[0] != IGNORE_INDEX).float().mean().item() * 100,
                               "loss_anchor": anchor.item()}

    def view_loss(self, x: Tensor, targets: list[Tensor], wrapped: bool = True) -> Tensor:
        return prototype_cross_entropy(self.net(wrapped)([self.normalize(x)])[1], targets, self.cfg.temperature)

    def mix_targets(self, targets: list[Tensor], perm: Tensor, lam: float) -> list[Tensor]:
        return [mixed_targets(t, t[perm], lam, k) for t, k in zip(targets, self.nmb_prototypes)]

    def after_step(self, targets: list[Tensor]) -> None:
        if int(self.iteration) < frozen_steps(self.cfg.freeze_prototypes_epochs, self.steps_per_epoch):
            for p in self.prototypes.parameters():  # swav: "cancel some gradients"
                p.grad = None
        self.iteration += 1

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

    @torch.no_grad()
    def _write_memory(self, emb: Tensor, index: Tensor, rows: Sequence[int]) -> None:
        """Store the embeddings of the crops in `crops_for_assign`; crop i's are the `rows[i]`-th block of `emb`."""
        batch = index.shape[0]
        slots = (int(self.memory_ptr) + torch.arange(batch, device=self.memory_index.device)) % self.memory_index.shape[0]
        self.memory_index[slots] = index.to(self.memory_index.device)
        for i, position in enumerate(rows):
            self.memory_embeddings[i, slots] = emb[position * batch:(position + 1) * batch].to(self.memory_embeddings.dtype)
        self.memory_ptr.fill_((int(self.memory_ptr) + batch) % self.memory_index.shape[0])

