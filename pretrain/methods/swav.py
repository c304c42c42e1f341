"""SwAV (Caron et al. 2020, facebookresearch/swav main_swav.py) and HEXA_SwAV.

SwAV predicts, from one view of an image, the cluster code of another view. An online network (a timm
trunk, a projection head Linear-BN-ReLU-Linear whose output is L2-normalised, and 3000 prototypes: a
bias-free Linear whose rows are L2-normalised before every step) scores every crop of a multi-crop batch.
For each crop in `crops_for_assign` (the two global crops) the codes q are the Sinkhorn-Knopp
equipartition of exp(scores / epsilon) over the batch (3 iterations, epsilon 0.05, sums all-reduced over
processes), computed without gradient; with a queue, the scores of the last `queue_length` embeddings
join them (small batches: swav's batch-256 scripts keep 3840 from epoch 15). The loss is the swapped
prediction: for each assigned crop, the cross-entropy between its codes and the softmax of every *other*
crop's scores / T (T = 0.1), averaged. The prototypes get no gradient for the first iterations (swav: 313,
one epoch at batch 4096; here counted in epochs, `freeze_prototypes_epochs`).

As a pseudo-label method (pretrain/methods/method.py) the targets of a batch are the codes of its assigned crops.
A hard view of crop 0 is another view of the same image, so it predicts every assigned crop's codes, as
the small crops do; a CutMix view predicts lambda * q_i + (1 - lambda) * q_perm(i).

State dict keys mirror swav's: `trunk.*` (timm keys), `projection_head.{0,1,3}.*`, `prototypes.weight`,
plus the queue and the step counter; `swav_release()` writes the official release layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError

from .hard_views import HardViewConfig
from .losses import soft_cross_entropy
from .method import MultiCropNetwork, PseudoLabelMethod, create_trunk, frozen_steps, projection_head, trunk_output_size
from ..processes import distributed


@dataclass(frozen=True)
class SwavConfig:
    """SwAV's constants (swav's scripts/swav_800ep_pretrain.sh; batch-256 values in the recipes)."""

    feat_dim: int = 128
    hidden_mlp: int = 2048
    nmb_prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05                   # Sinkhorn's entropic regularisation
    sinkhorn_iterations: int = 3
    crops_for_assign: tuple[int, ...] = (0, 1)
    queue_length: int = 0                   # embeddings per assigned crop over all processes (0: no queue)
    queue_start_epoch: float = 15.0         # swav's epoch_queue_starts
    freeze_prototypes_epochs: float = 1.0   # swav: 313 iterations at batch 4096 (5005 at 256), one epoch
    sync_bn: bool = True                    # SyncBN under DDP on GPUs (swav); CPU/gloo keeps BN
    multicrop = True                        # not a field: what the method needs from the data

    def __post_init__(self) -> None:
        checks = [
            (self.nmb_prototypes >= 2, f"swav.nmb_prototypes must be >= 2, got {self.nmb_prototypes}",
             "use nmb_prototypes=3000"),
            (self.temperature > 0 and self.epsilon > 0, "swav.temperature and swav.epsilon must be positive",
             "use temperature=0.1, epsilon=0.05"),
            (self.sinkhorn_iterations >= 1, "swav.sinkhorn_iterations must be >= 1", "use sinkhorn_iterations=3"),
            (len(self.crops_for_assign) >= 1 and min(self.crops_for_assign) >= 0,
             f"swav.crops_for_assign must list crop numbers, got {self.crops_for_assign}", "use [0,1]"),
            (self.queue_length >= 0 and self.freeze_prototypes_epochs >= 0,
             "swav.queue_length and swav.freeze_prototypes_epochs must be >= 0", "use 0 to switch either off"),
        ]
        for ok, message, fix in checks:
            if not ok:
                raise ConfigError(message, fix)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """swav's `distributed_sinkhorn`: codes (B, K) whose rows sum to 1 and whose columns (over every
    process's B rows) each hold 1/K of the mass. Computed in float32 (exp(1 / 0.05) overflows fp16)."""
    q = torch.exp(scores.float() / epsilon).t()  # K x B, as in the paper's notation
    world = dist.get_world_size() if distributed() else 1
    k, b = q.shape[0], q.shape[1] * world

    def all_sum(t: Tensor) -> Tensor:
        if distributed():
            dist.all_reduce(t)
        return t

    q /= all_sum(q.sum())
    for _ in range(iterations):
        q /= all_sum(q.sum(dim=1, keepdim=True))  # each prototype: total mass 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True)            # each sample: total mass 1/B
        q /= b
    return (q * b).t()


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], crops_for_assign, temperature: float) -> Tensor:
    """swav's loss: for assigned crop c with codes q_c, the mean over every other crop v of
    CE(q_c, softmax(scores[v] / T)); averaged over the assigned crops."""
    total = 0.0
    for q, crop in zip(codes, crops_for_assign):
        others = [v for v in range(len(scores)) if v != crop]
        total = total + sum(soft_cross_entropy(scores[v] / temperature, q) for v in others) / len(others)
    return total / len(codes)


