"""HEXA's hard views, and the HEXA step: one training step of any pseudo-label method with hard views.

HEXA (arXiv 2012.13493) trains on views whose pseudo-labels are harder to predict than the usual
augmentations. Both kinds are made from the batch of augmented anchor images x (`views[0]`) in pixel
space [0, 1] (before normalisation, so the L-infinity ball is measured in pixels):

- adversarial: x + delta with ||delta||_inf <= eps, delta chosen by sign-gradient ascent on the
  method's own pseudo-label loss for that view (`method.view_loss`, targets fixed). By default one step
  from a random start ("fast" FGSM). Where the method's clean loss scores the anchor alone through the
  very network that scores the view (MoCo's query), the clean backward already holds that gradient and
  the step is free; otherwise (multi-crop methods, whose crops share BatchNorm statistics; or `aux_bn`,
  where the view is scored by other BN layers) the first step takes its own forward and backward, and
  a start-up note says so. PGD with more steps is an option. Forwards made only to attack never update
  BatchNorm running statistics (`frozen_bn_stats`). Under fp16 autocast the attack's loss is multiplied
  by the GradScaler's scale before its gradient is taken: the sign is scale-invariant, and unscaled
  per-pixel gradients underflow to zero in fp16 (sign(0) takes no step).
- CutMix: a box of x_perm(i) pasted into x_i (timm's `rand_bbox`), lambda drawn from Beta(a, a) and
  corrected to the area actually kept; the targets are lambda on i's pseudo-label and 1 - lambda on
  perm(i)'s (`method.mix_targets`).

`hexa_step(method, views, index, backward, loss_scale)` is the whole step, for any method with the interface of
`pretrain.methods.method.PseudoLabelMethod`: the clean views (the method's own loss), then the adversarial view,
then the CutMix view, each with its own backward; DDP synchronises gradients only on the last one; with
`aux_bn` both hard views run on the auxiliary BatchNorm twins (pretrain/methods/aux_bn.py).

The paper's exact values are not all known: every default below (HardViewConfig) is our reconstruction,
recorded in each model card, and can be overridden, e.g. `--set hard_views.eps=0.0078`.
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

from .aux_bn import hard_view_norm, idle_main_term


@dataclass(frozen=True)
class HardViewConfig:
    """Hard-example views of HEXA; `enabled` is set from the method (False: the baseline, True: HEXA).

    Loss: L = L_clean + w_adv * L_adv + w_cutmix * L_cutmix.
    """

    enabled: bool = False          # follows the method: True exactly for the catalog's HEXA methods
    adversarial: bool = True       # add the adversarial view (when enabled)
    eps: float = 4 / 255           # L-infinity radius in pixel units ([0, 1] images)
    steps: int = 1                 # sign-gradient steps (1 = fast FGSM; >1 = PGD)
    alpha: float | None = None     # step size; None: 1.25 * eps for 1 step, 2.5 * eps / steps otherwise
    random_start: bool = True      # start from a uniform point in the ball (Wong et al. 2020 / Madry PGD)
    free: bool = True              # first step reuses the clean view's input gradient where that is the
                                   # attack's own (see the module doc); taken at x, not at the random start
    aux_bn: bool = False           # AdvProp-style separate BN for hard views (pretrain/methods/aux_bn.py)
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
                     input_grad: Tensor | None = None, model: nn.Module | None = None,
                     loss_scale: float = 1.0) -> Tensor:
    """x + delta, ||delta||_inf <= eps and inside [0, 1], found by sign-gradient ascent on `loss_fn`.

    x: (B, C, H, W) pixels in [0, 1]. loss_fn(x') -> scalar loss to *increase* (the caller fixes targets).
    input_grad: the gradient of the clean loss w.r.t. x (from the clean backward); used for the first step
    when given, which makes a one-step attack free. Attack forwards run with `model`'s BN statistics frozen.
    loss_scale: multiplies the loss before its gradient is taken (the GradScaler's scale under fp16, so
    small per-pixel gradients do not underflow; the sign does not change). Returns a detached tensor.
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
                    grad, = torch.autograd.grad(loss_fn(probe) * loss_scale, probe)
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


def free_step_note(hv: HardViewConfig, method) -> str | None:
    """Why the first attack step of `method` (a method or its class) cannot reuse the clean gradient under
    `hv` (None when it can, or when no free step is asked for)."""
    if not (hv.use_adversarial and hv.free):
        return None
    if hv.use_aux_bn:
        return ("hard_views.free: with aux_bn the clean backward runs through the main BatchNorm but the view is "
                "scored by its twins, so the first attack step takes its own forward and backward")
    if not method.anchor_scored_alone:
        name = method.__name__ if isinstance(method, type) else type(method).__name__
        return (f"hard_views.free: {name}'s clean loss scores crop 0 together with the other "
                "crops (shared BatchNorm statistics), so the first attack step takes crop 0's own forward and backward")
    return None


def attack_passes(hv: HardViewConfig, method) -> int:
    """Forward-backwards the adversarial view's search takes beyond the clean step (the free first step
    takes none); with amp, each is taken on a loss-scaled loss."""
    if not hv.use_adversarial:
        return 0
    return hv.steps - (1 if hv.free and free_step_note(hv, method) is None else 0)


def hexa_step(method, views: list[Tensor], index: Tensor, backward: Callable[[Tensor], None], *,
              loss_scale: float = 1.0) -> dict[str, float]:
    """One training step of `method` (a `PseudoLabelMethod`) with its hard views, as the module doc says.

    backward(loss) runs one backward (the trainer's, loss-scaled under amp); `loss_scale` is the scale the
    attack's own gradients use (`adversarial_view`). Returns the step's logs: `loss` (the
    weighted total), `loss_clean`, and per hard view its loss and `hardness_*` (its loss minus the
    anchor's clean loss).
    """
    hv = method.hard_views
    free = hv.use_adversarial and hv.free and free_step_note(hv, method) is None
    if free:  # the clean backward then leaves the input gradient the free attack step needs
        views = [views[0].detach().clone().requires_grad_(True), *views[1:]]
    parts = 1 + hv.use_adversarial + hv.use_cutmix
    with method.sync(last=parts == 1):
        loss_clean, targets, logs = method.clean_step(views, index)
        if loss_clean is None:  # nothing to learn from yet (DeepCluster's first epoch fills its memory)
            return {"loss": 0.0, "loss_clean": 0.0, **logs}
        backward(loss_clean)
    logs = {"loss_clean": loss_clean.item(), **logs}
    anchor_loss = logs.pop("loss_anchor", logs["loss_clean"])
    total = logs["loss_clean"]
    anchor, aux = views[0].detach(), method.hard_view_bn

    if hv.use_adversarial:
        def attack_loss(x: Tensor) -> Tensor:  # the unwrapped network: attack forwards bypass DDP
            return method.view_loss(x, targets, wrapped=False)

        with hard_view_norm(aux), method.sync(last=not hv.use_cutmix):
            x_adv = adversarial_view(anchor, attack_loss, hv, input_grad=views[0].grad if free else None,
                                     model=method.network, loss_scale=loss_scale)
            loss_adv = method.view_loss(x_adv, targets)
            backward(hv.w_adv * loss_adv + idle_main_term(aux))
        logs["loss_adv"] = loss_adv.item()
        logs["hardness_adv"] = logs["loss_adv"] - anchor_loss
        total += hv.w_adv * logs["loss_adv"]

    if hv.use_cutmix:
        x_mix, perm, lam = cutmix(anchor, hv.cutmix_alpha)
        with hard_view_norm(aux), method.sync(last=True):
            loss_cutmix = method.view_loss(x_mix, method.mix_targets(targets, perm, lam))
            backward(hv.w_cutmix * loss_cutmix + idle_main_term(aux))
        logs["loss_cutmix"] = loss_cutmix.item()
        logs["hardness_cutmix"] = logs["loss_cutmix"] - anchor_loss
        logs["cutmix_lambda"] = lam
        total += hv.w_cutmix * logs["loss_cutmix"]

    method.after_step(targets)
    return {"loss": total, **logs}
