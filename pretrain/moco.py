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

HEXA_MoCo adds two harder query views of the same images (pretrain/hard_views.py): an adversarial view,
pushed inside a small L-infinity ball to raise its own InfoNCE loss (keys fixed, no gradient to the key
encoder; by default one sign step reusing the clean query's input gradient, so it costs no extra pass),
and a CutMix view scored against [keys of the batch ; queue] with the soft target lambda on key i and
1 - lambda on key perm(i). Loss: L_clean + w_adv L_adv + w_cutmix L_cutmix.

State dict keys: `encoder_q.trunk.*` (timm keys), `encoder_q.head.{0,2}.*` (official `fc.{0,2}`),
`encoder_k.*` likewise, `queue` (dim, K) and `queue_ptr`, as in the official checkpoint; with
`hard_views.aux_bn`, also the hard views' BN twins `encoder_q.aux_bn.twins.*` (pretrain/aux_bn.py).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Callable

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError

from .aux_bn import AuxBatchNorm, hard_view_norm, idle_main_term
from .hard_views import HardViewConfig, adversarial_view, cutmix
from .losses import batch_queue_logits, info_nce, mixed_targets, moco_logits
from .processes import distributed


@dataclass(frozen=True)
class MocoConfig:
    """MoCo-v2's constants (`--mlp --moco-t 0.2 --aug-plus --cos`) and the HEXA views."""

    dim: int = 128                 # embedding size (moco-dim)
    queue_size: int = 65536        # K, number of negative keys (moco-k)
    momentum: float = 0.999        # key-encoder momentum m (moco-m)
    temperature: float = 0.2       # T (moco-t; 0.07 in MoCo-v1)
    mlp: bool = True               # 2-layer MLP head (MoCo-v2) instead of one linear layer (v1)
    hidden_dim: int = 0            # MLP hidden size; 0: the trunk's feature size (2048 for ResNet-50), as official
    shuffle_bn: bool = True        # shuffle BN for the key encoder
    shuffle_bn_splits: int = 2     # one process only: key BN statistics over this many shuffled sub-batches
    hard_views: HardViewConfig = field(default_factory=HardViewConfig)

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


def create_trunk(arch: str) -> nn.Module:
    """A randomly initialised timm backbone without classifier (num_classes=0)."""
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise ConfigError(f"unknown architecture {arch!r} ({err})",
                          "use a timm model name such as resnet18 or resnet50 (see timm.list_models())") from None


def trunk_output_size(trunk: nn.Module) -> int:
    """Size of the trunk's pooled output: `head_hidden_size` where a model has a pre-logits layer
    (MobileNetV3, EfficientNet-style heads), else `num_features` (ResNet: 512 or 2048)."""
    return getattr(trunk, "head_hidden_size", None) or trunk.num_features


class Encoder(nn.Module):
    """timm trunk (pooled features) followed by the projection head: MLP (v2) or one linear layer (v1)."""

    def __init__(self, arch: str, dim: int, mlp: bool, hidden_dim: int = 0):
        super().__init__()
        self.trunk = create_trunk(arch)
        features = trunk_output_size(self.trunk)
        hidden = hidden_dim or features
        self.head = (nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
                     if mlp else nn.Linear(features, dim))

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


class MoCo(nn.Module):
    """MoCo-v2 / HEXA_MoCo with the trainer interface of pretrain/ (see the module docstring)."""

    def __init__(self, cfg: MocoConfig, arch: str, dataset_size: int):
        super().__init__()
        self.cfg, self.arch, self.dataset_size = cfg, arch, dataset_size
        self.queue_size = cfg.queue_size
        self.encoder_q = Encoder(arch, cfg.dim, cfg.mlp, cfg.hidden_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)  # same initial weights, as the official copy_
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        if cfg.hard_views.use_aux_bn:  # inside encoder_q, so DDP averages the twins' gradients too
            self.encoder_q.aux_bn = AuxBatchNorm(nn.ModuleList([self.encoder_q.trunk, self.encoder_q.head]))
        self.register_buffer("queue", F.normalize(torch.randn(cfg.dim, cfg.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.__dict__["_ddp"] = None  # the DDP wrapper of encoder_q, kept out of the state dict

    # ---- the trainer interface ------------------------------------------------------------------
    @property
    def trunk(self) -> nn.Module:
        """The query encoder's backbone: what gets published."""
        return self.encoder_q.trunk

    def normalize(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] -> ImageNet-normalised input."""
        return (x - self.mean) / self.std

    def param_groups(self) -> list[dict]:
        """One group, the query encoder (weight decay on everything, as the official SGD)."""
        return [{"params": [p for p in self.encoder_q.parameters() if p.requires_grad], "name": "encoder_q"}]

    def adapt_to_data(self, dataset_size: int, batch_size: int) -> list[str]:
        """Shrink the queue to fit the data; `batch_size` is the global batch. One line per change."""
        self.dataset_size = dataset_size
        notes = []
        limit = dataset_size - batch_size
        if self.queue_size > limit:
            new = max(batch_size, (limit // batch_size) * batch_size)
            notes.append(f"moco.queue_size {self.queue_size} is longer than {dataset_size} images minus one batch "
                         f"of {batch_size} allow: using {new} negative keys (a multiple of the batch)")
            self.queue_size = new
            self.queue = F.normalize(torch.randn(self.cfg.dim, new, device=self.queue.device), dim=0)
            self.queue_ptr.zero_()
        return notes

    def setup_distributed(self) -> list[str]:
        """Wrap the query encoder in DDP and give every rank rank 0's key encoder and queue.

        Call after `init_process_group` and after moving the model to its device. MoCo uses shuffle BN,
        not SyncBN (as the official code).
        """
        for t in list(self.encoder_k.state_dict().values()) + [self.queue, self.queue_ptr]:
            dist.broadcast(t, src=0)
        device_ids = [self.queue.device.index] if self.queue.is_cuda else None
        self.__dict__["_ddp"] = nn.parallel.DistributedDataParallel(self.encoder_q, device_ids=device_ids)
        return []

    def on_epoch_start(self, epoch: int) -> None:
        """Nothing to do for MoCo."""

    @torch.no_grad()
    def on_step_end(self) -> None:
        """Momentum update of the key encoder's parameters (buffers are not averaged, as official)."""
        m = self.cfg.momentum
        params_k = list(self.encoder_k.parameters())
        params_q = [p.detach() for n, p in self.encoder_q.named_parameters() if not n.startswith("aux_bn.")]
        torch._foreach_lerp_(params_k, params_q, 1.0 - m)  # k + (1 - m)(q - k) = m k + (1 - m) q, in one pass

    def training_step(self, views: list[Tensor], index: Tensor,
                      backward: Callable[[Tensor], None]) -> dict[str, float]:
        """Losses of one batch: backward on each part (clean, then adversarial, then CutMix), enqueue the keys."""
        hv, temperature = self.cfg.hard_views, self.cfg.temperature
        x_q, x_k = views[0], views[1]
        k = self._keys(x_k)
        queue = self.queue  # every backward below runs before the in-place enqueue, so no clone is needed
        parts = 1 + hv.use_adversarial + hv.use_cutmix
        free = hv.use_adversarial and hv.free
        if free:  # the clean backward then leaves the input gradient the free attack step needs
            x_q = x_q.detach().clone().requires_grad_(True)

        with self._sync(last=parts == 1):
            logits = moco_logits(self._query(x_q), k, queue, temperature)
            loss_clean = info_nce(logits)
            backward(loss_clean)
        logs = {"loss_clean": loss_clean.item(),
                "acc_clean": (logits.argmax(dim=1) == 0).float().mean().item() * 100}
        total = logs["loss_clean"]

        aux = self.aux_bn
        if hv.use_adversarial:
            def attack_loss(x: Tensor) -> Tensor:  # unwrapped encoder: attack forwards bypass DDP
                return info_nce(moco_logits(self._project(self.encoder_q, x), k, queue, temperature))

            with hard_view_norm(aux), self._sync(last=not hv.use_cutmix):
                x_adv = adversarial_view(x_q, attack_loss, hv, input_grad=x_q.grad if free else None,
                                         model=self.encoder_q)
                loss_adv = info_nce(moco_logits(self._query(x_adv), k, queue, temperature))
                backward(hv.w_adv * loss_adv + idle_main_term(aux))
            logs["loss_adv"] = loss_adv.item()
            total += hv.w_adv * logs["loss_adv"]

        if hv.use_cutmix:
            x_mix, perm, lam = cutmix(views[0].detach(), hv.cutmix_alpha)
            with hard_view_norm(aux), self._sync(last=True):
                logits = batch_queue_logits(self._query(x_mix), k, queue, temperature)
                own = torch.arange(len(perm), device=perm.device)
                loss_cutmix = info_nce(logits, mixed_targets(own, perm, lam, logits.shape[1]))
                backward(hv.w_cutmix * loss_cutmix + idle_main_term(aux))
            logs["loss_cutmix"] = loss_cutmix.item()
            logs["cutmix_lambda"] = lam
            total += hv.w_cutmix * logs["loss_cutmix"]

        self._dequeue_and_enqueue(k)
        return {"loss": total, **logs}

    # ---- internals ------------------------------------------------------------------------------
    @property
    def aux_bn(self) -> AuxBatchNorm | None:
        """The hard views' BatchNorm twins (`hard_views.aux_bn`), or None."""
        return self.encoder_q.aux_bn if "aux_bn" in self.encoder_q._modules else None

    def _project(self, encoder: nn.Module, x: Tensor) -> Tensor:
        return F.normalize(encoder(self.normalize(x)), dim=1)

    def _query(self, x: Tensor) -> Tensor:
        return self._project(self._ddp if self._ddp is not None else self.encoder_q, x)

    def _sync(self, last: bool):
        """DDP all-reduces gradients only on the last backward of a step."""
        return self._ddp.no_sync() if self._ddp is not None and not last else contextlib.nullcontext()

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
        keys = concat_all_gather(keys)[-self.queue_size:]
        ptr = int(self.queue_ptr)
        columns = (ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[:, columns] = keys.t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % self.queue_size

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint may hold a queue of another length (another recipe, or adapt_to_data): take its size.
        queue = state_dict.get(prefix + "queue")
        if queue is not None and queue.shape != self.queue.shape:
            self.queue = torch.empty_like(queue, device=self.queue.device)
            self.queue_size = queue.shape[1]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
