"""MoCo-v2 (He et al. 2020; Chen et al. 2020) and HEXA_MoCo, following facebookresearch/moco's builder.py.

MoCo learns by instance discrimination with a dictionary as a queue. Two augmented views of each image
go through two encoders: the query encoder (a timm trunk plus an MLP head, trained by SGD) and the key
encoder (the same architecture, never trained: after each optimiser step its weights move a little
toward the query encoder's, k = m k + (1 - m) q with m = 0.999). The query q of an image should match
the key k of its other view rather than the K = 65536 keys of earlier batches kept in a queue; the loss
is the cross-entropy over the 1 + K logits [q.k ; q.queue] / T with the positive at index 0. After the
step the batch's keys replace the oldest ones in the queue. Keys are computed with "shuffle BN": the
key batch is permuted across GPUs (or, in one process, split into shuffled sub-batches) before the key
encoder, so BatchNorm's batch statistics cannot leak which key belongs to which query.

As a pseudo-label method (pretrain/methods/method.py): the targets of a batch are its keys with the queue
(`MocoTargets`): the pseudo-label of a query is "my own key". The clean loss is exactly `view_loss` of
the query view, so HEXA's adversarial step reuses its gradient (free). A CutMix query is scored against
[keys of the batch ; queue] with the soft target lambda on key i and 1 - lambda on key perm(i).

State dict keys: `encoder_q.trunk.*` (timm keys), `encoder_q.head.{0,2}.*` (official `fc.{0,2}`),
`encoder_k.*` likewise, `queue` (dim, K) and `queue_ptr`, as in the official checkpoint; with
`hard_views.aux_bn`, also the hard views' BN twins `encoder_q.aux_bn.twins.*` (pretrain/methods/aux_bn.py).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError

from .hard_views import HardViewConfig
from .losses import batch_queue_logits, info_nce, mixed_targets, moco_logits
from .method import PseudoLabelMethod, create_trunk, projection_head, trunk_output_size
from ..processes import distributed


@dataclass(frozen=True)
class MocoConfig:
    """MoCo-v2's constants (`--mlp --moco-t 0.2 --aug-plus --cos`)."""

    dim: int = 128                 # embedding size (moco-dim)
    queue_size: int = 65536        # K, number of negative keys (moco-k)
    momentum: float = 0.999        # key-encoder momentum m (moco-m)
    temperature: float = 0.2       # T (moco-t; 0.07 in MoCo-v1)
    mlp: bool = True               # 2-layer MLP head (MoCo-v2) instead of one linear layer (v1)
    hidden_dim: int = 0            # MLP hidden size; 0: the trunk's feature size (2048 for ResNet-50), as official
    shuffle_bn: bool = True        # shuffle BN for the key encoder
    shuffle_bn_splits: int = 2     # one process only: key BN statistics over this many shuffled sub-batches
    multicrop = False              # two views of one size (not a field: what the method needs from the data)

    def __post_init__(self) -> None:
        checks = [
            (self.dim >= 1, f"moco.dim must be >= 1, got {self.dim}", "use dim=128"),
            (self.queue_size >= 1, f"moco.queue_size must be >= 1, got {self.queue_size}", "use e.g. queue_size=4096"),
            (0.0 <= self.momentum <= 1.0, f"moco.momentum must be in [0, 1], got {self.momentum}", "use momentum=0.999"),
            (self.temperature > 0, f"moco.temperature must be positive, got {self.temperature}", "use temperature=0.2"),
            (self.hidden_dim >= 0, f"moco.hidden_dim must be >= 0, got {self.hidden_dim}", "0 means the trunk's size"),
            (self.shuffle_bn_splits >= 1, f"moco.shuffle_bn_splits must be >= 1, got {self.shuffle_bn_splits}",
             "use 2 (or 1 for no split)"),
        ]
        for ok, message, fix in checks:
            if not ok:
                raise ConfigError(message, fix)


