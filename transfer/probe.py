"""The fast linear probe: L-BFGS logistic regression on standardised cached features.

The weight decay is picked on a stratified held-out share of train, then the head is refit on all of train.
It is `hexa transfer linear`'s fast variant, and the head that `adversarial` and `robustness` train for a trunk
that comes without one (`fast_head`, at the `paper_fast` constants, `FastProbe()`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .readers.images import LabeledImages
from .heads import fold_standardisation
from .metrics import topk_accuracy
from .progress import progress
from .runner import ProtocolRun


@dataclass(frozen=True)
class FastProbe:
    """The probe's constants (linear's `fast_*` settings; the defaults are its `paper_fast` preset)."""
    weight_decays: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    holdout: float = 0.1
    max_iter: int = 200


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
                 max_iter: int = 200, init: nn.Linear | None = None) -> nn.Linear:
    """Full-batch multinomial logistic regression, mean cross-entropy + weight_decay / 2 * |W|^2, by L-BFGS.

    `init` warm-starts from another solution (the previous point of a weight-decay path).
    """
    fc = nn.Linear(x.shape[1], num_classes).to(x.device, x.dtype)
    with torch.no_grad():
        fc.weight.copy_(init.weight if init is not None else torch.zeros_like(fc.weight))
        fc.bias.copy_(init.bias if init is not None else torch.zeros_like(fc.bias))
    opt = torch.optim.LBFGS(fc.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(fc(x), y) + 0.5 * weight_decay * fc.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return fc


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices): `fraction` of each class (at least one, if it has two or more)."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_held = int(round(fraction * len(idx))) if len(idx) > 1 else 0
        n_held = max(n_held, 1) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        fit.append(idx[n_held:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def train_fast_probe(train_feats: torch.Tensor, train_labels: np.ndarray, val_feats: torch.Tensor,
                     val_labels: np.ndarray, num_classes: int, probe: FastProbe, device: torch.device,
                     seed: int) -> tuple[dict[str, float], list[str], nn.Linear]:
    """The weight decay picked on a held-out split of train, refit on all of train.

    Returns (metrics, notes, the head on raw features: the standardisation folded into it)."""
    mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-6)
    xtr = ((train_feats - mean) / std).to(device)
    xva = ((val_feats - mean) / std).to(device)
    ytr = torch.from_numpy(train_labels).to(device)
    fit_idx, held_idx = stratified_holdout(train_labels, probe.holdout, seed)
    fit_t, held_t = torch.from_numpy(fit_idx).to(device), torch.from_numpy(held_idx).to(device)
    scores, fits, previous = {}, {}, None
    decays = sorted(probe.weight_decays, reverse=True)
    for wd in progress(decays, desc="fast linear head: weight decays", unit="fit"):  # strong to weak, warm-started
        fits[wd] = previous = fit_logistic(xtr[fit_t], ytr[fit_t], num_classes, wd, probe.max_iter, previous)
        with torch.no_grad():
            scores[wd] = topk_accuracy(previous(xtr[held_t]).cpu(), ytr[held_t].cpu(), ks=(1,))[1]
    best = max(probe.weight_decays, key=lambda wd: (scores[wd], wd))  # ties: the stronger regulariser
    fc = fit_logistic(xtr, ytr, num_classes, best, probe.max_iter, fits[best])
    with torch.no_grad():
        acc = topk_accuracy(fc(xva).cpu(), torch.from_numpy(val_labels), ks=(1, 5))
    notes = [f"fast variant (not MoCo's protocol): weight decay {best} chosen on a held-out "
             f"{probe.holdout:.0%} of train; held-out top-1 per weight decay: "
             + ", ".join(f"{wd}: {s:.2f}" for wd, s in scores.items())]
    return {"top1": acc[1], "top5": acc[5]}, notes, fold_standardisation(fc, mean, std)


def fast_head(run: ProtocolRun, train: LabeledImages, val: LabeledImages, transform) -> tuple[nn.Linear, list[str]]:
    """The fast linear head (preset paper_fast's constants) on cached features of `train`, for the protocols that
    need a head and were given none; returns (head on raw features, notes with its held-out top-1 per wd)."""
    train_f = run.features(train.paths, transform, desc="head train")
    val_f = run.features(val.paths, transform, desc="head eval")
    _, notes, head = train_fast_probe(train_f, train.labels, val_f, val.labels, len(train.classes), FastProbe(),
                                      run.device, run.seed)
    return head, notes
