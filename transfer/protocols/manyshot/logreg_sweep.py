"""The many-shot C sweep of ssl-transfer's `linear.py`: L-BFGS logistic regression for every C = 1 / wd.

ssl-transfer fits scikit-learn's `LogisticRegression(solver="lbfgs", multinomial, warm_start=True)` on the
frozen features once for each wd in logspace(-6, 5, 45), one after another, scores each on the validation
split and keeps the first best. scikit-learn's objective is C * sum_i loss_i + |W|^2 / 2 (intercept not
penalised), the same minimiser as mean_i loss_i + wd' / 2 * |W|^2 with wd' = 1 / (C n), which is what
`probe.fit_logistic` (multinomial) and `fit_binary_logistic` (VOC2007's one-vs-rest binary fits) solve
with torch's L-BFGS, in float64 (at float32's resolution the weakly regularised fits stop far from their
minimum). The problems are strictly convex, so both reach the same solution up to tolerance.

Fast: the wd path is cut into `n_jobs` contiguous pieces solved in threads (torch releases the GIL), each
piece walking from strong to weak regularisation and warm-starting every fit from the previous solution.
`sklearn_sweep` is the serial scikit-learn sweep it is checked and benchmarked against
(tests/test_transfer_manyshot.py, bench/manyshot_sweep.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...probe import fit_logistic
from ...progress import progress


def ssl_transfer_costs(n: int = 45) -> list[float]:
    """C = 1 / wd for wd in torch.logspace(-6, 5, n) (float32, as ssl-transfer computes it), in that order."""
    return [1.0 / wd.item() for wd in torch.logspace(-6, 5, n)]


def fit_binary_logistic(x: torch.Tensor, Y: torch.Tensor, weight_decay: float, max_iter: int = 1000,
                        init: nn.Linear | None = None) -> nn.Linear:
    """One binary logistic regression per column of Y (N, K) in {0, 1}: sum over columns of
    mean binary cross-entropy + weight_decay / 2 * |w_k|^2. The columns are independent (the sum is separable),
    so each one's minimiser is scikit-learn's binary LogisticRegression at C = 1 / (weight_decay * N)."""
    fc = nn.Linear(x.shape[1], Y.shape[1]).to(x.device, x.dtype)
    with torch.no_grad():
        fc.weight.copy_(init.weight if init is not None else torch.zeros_like(fc.weight))
        fc.bias.copy_(init.bias if init is not None else torch.zeros_like(fc.bias))
    opt = torch.optim.LBFGS(fc.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-10)
    target = Y.to(x.dtype)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(fc(x), target, reduction="none").mean(0).sum()
        loss = loss + 0.5 * weight_decay * fc.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return fc


def _fit(x: torch.Tensor, y: torch.Tensor, cost: float, num_classes: int, multilabel: bool, max_iter: int,
         init: nn.Linear | None) -> nn.Linear:
    wd = 1.0 / (cost * len(x))
    if multilabel:
        return fit_binary_logistic(x, y, wd, max_iter, init)
    return fit_logistic(x, y, num_classes, wd, max_iter, init)


def fit_path(x: torch.Tensor, y: torch.Tensor, costs: Sequence[float], num_classes: int, *, multilabel: bool = False,
             max_iter: int = 1000, n_jobs: int = 2) -> list[nn.Linear]:
    """A fitted model for each cost (same order), by warm-started pieces of the path in `n_jobs` threads."""
    order = sorted(range(len(costs)), key=lambda i: costs[i])  # strong regularisation (small C) first
    n_jobs = max(1, min(n_jobs, len(order)))
    bounds = np.linspace(0, len(order), n_jobs + 1).round().astype(int)
    pieces = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def solve(piece):
        fits, previous = {}, None
        for i in piece:
            fits[i] = previous = _fit(x, y, costs[i], num_classes, multilabel, max_iter, previous)
        return fits

    models: dict[int, nn.Linear] = {}
    with ThreadPoolExecutor(len(pieces)) as pool:  # pieces of the path finish one by one: progress per piece
        for fits in progress(pool.map(solve, pieces), desc=f"C sweep: {len(costs)} fits in {len(pieces)} piece(s)",
                             total=len(pieces), unit="piece"):
            models.update(fits)
    return [models[i] for i in range(len(costs))]


def fast_sweep(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
               costs: Sequence[float], score: Callable[[np.ndarray, np.ndarray], float], num_classes: int, *,
               multilabel: bool = False, max_iter: int = 1000, n_jobs: int = 2,
               device: str | torch.device = "cpu") -> tuple[list[float], int]:
    """Validation score of every cost, and the index of the first best (ssl-transfer's rule)."""
    xt = torch.as_tensor(np.asarray(train_x), dtype=torch.float64, device=device)
    yt = torch.as_tensor(np.asarray(train_y), device=device)
    xv = torch.as_tensor(np.asarray(val_x), dtype=torch.float64, device=device)
    models = fit_path(xt, yt, costs, num_classes, multilabel=multilabel, max_iter=max_iter, n_jobs=n_jobs)
    with torch.no_grad():
        scores = [score(val_y, m(xv).cpu().numpy()) for m in models]
    return scores, int(np.argmax(scores))


def fit_once(x: np.ndarray, y: np.ndarray, cost: float, num_classes: int, *, multilabel: bool = False,
             max_iter: int = 1000, device: str | torch.device = "cpu") -> nn.Linear:
    """The model at one cost (the refit on train + val)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)
    return _fit(xt, torch.as_tensor(np.asarray(y), device=device), cost, num_classes, multilabel, max_iter, None)


def sklearn_sweep(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                  costs: Sequence[float], score: Callable[[np.ndarray, np.ndarray], float], *,
                  multilabel: bool = False, max_iter: int = 1000, tol: float = 1e-6) -> tuple[list[float], int]:
    """The serial scikit-learn sweep: one warm-started LogisticRegression, C after C (scores in `costs` order).

    ssl-transfer walks from the weakest regularisation (C = 1e6) down, starting cold where the fit is hardest,
    so its first fits stop at max_iter far from their minimum; this walks from the strongest up, as the fast
    sweep does, so both reach the minimisers and the comparison is of solvers, not of stopping points.
    """
    from sklearn.linear_model import LogisticRegression

    def model():
        return LogisticRegression(solver="lbfgs", warm_start=True, max_iter=max_iter, tol=tol)

    clf, columns = model(), [model() for _ in range(np.asarray(train_y).shape[1])] if multilabel else []
    scores = [0.0] * len(costs)
    for i in progress(sorted(range(len(costs)), key=lambda i: costs[i]), desc="C sweep (scikit-learn)", unit="fit"):
        if multilabel:
            decision = np.stack([c.set_params(C=costs[i]).fit(train_x, train_y[:, k]).decision_function(val_x)
                                 for k, c in enumerate(columns)], axis=1)
        else:
            decision = clf.set_params(C=costs[i]).fit(train_x, train_y).decision_function(val_x)
        scores[i] = score(val_y, decision)
    return scores, int(np.argmax(scores))