class Encoder(nn.Module):
    """timm trunk (pooled features) followed by the projection head: MLP (v2) or one linear layer (v1)."""

    def __init__(self, arch: str, dim: int, mlp: bool, hidden_dim: int = 0):
        super().__init__()
        self.trunk = create_trunk(arch)
        features = trunk_output_size(self.trunk)
        hidden = hidden_dim or features
        self.head = projection_head(features, hidden, dim, batch_norm=False) if mlp else nn.Linear(features, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


@torch.no_grad()
def concat_all_gather(t: Tensor) -> Tensor:
    """All ranks' tensors concatenated along dim 0 (no gradient), as the official `concat_all_gather`."""
    if not distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def batch_shuffle_ddp(x: Tensor) -> tuple[Tensor, Tensor]:
    """Gather the global batch, permute it (rank 0's permutation), return this rank's slice and the inverse.

    Every rank must hold the same batch size (the trainer drops the last partial batch).
    """
    local = x.shape[0]
    gathered = concat_all_gather(x)
    world = gathered.shape[0] // local
    idx_shuffle = torch.randperm(gathered.shape[0], device=x.device)
    if distributed():
        dist.broadcast(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    rank = dist.get_rank() if distributed() else 0
    return gathered[idx_shuffle.view(world, -1)[rank]], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """Undo `batch_shuffle_ddp`: this rank's rows back in their original order."""
    local = x.shape[0]
    gathered = concat_all_gather(x)
    world = gathered.shape[0] // local
    rank = dist.get_rank() if distributed() else 0
    return gathered[idx_unshuffle.view(world, -1)[rank]]


@torch.no_grad()
def shuffled_forward(encoder: nn.Module, x: Tensor, splits: int) -> Tensor:
    """One-process shuffle BN: encode a random permutation of x in `splits` sub-batches, then unshuffle.

    Each sub-batch has its own BN statistics over a random subset of images, the one-GPU analogue of
    the official code's per-GPU BN after a cross-GPU shuffle. Sub-batches keep at least 2 images.
    """
    splits = max(1, min(splits, x.shape[0] // 2))
    perm = torch.randperm(x.shape[0], device=x.device)
    out = torch.cat([encoder(chunk) for chunk in x[perm].chunk(splits)])
    return out[torch.argsort(perm)]


@dataclass(frozen=True)
class MocoTargets:
    """A batch's pseudo-labels: its keys (B, D) and the queue (D, K); `mix` = (perm, lam) for a CutMix view."""
    keys: Tensor
    queue: Tensor
    mix: tuple[Tensor, float] | None = None


class MoCo(PseudoLabelMethod):
    """MoCo-v2 / HEXA_MoCo (see the module docstring)."""

    anchor_scored_alone = True

    def __init__(self, cfg: MocoConfig, hard_views: HardViewConfig, arch: str, dataset_size: int = 0,
                 steps_per_epoch: int = 1):
        super().__init__(hard_views, steps_per_epoch)
        self.cfg, self.arch, self.momentum = cfg, arch, cfg.momentum
        self.encoder_q = Encoder(arch, cfg.dim, cfg.mlp, cfg.hidden_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)  # same initial weights, as the official copy_
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        aux = self.make_aux_bn([self.encoder_q.trunk, self.encoder_q.head])
        if aux is not None:
            self.encoder_q.aux_bn = aux
        self.register_buffer("queue", F.normalize(torch.randn(cfg.dim, cfg.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def network(self) -> nn.Module:
        return self.encoder_q

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The key encoder follows the query encoder (not its hard views' BN twins, which it has none of)."""
        return [(self.encoder_q.trunk, self.encoder_k.trunk), (self.encoder_q.head, self.encoder_k.head)]

    @property
    def trunk(self) -> nn.Module:
        """The query encoder's backbone: what gets published."""
        return self.encoder_q.trunk

    def trunks(self) -> list[nn.Module]:
        """The query encoder's backbone and the key encoder's (a forward each per step)."""
        return [self.encoder_q.trunk, self.encoder_k.trunk]

    @classmethod
    def adapt(cls, section: MocoConfig, *, dataset_size: int, batch_size: int, world_size: int,
              steps_per_epoch: int) -> tuple[MocoConfig, list[str]]:
        """A queue no longer than the data minus one batch allows, a multiple of the (global) batch."""
        limit = dataset_size - batch_size
        if section.queue_size <= limit:
            return section, []
        new = max(batch_size, (limit // batch_size) * batch_size)
        note = (f"moco.queue_size {section.queue_size} is longer than {dataset_size} images minus one batch of "
                f"{batch_size} allow: using {new} negative keys (a multiple of the batch)")
        return dataclasses.replace(section, queue_size=new), [note]

    def setup_distributed(self) -> list[str]:
        """Every rank takes rank 0's key encoder and queue; DDP over the query encoder. MoCo uses shuffle
        BN, not SyncBN (as the official code)."""
        for t in list(self.encoder_k.state_dict().values()) + [self.queue, self.queue_ptr]:
            dist.broadcast(t, src=0)
        return super().setup_distributed()

    # ---- the pseudo-label interface -------------------------------------------------------------
    def clean_step(self, views: list[Tensor], index: Tensor) -> tuple[Tensor, MocoTargets, dict]:
        """InfoNCE of the query view against its own key and the queue (the official loss)."""
        # every backward of the step runs before the in-place enqueue (after_step), so no clone is needed
        targets = MocoTargets(self._keys(views[1]), self.queue)
        logits = moco_logits(self._query(views[0]), targets.keys, targets.queue, self.cfg.temperature)
        acc = (logits.argmax(dim=1) == 0).float().mean().item() * 100
        return info_nce(logits), targets, {"acc_clean": acc}

    def view_loss(self, x: Tensor, targets: MocoTargets, wrapped: bool = True) -> Tensor:
        q = self._query(x, wrapped)
        if targets.mix is None:  # the own key among [own key ; queue]: exactly the clean loss
            return info_nce(moco_logits(q, targets.keys, targets.queue, self.cfg.temperature))
        perm, lam = targets.mix
        logits = batch_queue_logits(q, targets.keys, targets.queue, self.cfg.temperature)
        own = torch.arange(len(perm), device=perm.device)
        return info_nce(logits, mixed_targets(own, perm, lam, logits.shape[1]))

    def mix_targets(self, targets: MocoTargets, perm: Tensor, lam: float) -> MocoTargets:
        return dataclasses.replace(targets, mix=(perm, lam))

    def after_step(self, targets: MocoTargets) -> None:
        self._dequeue_and_enqueue(targets.keys)

    # ---- internals ------------------------------------------------------------------------------
    def _query(self, x: Tensor, wrapped: bool = True) -> Tensor:
        return F.normalize(self.net(wrapped)(self.normalize(x)), dim=1)

    @torch.no_grad()
    def _keys(self, x_k: Tensor) -> Tensor:
        """Normalised keys of the batch, computed with shuffle BN."""
        x = self.normalize(x_k)
        if distributed() and dist.get_world_size() > 1 and self.cfg.shuffle_bn:  # a group of one shuffles below
            x, idx_unshuffle = batch_shuffle_ddp(x)
            return batch_unshuffle_ddp(F.normalize(self.encoder_k(x), dim=1), idx_unshuffle)
        if self.cfg.shuffle_bn:
            return F.normalize(shuffled_forward(self.encoder_k, x, self.cfg.shuffle_bn_splits), dim=1)
        return F.normalize(self.encoder_k(x), dim=1)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Tensor) -> None:
        """Write all ranks' keys over the oldest queue entries (a ring buffer of K columns)."""
        keys = concat_all_gather(keys)[-self.queue.shape[1]:]
        ptr = int(self.queue_ptr)
        columns = (ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue.shape[1]
        self.queue[:, columns] = keys.t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % self.queue.shape[1]

