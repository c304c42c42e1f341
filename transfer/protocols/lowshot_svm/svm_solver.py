"""The L2-regularised squared-hinge linear SVM (scikit-learn's LinearSVC, dual), ported from liblinear.

`fit_svm_path` solves one training set for a list of costs: liblinear's dual coordinate descent
(solve_l2r_l1l2_svc with the L2 loss) with shrinking and its stopping rule, same tolerance and iteration
cap, walking the costs in increasing order and warm-starting each from the previous solution. It runs in a
numba kernel that releases the GIL, so a thread pool solves many problems at once. The inner loops run in
float32 (data and working w) with w recomputed exactly in float64 before the stopping rule is accepted.
Problems with at most half as many rows as columns (small low-shot sets, the embedded scenes) run the same
iterations on the Gram matrix instead, where a step costs a row of K rather than a row of X. The SVM is
strictly convex, so the solution is liblinear's up to the stopping tolerance
(`reference.py` beside it checks it against scikit-learn).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hexa_zoo.errors import ConfigError


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """VISSL's normalisation: x / (|x| + 1e-5), in float64 (what liblinear sees)."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def _dot_py(w, x):  # pragma: no cover - compiled by numba
    """w . x in float32 (fastmath spreads the sum over many vector accumulators)."""
    acc = np.float32(0.0)
    for t in range(x.shape[0]):
        acc += w[t] * x[t]
    return acc


def _exact_py(A, y, alpha, out):  # pragma: no cover - compiled by numba
    """out = sum_i alpha_i y_i A[i], accumulated in float64: w from the rows of X, or the margins X w
    from the rows of the (symmetric) Gram matrix K."""
    out[:] = 0.0
    for i in range(A.shape[0]):
        if alpha[i] != 0.0:
            coef = alpha[i] * y[i]
            for t in range(A.shape[1]):
                out[t] += coef * A[i, t]


def _dual_cd_path_py(X, K, y, costs, positive_weight, tol, max_iter, seed, W, n_iter):  # pragma: no cover
    """liblinear's dual coordinate descent for the L2-loss SVM, over increasing costs with warm starts.

    X (n, d) float32 includes the bias column; y in {-1, +1}; writes W (n_costs, d) and n_iter. A port
    of liblinear's solve_l2r_l1l2_svc (L2 loss: no upper bound, diagonal 1 / (2 C_i)), including
    shrinking and its stopping rule on the projected-gradient gap. Compiled by numba below (nogil, so
    threads run it in parallel).

    Each coordinate step needs the margin w . x_i and then moves w along x_i. With an empty K this keeps
    w, in float32 (the dot and the axpy over d are the whole cost, and float32 halves their bytes and
    doubles the vector width). With K = X X^T (float64, n x n) it keeps the margins f = X w instead, so
    a step costs a row of K (n) rather than two passes over a row of X (d): the same coordinates in the
    same order, shrunk and stopped by the same rule. Rounding drifts w (or f) away from its value from
    alpha, ~1e-6 relative over many epochs in float32, so whenever the stopping rule is met it is
    recomputed exactly from alpha in float64 and the rule must hold again for one more full pass before
    the solver stops. Each returned W row is sum_i alpha_i y_i x_i in float64.
    """
    n, d = X.shape
    gram = K.shape[0] == n
    np.random.seed(seed)
    alpha = np.zeros(n)
    w = np.zeros(d, np.float32)
    w64 = np.zeros(d)
    f = np.zeros(n)
    sqnorm = np.empty(n)
    for i in range(n):
        acc = 0.0
        for t in range(d):
            acc += np.float64(X[i, t]) * X[i, t]
        sqnorm[i] = acc
    diag, qd = np.empty(n), np.empty(n)
    index = np.empty(n, np.int64)
    inf = np.inf
    for c in range(len(costs)):
        for i in range(n):
            diag[i] = 0.5 / (costs[c] * (positive_weight if y[i] > 0 else 1.0))
            qd[i] = sqnorm[i] + diag[i]
            index[i] = i
        active, it, exact = n, 0, False
        pg_max_old = inf  # liblinear's PGmin_old only shrinks alphas at an upper bound: L2 loss has none
        while it < max_iter:
            pg_max_new, pg_min_new = -inf, inf
            for s in range(active):
                j = s + np.random.randint(0, active - s)
                index[s], index[j] = index[j], index[s]
            s = 0
            while s < active:
                i = index[s]
                margin = f[i] if gram else np.float64(_dot(w, X[i]))
                g = y[i] * margin - 1.0 + alpha[i] * diag[i]
                pg = 0.0
                if alpha[i] == 0.0:
                    if g > pg_max_old:  # shrink: this alpha will stay at its bound
                        active -= 1
                        index[s], index[active] = index[active], index[s]
                        continue
                    if g < 0.0:
                        pg = g
                else:
                    pg = g
                pg_max_new, pg_min_new = max(pg_max_new, pg), min(pg_min_new, pg)
                if abs(pg) > 1e-12:
                    old = alpha[i]
                    alpha[i] = max(old - g / qd[i], 0.0)
                    step = (alpha[i] - old) * y[i]
                    if gram:
                        for t in range(n):
                            f[t] += step * K[i, t]
                    else:
                        step32 = np.float32(step)
                        for t in range(d):
                            w[t] += step32 * X[i, t]
                s += 1
            it += 1
            if pg_max_new - pg_min_new <= tol:
                if active == n:
                    if exact:  # the rule held on a pass that started from the exact w (or f)
                        break
                    if gram:
                        _exact(K, y, alpha, f)
                    else:
                        _exact(X, y, alpha, w64)
                        w[:] = w64
                    exact, pg_max_old = True, inf
                    continue
                active, pg_max_old = n, inf  # unshrink and check everything once more
                exact = False
                continue
            exact = False
            pg_max_old = pg_max_new if pg_max_new > 0 else inf
        _exact(X, y, alpha, w64)  # also the next cost's warm start, free of drift
        w[:] = w64
        if gram:
            _exact(K, y, alpha, f)
        W[c] = w64
        n_iter[c] = it