class SwAV(PseudoLabelMethod):
    """SwAV / HEXA_SwAV (see the module docstring)."""

    def __init__(self, cfg: SwavConfig, hard_views: HardViewConfig, arch: str, dataset_size: int = 0,
                 steps_per_epoch: int = 1):
        super().__init__(hard_views, steps_per_epoch)
        self.cfg, self.arch, self.sync_bn = cfg, arch, cfg.sync_bn
        self.trunk = create_trunk(arch)
        self.projection_head = projection_head(trunk_output_size(self.trunk), cfg.hidden_mlp, cfg.feat_dim,
                                               batch_norm=True)
        self.prototypes = nn.Linear(cfg.feat_dim, cfg.nmb_prototypes, bias=False)
        world = dist.get_world_size() if distributed() else 1
        self.register_buffer("queue", torch.zeros(len(cfg.crops_for_assign), cfg.queue_length // world, cfg.feat_dim))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # steps taken
        self.wiring.network = MultiCropNetwork(self.trunk, self.projection_head, self.prototypes)
        aux = self.make_aux_bn([self.trunk, self.projection_head])
        if aux is not None:  # in the state dict as `aux_bn.*`, and inside the network for DDP
            self.aux_bn = self.network.aux_bn = aux

    @classmethod
    def adapt(cls, section: SwavConfig, *, dataset_size: int, batch_size: int, world_size: int,
              steps_per_epoch: int) -> tuple[SwavConfig, list[str]]:
        """A queue that is a multiple of the global batch (as swav) and shorter than the data minus one batch."""
        length = section.queue_length - section.queue_length % batch_size
        limit = max(0, (dataset_size - batch_size) // batch_size * batch_size)
        notes = []
        if length > limit:
            notes.append(f"swav.queue_length {section.queue_length} is longer than {dataset_size} images minus one "
                         f"batch of {batch_size} allow: keeping {limit} embeddings (a multiple of the batch)")
            length = limit
        return dataclasses.replace(section, queue_length=length), notes

    @property
    def network(self) -> nn.Module:
        """trunk, projection head and prototypes as one network (its parts registered here under their own names)."""
        return self.wiring.network

    # ---- the pseudo-label interface -------------------------------------------------------------
    def clean_step(self, views: list[Tensor], index: Tensor) -> tuple[Tensor, list[Tensor], dict]:
        """Codes of the assigned crops (Sinkhorn, with the queue once it is full), then the swapped loss."""
        with torch.no_grad():
            self.prototypes.weight.copy_(nn.functional.normalize(self.prototypes.weight, dim=1))
        emb, scores = self.net()([self.normalize(v) for v in views])
        batch = views[0].shape[0]
        use_queue = self.queue.shape[1] > 0 and int(self.iteration) >= self.cfg.queue_start_epoch * self.steps_per_epoch
        codes = []
        with torch.no_grad():
            for i, crop in enumerate(self.cfg.crops_for_assign):
                out = scores[batch * crop: batch * (crop + 1)].detach()
                if use_queue:
                    if bool((self.queue[i, -1] != 0).any()):  # swav uses the queue once it is full
                        out = torch.cat([self.queue[i] @ self.prototypes.weight.t(), out.to(self.queue.dtype)])
                    self.queue[i, batch:] = self.queue[i, :-batch].clone()
                    self.queue[i, :batch] = emb[batch * crop: batch * (crop + 1)].detach().to(self.queue.dtype)
                codes.append(sinkhorn(out, self.cfg.epsilon, self.cfg.sinkhorn_iterations)[-batch:])
            anchor = sum(soft_cross_entropy(scores[:batch] / self.cfg.temperature, q) for q in codes) / len(codes)
        loss = swapped_prediction_loss(list(scores.split(batch)), codes, self.cfg.crops_for_assign,
                                       self.cfg.temperature)
        return loss, codes, {"loss_anchor": float(anchor)}

    def view_loss(self, x: Tensor, codes: list[Tensor], wrapped: bool = True) -> Tensor:
        scores = self.net(wrapped)([self.normalize(x)])[1]
        return sum(soft_cross_entropy(scores / self.cfg.temperature, q) for q in codes) / len(codes)

    def mix_targets(self, codes: list[Tensor], perm: Tensor, lam: float) -> list[Tensor]:
        return [lam * q + (1.0 - lam) * q[perm] for q in codes]

    def after_step(self, codes: list[Tensor]) -> None:
        if int(self.iteration) < frozen_steps(self.cfg.freeze_prototypes_epochs, self.steps_per_epoch):
            self.prototypes.weight.grad = None  # swav: "cancel gradients for the prototypes"
        self.iteration += 1


def swav_release(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A trained SwAV's state dict in the official release layout: `module.<trunk key>`,
    `module.projection_head.*`, `module.prototypes.weight` (what `hexa_zoo.convert` reads as "swav")."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("trunk."):
            out["module." + key[len("trunk."):]] = value
        elif key.startswith(("projection_head.", "prototypes.")):
            out["module." + key] = value
    return out

