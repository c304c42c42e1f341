"""The pseudo-label method interface, and the machinery every method shares.

HEXA's framework (arXiv 2012.13493) reads a self-supervised method as *learning to predict pseudo-labels*:
for a batch the method makes targets (MoCo: the own key among [keys of the batch; queue]; DeepCluster-v2:
last epoch's k-means assignment; SwAV: the Sinkhorn codes of the other views) and scores each view's
prediction against them. HEXA adds harder views of the same images and scores them against the same
targets; `pretrain.methods.hard_views.hexa_step` does that for any method written against this class.

A method provides:
- `network`: the module that is trained (what DDP wraps) and `trunk`, the backbone that gets published;
- `momentum_pairs`: the (online, momentum) module pairs whose momentum copy follows the online one after
  every optimiser step, m * momentum + (1 - m) * online (MoCo's key encoder; none by default);
- `clean_step(views, index) -> (loss, targets, logs)`: its own loss on the clean views, with the batch's
  pseudo-labels for the hard views (loss None: nothing to learn from yet, e.g. a memory still filling);
- `view_loss(x, targets, wrapped=True)`: the loss of one more view of the anchor images (`views[0]`, in
  pixels) against `targets`, which may be soft;
- `mix_targets(targets, perm, lam)`: the targets of a CutMix view (lam on i's, 1 - lam on perm(i)'s);
- `anchor_scored_alone`: True when `clean_step`'s loss of the anchor is exactly `view_loss(views[0])`, so
  its input gradient is the attack's (the free adversarial step);
- `adapt(cfg, ...)` (a classmethod, before the method is built): its sizes fitted to the data; and the
  hooks `on_epoch_start`, `after_step` (after the step's last backward) and `on_step_end` (after the
  optimiser step).

A method is built knowing its data: `dataset_size` and `steps_per_epoch` (schedules counted in epochs).
What it runs but does not own as children (the multi-crop network, a view over children registered under
their own names, and the DDP wrapper) it keeps in `wiring` (`Wiring`), a plain attribute, so neither adds
a second copy of their keys to the state dict.

Shared here: input normalisation (the views arrive in pixels [0, 1]), the timm trunk, the DDP wrapper and
its `no_sync`, the momentum update, SyncBatchNorm on GPUs, and the hard views' auxiliary BatchNorm.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import timm
import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError

from .aux_bn import AuxBatchNorm
from .hard_views import HardViewConfig, hexa_step


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


def projection_head(features: int, hidden: int, out: int, batch_norm: bool) -> nn.Sequential:
    """Linear - [BatchNorm1d] - ReLU - Linear: MoCo-v2's head (no BN) and swav's (with BN)."""
    middle = [nn.BatchNorm1d(hidden)] if batch_norm else []
    return nn.Sequential(nn.Linear(features, hidden), *middle, nn.ReLU(inplace=True), nn.Linear(hidden, out))


@dataclass
class Wiring:
    """The modules a method runs but does not own as children. nn.Module makes every module attribute a child
    (its keys in the state dict, moved by `.to()`); these are held in this plain object instead."""

    network: nn.Module | None = None  # a multi-crop method's network (MultiCropNetwork): a view of its children
    ddp: nn.parallel.DistributedDataParallel | None = None  # `network`'s DDP wrapper, once `setup_distributed` ran


class PseudoLabelMethod(nn.Module):
    """Base class of the pre-training methods (see the module docstring for what a subclass provides)."""

    anchor_scored_alone = False
    sync_bn = False  # SyncBatchNorm over the network's main BN layers under DDP on GPUs
    momentum = 0.0   # m of the momentum update of `momentum_pairs`

    def __init__(self, hard_views: HardViewConfig, steps_per_epoch: int = 1):
        super().__init__()
        self.hard_views = hard_views
        self.steps_per_epoch = steps_per_epoch  # schedules counted in epochs (prototype freeze, queue start)
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.wiring = Wiring()

    # ---- what a method provides ----------------------------------------------------------------
    network: nn.Module
    trunk: nn.Module

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) pairs: after each optimiser step the momentum module's parameters move toward the
        online one's (`momentum_update`); their buffers are not averaged."""
        return []

    @classmethod
    def adapt(cls, section: Any, *, dataset_size: int, batch_size: int, world_size: int,
              steps_per_epoch: int) -> tuple[Any, list[str]]:
        """The method's config section fitted to the data (`batch_size` global), with one line per change."""
        return section, []

    def clean_step(self, views: list[Tensor], index: Tensor) -> tuple[Tensor | None, Any, dict]:
        raise NotImplementedError

    def view_loss(self, x: Tensor, targets: Any, wrapped: bool = True) -> Tensor:
        raise NotImplementedError

    def mix_targets(self, targets: Any, perm: Tensor, lam: float) -> Any:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called before an epoch's first step (not when resuming inside it)."""

    def after_step(self, targets: Any) -> None:
        """Called after the step's last backward, before the optimiser step."""

    def on_step_end(self) -> None:
        """Called after the optimiser step: the momentum update of `momentum_pairs`."""
        self.momentum_update()

    # ---- shared machinery -----------------------------------------------------------------------
    def training_step(self, views: list[Tensor], index: Tensor, backward: Callable[[Tensor], None],
                      loss_scale: float = 1.0) -> dict[str, float]:
        """One step: the clean views, then the hard views when enabled (`hexa_step`). `loss_scale`: the
        GradScaler's scale, for the attack's own gradients under fp16 autocast (1.0 otherwise)."""
        return hexa_step(self, views, index, backward, loss_scale=loss_scale)

    def normalize(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] -> ImageNet-normalised input."""
        return (x - self.mean) / self.std

    @torch.no_grad()
    def momentum_update(self) -> None:
        """momentum = m * momentum + (1 - m) * online for every parameter of `momentum_pairs`, in one pass."""
        pairs = self.momentum_pairs
        if not pairs:
            return
        params_k = [p for _, follower in pairs for p in follower.parameters()]
        params_q = [p.detach() for online, _ in pairs for p in online.parameters()]
        torch._foreach_lerp_(params_k, params_q, 1.0 - self.momentum)  # k + (1 - m)(q - k) = m k + (1 - m) q

    def net(self, wrapped: bool = True) -> nn.Module:
        """The trained network, through its DDP wrapper when there is one and `wrapped`."""
        ddp = self.wiring.ddp
        return ddp if wrapped and ddp is not None else self.network

    def sync(self, last: bool):
        """DDP all-reduces gradients only on the last backward of a step."""
        ddp = self.wiring.ddp
        return ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()

    def trunks(self) -> list[nn.Module]:
        """Every backbone the method runs (what `compile_trunks` compiles): the trained one by default."""
        return [self.trunk]

    def param_groups(self) -> list[dict]:
        """One group with every trained parameter (MoCo and swav apply weight decay to all of them)."""
        return [{"params": [p for p in self.network.parameters() if p.requires_grad], "name": "network"}]

    def make_aux_bn(self, parts: list[nn.Module]) -> AuxBatchNorm | None:
        """BatchNorm twins of `parts` for the hard views (`hard_views.aux_bn`); the caller registers them
        inside `network`, so DDP averages their gradients too."""
        return AuxBatchNorm(nn.ModuleList(parts)) if self.hard_views.use_aux_bn else None

    @property
    def hard_view_bn(self) -> AuxBatchNorm | None:
        """The hard views' BatchNorm twins (registered in `network` as `aux_bn`), or None."""
        return self.network._modules.get("aux_bn")

    def setup_distributed(self) -> list[str]:
        """SyncBN (on GPUs, where the method asks for it) and DDP over `network`. Call after moving to the device."""
        notes = []
        on_gpu = self.mean.is_cuda
        if self.sync_bn and on_gpu:
            for name, child in self.network.named_children():
                if name != "aux_bn":
                    nn.SyncBatchNorm.convert_sync_batchnorm(child)
        elif self.sync_bn:
            notes.append(f"{type(self).__name__}: SyncBatchNorm needs GPUs; on CPU each process keeps its own BN")
            warnings.warn(notes[-1])
        device_ids = [self.mean.device.index] if on_gpu else None
        self.wiring.ddp = nn.parallel.DistributedDataParallel(self.network, device_ids=device_ids)
        return notes


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def compile_trunks(method: PseudoLabelMethod, mode: str = "default", backend: str = "inductor") -> str:
    """`torch.compile` every trunk of `method` in place (`nn.Module.compile`), and say so in one line.

    In place, so parameter names, state dicts, checkpoints and the published trunk are the same as without
    it, and DDP (set up afterwards, as torch's DDP + compile notes advise: wrap the module whose submodules
    are compiled) sees the same parameters. Only the trunks: the heads, losses, queue and Sinkhorn are small
    and data-dependent. The first forwards compile (tens of seconds for a ResNet-50 with inductor), and the
    hard views' frozen or swapped BatchNorm may add a graph each.
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}",
                          "set compile_mode=default (or compile=false)")
    if backend not in torch.compiler.list_backends(exclude_tags=()):
        raise ConfigError(f"unknown torch.compile backend {backend!r}",
                          f"use one of: {', '.join(torch.compiler.list_backends())} (compile_backend=...)")
    trunks = method.trunks()
    for trunk in trunks:  # inductor takes a mode; other backends have none
        trunk.compile(backend=backend, **({"mode": mode} if backend == "inductor" else {}))
    return f"torch.compile of {len(trunks)} trunk(s): backend {backend}" + (f", mode {mode}" if backend == "inductor" else "")


class MultiCropNetwork(nn.Module):
    """swav's online network (DeepCluster-v2, SwAV): crops -> (L2-normalised embeddings, prototype scores).

    One trunk pass per run of same-sized crops (swav's multi-resolution forward), one head pass for all.
    With `aux_bn`, the hard views' BatchNorm twins are registered here, so DDP averages them too.
    """

    def __init__(self, trunk: nn.Module, projection_head: nn.Module, prototypes: nn.Module):
        super().__init__()
        self.trunk, self.projection_head, self.prototypes = trunk, projection_head, prototypes

    def forward(self, crops: list[Tensor]):
        features, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            features.append(self.trunk(torch.cat(crops[start:end])))
            start = end
        emb = nn.functional.normalize(self.projection_head(torch.cat(features)), dim=1)
        return emb, self.prototypes(emb)


def frozen_steps(epochs: float, steps_per_epoch: int) -> int:
    """Steps of a prototype freeze given in epochs (swav's `freeze_prototypes_niters`, counted per epoch)."""
    return int(round(epochs * steps_per_epoch))