try:
    import numba

    _dot = numba.njit(fastmath=True, cache=True, inline="always")(_dot_py)
    _exact = numba.njit(fastmath=True, cache=True)(_exact_py)
    _dual_cd_path = numba.njit(nogil=True, fastmath=True, cache=True)(_dual_cd_path_py)
except ImportError:  # pragma: no cover - numba is a dependency; without it the sklearn path still works
    _dual_cd_path = None


def fit_svm_path(X: np.ndarray, y: np.ndarray, costs: Sequence[float], *, positive_weight: float = 2.0,
                 tol: float = 1e-4, max_iter: int = 2000, seed: int = 0) -> np.ndarray:
    """Weights (n_costs, d + 1) of LinearSVC(C, class_weight={1: w, -1: 1}, dual, squared hinge, bias 1)
    for each cost; `X` (n, d) L2-normalised, `y` in {-1, 1}. Score new data with `add_bias(X) @ W.T`.

    The data are held in float32 inside the solver (see `_dual_cd_path_py` for why the result is still
    float64-exact): decisions agree with liblinear's to its stopping tolerance.
    """
    return solve_path(add_bias(X).astype(np.float32), y, costs, positive_weight, tol, max_iter, seed)


GRAM_MAX_ROWS = 4096  # K of 4096 rows is 128 MiB per problem in flight


def solve_path(Xb32: np.ndarray, y: np.ndarray, costs: Sequence[float], positive_weight: float, tol: float,
               max_iter: int, seed: int, gram: bool | None = None) -> np.ndarray:
    """`fit_svm_path` on rows that already carry the bias column, in float32. `gram`: solve on the Gram
    matrix (see `_dual_cd_path_py`); by default where that is cheaper, with at most half as many rows as
    columns (and at most GRAM_MAX_ROWS): about 5x faster on the embedded scenes' 400 x 2049."""
    if _dual_cd_path is None:
        raise ConfigError("the fast low-shot SVM solver needs numba, which is not installed",
                          "pip install numba, or run the serial reference with --set solver=sklearn")
    order = np.argsort(costs, kind="stable")
    W = np.empty((len(costs), Xb32.shape[1]))
    n_iter = np.zeros(len(costs), dtype=np.int64)
    X = np.ascontiguousarray(Xb32, dtype=np.float32)
    args = (np.asarray(y, dtype=np.float64), np.asarray(costs, dtype=np.float64)[order], float(positive_weight),
            float(tol), int(max_iter), int(seed), W, n_iter)
    if gram is None:  # a step costs n float64 on the Gram matrix, 2d float32 on w; K takes n^2 float64
        gram = 2 * len(X) <= X.shape[1] and len(X) <= GRAM_MAX_ROWS  # measured: at n ~ d, no gain
    K = np.empty((0, 0))  # empty: the kernel keeps w
    if gram:
        X64 = X.astype(np.float64)
        K = X64 @ X64.T
    _dual_cd_path(X, K, *args)
    out = np.empty_like(W)
    out[order] = W
    return out


def add_bias(X: np.ndarray) -> np.ndarray:
    """[X, 1]: liblinear's intercept as a regularised feature (intercept_scaling = 1)."""
    return np.hstack([np.asarray(X, dtype=np.float64), np.ones((len(X), 1))])
