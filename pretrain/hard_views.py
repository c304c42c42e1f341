"""HEXA's hard views: an adversarial view and a CutMix view, made from a batch (not a PIL transform).

HEXA (arXiv 2012.13493) trains on views whose pseudo-labels are harder to predict than the usual
augmentations. Two kinds, both applied to the batch of augmented query images x in pixel space [0, 1]
(before normalisation, so the L-infinity ball is measured in pixels):

- adversarial: x + delta with ||delta||_inf <= eps, delta chosen by sign-gradient ascent on the
  method's own pseudo-label loss for that view (MoCo: InfoNCE with its key fixed; DeepCluster: the
  cross-entropy against its cluster assignment). By default one step from a random start ("fast"
  FGSM) whose gradient is the clean view's input gradient, already computed by the clean backward, so
  the attack costs no extra forward or backward ("free"); PGD with more steps is an option. Forwards
  made only to attack never update BatchNorm running statistics (`frozen_bn_stats`).
  With `aux_bn`, both hard views (and the attack's forwards) are normalised by separate, AdvProp-style
  BatchNorm layers (pretrain/aux_bn.py); the published trunk keeps the clean views' BN.
- CutMix: a box of x_perm(i) pasted into x_i (timm's `rand_bbox`), lambda drawn from Beta(a, a) and
  corrected to the area actually kept; the pseudo-label target is lambda on i's and 1 - lambda on
  perm(i)'s.

The paper's exact values are not all known (see shared/protocols.md): every default below is a
documented reconstruction and can be overridden, e.g. `--set moco.hard_views.eps=0.0078`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from timm.data.mixup import cutmix_bbox_and_lam
from torch import Tensor, nn

from hexa_zoo.errors import ConfigError


@dataclass(frozen=True)
class HardViewConfig:
    """Hard-example views of HEXA; `enabled=False` is the baseline method, True its HEXA variant.

    Loss: L = L_clean + w_adv * L_adv + w_cutmix * L_cutmix.
    """

    enabled: bool = False          # False: plain MoCo-v2 / DeepCluster-v2
    adversarial: bool = True       # add the adversarial view (when enabled)
    eps: float = 4 / 255           # L-infinity radius in pixel units ([0, 1] images)
    steps: int = 1                 # sign-gradient steps (1 = fast FGSM; >1 = PGD)
    alpha: float | None = None     # step size; None: 1.25 * eps for 1 step, 2.5 * eps / steps otherwise
    random_start: bool = True      # start from a uniform point in the ball (Wong et al. 2020 / Madry PGD)
    free: bool = True              # first step reuses the clean view's input gradient (no extra pass);
                                   # note: that gradient is taken at x, not at the random start
    aux_bn: bool = False           # AdvProp-style separate BN for hard views (pretrain/aux_bn.py)
    cutmix: bool = True            # add the CutMix view (when enabled)
    cutmix_alpha: float = 1.0      # lambda ~ Beta(cutmix_alpha, cutmix_alpha), then area-corrected
    w_adv: float = 1.0             # weight of the adversarial view's loss
    w_cutmix: float = 1.0          # weight of the CutMix view's loss

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.eps <= 1.0, f"hard_views.eps must be in [0, 1] (pixel units), got {self.eps}",
             "use e.g. eps=0.0157 (4/255)"),
            (self.steps >= 1, f"hard_views.steps must be >= 1, got {self.steps}", "use steps=1 (FGSM) or more (PGD)"),
            (self.alpha is None or self.alpha > 0, f"hard_views.alpha must be positive, got {self.alpha}",
             "leave alpha unset (null) for the default step size"),
            (self.cutmix_alpha > 0, f"hard_views.cutmix_alpha must be positive, got {self.cutmix_alpha}",
             "use cutmix_alpha=1.0 (uniform lambda)"),
            (self.w_adv >= 0 and self.w_cutmix >= 0, "hard_views.w_adv and w_cutmix must be >= 0",
             "set the weights to 0 to switch a view's loss off, or use adversarial=false / cutmix=false"),
        ]
        for ok, message, fix in checks:
            if not ok:
                raise ConfigError(message, fix)

    @property
    def step_size(self) -> float:
        """alpha, or its default: 1.25 * eps for one step ("fast" FGSM), 2.5 * eps / steps for PGD."""
        if self.alpha is not None:
            return self.alpha
        return 1.25 * self.eps if self.steps == 1 else 2.5 * self.eps / self.steps

    @property
    def use_adversarial(self) -> bool:
        return self.enabled and self.adversarial

    @property
    def use_cutmix(self) -> bool:
        return self.enabled and self.cutmix

    @property
    def use_aux_bn(self) -> bool:
        return self.aux_bn and (self.use_adversarial or self.use_cutmix)


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Forwards inside keep every BatchNorm's running statistics (and batch counter) unchanged.

    Training-mode BN still normalises with the batch's own statistics; only the update of the running
    buffers is switched off (`track_running_stats=False` makes BN pass no running buffers).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def adversarial_view(x: Tensor, loss_fn: Callable[[Tensor], Tensor], cfg: HardViewConfig, *,
                     input_grad: Tensor | None = None, model: nn.Module | None = None) -> Tensor:
    """x + delta, ||delta||_inf <= eps and inside [0, 1], found by sign-gradient ascent on `loss_fn`.

    x: (B, C, H, W) pixels in [0, 1]. loss_fn(x') -> scalar loss to *increase* (the caller fixes targets).
    input_grad: the gradient of the clean loss w.r.t. x (from the clean backward); used for the first step
    when given, which makes a one-step attack free. Attack forwards run with `model`'s BN statistics frozen.
    Returns a detached tensor.
    """
    x = x.detach()
    eps, alpha = cfg.eps, cfg.step_size
    delta = torch.empty_like(x).uniform_(-eps, eps) if cfg.random_start else torch.zeros_like(x)
    delta = (x + delta).clamp(0.0, 1.0) - x
    frozen = frozen_bn_stats(model) if model is not None else contextlib.nullcontext()
    with frozen:
        for step in range(cfg.steps):
            if step == 0 and input_grad is not None:
                grad = input_grad
            else:
                probe = (x + delta).requires_grad_(True)
                with torch.enable_grad():
                    grad, = torch.autograd.grad(loss_fn(probe), probe)
            # An AMP overflow can put inf/nan in the gradient; a zero step is the safe reading of it.
            step_dir = torch.nan_to_num(grad.detach().float(), nan=0.0, posinf=1.0, neginf=-1.0).sign()
            delta = (delta + alpha * step_dir.to(x.dtype)).clamp(-eps, eps)
            delta = (x + delta).clamp(0.0, 1.0) - x
    return (x + delta).detach()


def cutmix(x: Tensor, alpha: float = 1.0) -> tuple[Tensor, Tensor, float]:
    """CutMix a batch with a random permutation of itself: (x_mix, perm, lam).

    x_mix[i] is x[i] with one box (timm's `rand_bbox`, the same box for the whole batch, as timm's
    batch mode) taken from x[perm[i]]. lam ~ Beta(alpha, alpha) is corrected to the true kept area:
    lam = 1 - box_area / (H * W), so the target weights lam on i and 1 - lam on perm(i) equal the pixel
    fractions. Randomness: torch's RNG for the permutation, numpy's for lambda and the box (timm).
    """
    perm = torch.randperm(x.shape[0], device=x.device)
    lam = float(np.random.beta(alpha, alpha))
    (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, correct_lam=True)
    mixed = x.clone()
    mixed[:, :, yl:yh, xl:xh] = x[perm][:, :, yl:yh, xl:xh]
    return mixed, perm, float(lam)
