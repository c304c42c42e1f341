"""VOC07 low-shot linear SVMs on frozen features (Goyal et al. 2019; VISSL's implementation).

What we follow, read from facebookresearch/vissl:
- `extra_scripts/create_low_shot_samples.py` (generate_voc07_low_shot_samples): for each independent
  sample (5) and each k in {1, 2, 4, 8, 16, 32, 64, 96}, and for each class separately, draw k images
  where the class is present and (num_classes - 1) * k = 19k images where it is absent, without
  replacement; every other image (including "difficult"-only ones) is ignored. VISSL uses Python's
  unseeded `random`; we draw from numpy seeded by (seed, sample, k), so runs repeat.
- `vissl/utils/svm_utils/svm_low_shot_trainer.py`: one-vs-rest `LinearSVC(C, class_weight={1: 2, -1: 1},
  loss="squared_hinge", penalty="l2", dual=True, max_iter=2000, tol=1e-4, intercept_scaling=1)` for
  every class and cost in [0.01, 0.1, 1, 2, 5, 10, 15, 20, 50, 100, 1000]; features L2-normalised as
  x / (|x| + 1e-5); each model is tested on all of VOC07 test (difficult ignored); for each k the
  cost with the best test mAP averaged over the samples is reported, with mean/min/max/std over the
  samples (`aggregate_stats`). That is the older "max of mean test mAP" rule, VISSL's own choice for
  low-shot: our default `cost_selection="vissl"` does the same.
- `vissl/utils/svm_utils/svm_trainer.py` (the full-data SVM, our k = `full`): per class, the cost
  with the best 3-fold cross-validated average precision (`cross_val_score(..., cv=3,
  scoring="average_precision")`) on trainval; trained with difficult-only images as negatives (VISSL
  maps only "absent" to -1 and keeps its ignore label, also -1), tested with them ignored.
- `cost_selection="cv"` uses per-class 3-fold CV for low-shot samples too (min(3, k) folds; k = 1
  cannot be cross-validated and falls back to the test rule, noted in the record); `"test"` uses the
  test rule for the full-data SVM too.
- AP: VOC2007's 11-point AP (our default, `ap="voc07_11point"`); VISSL's code computes the all-points
  area (`ap="all_points"`). The reported numbers are percentages. `std` is the sample standard
  deviation (n - 1); VISSL prints numpy's population std, kept as `std_ddof0`.

A k that needs more positives or negatives than a class has in trainval is skipped for that class
(its mAP@k averages the remaining classes) and said so in the record's notes.

Speed: VISSL fits 8,800 low-shot SVMs and 880 cross-validation SVMs one after another. We solve the
same problem (the L2-regularised squared-hinge SVM dual, by liblinear's coordinate descent with
shrinking and its stopping rule, same tolerance and iteration cap) in a numba kernel that releases the
GIL, and walk each problem's costs in increasing order, warm-starting each from the previous solution.
Every cost path of the protocol (low-shot models, full-data models, CV folds) is one job in a single
thread pool, largest first, so both cores stay busy to the end. The kernel's inner loops run in float32
(data and working w) with w recomputed exactly in float64 before the stopping rule is accepted; test
scores come from one float32 matrix product per batch of models. The SVM is strictly convex, so the
solution is the same as liblinear's up to the stopping tolerance: `reference_lowshot_svm` (plain serial
scikit-learn) is kept here to prove it (tests/test_transfer_frozen.py, bench/lowshot_svm.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .common import (RunClock, benchmark_name, dataset_fingerprint, dataset_record, finish_record, load_model,
                     resolve_config, resolve_data, seed_everything)
from .metrics import voc07_ap, voc07_ap_columns

log = logging.getLogger(__name__)

VISSL_COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)


@dataclass(frozen=True)
class LowShotSvmConfig:
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 96)
    num_samples: int = 5
    negatives_per_positive: int | None = None   # None: num_classes - 1 (VISSL), 19 on VOC
    costs: tuple[float, ...] = VISSL_COSTS
    positive_weight: float = 2.0                 # class_weight {1: 2, -1: 1}
    max_iter: int = 2000
    tol: float = 1e-4
    cv_folds: int = 3
    cost_selection: Literal["vissl", "cv", "test"] = "vissl"
    ap: Literal["voc07_11point", "all_points"] = "voc07_11point"
    full: bool = True                            # also the full-data SVM, reported as k = full
    solver: Literal["fast", "sklearn"] = "fast"  # sklearn: the plain serial reference
    n_jobs: int = -1
    year: str = "2007"
    train_split: str = "trainval"
    test_split: str = "test"
    resize: int = 224                            # VISSL: Resize((224, 224)), no crop
    crop: int = 224
    square_resize: bool = True
    batch_size: int = 64
    device: str = ""


PRESETS: dict[str, LowShotSvmConfig] = {
    "paper": LowShotSvmConfig(),
    # The embedded VOC scenes: 400 trainval, 10 classes (~100 positives each), so k stops at 32.
    "embedded": LowShotSvmConfig(ks=(1, 2, 4, 8, 16, 32), resize=128, crop=128),
}


# ---------------------------------------------------------------------------------------- sampling

def sample_lowshot(labels: np.ndarray, k: int, negatives: int, rng: np.random.Generator
                   ) -> list[np.ndarray | None]:
    """For each class, the sorted indices of k present and `negatives` absent images (None if too few).

    `labels` is (N, C) in VOC convention: 1 present, -1 absent, 0 difficult-only (never sampled).
    """
    picked: list[np.ndarray | None] = []
    for c in range(labels.shape[1]):
        pos, neg = np.flatnonzero(labels[:, c] == 1), np.flatnonzero(labels[:, c] == -1)
        if len(pos) < k or len(neg) < negatives:
            picked.append(None)
            continue
        chosen = np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, negatives, replace=False)])
        picked.append(np.sort(chosen))
    return picked


def sample_rng(seed: int, sample: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, sample, k])


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """VISSL's normalisation: x / (|x| + 1e-5), in float64 (what liblinear sees)."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


# ------------------------------------------------------------------------------------------ solver

def _dot_py(w, x):  # pragma: no cover - compiled by numba
    """w . x in float32 (fastmath spreads the sum over many vector accumulators)."""
    acc = np.float32(0.0)
    for t in range(x.shape[0]):
        acc += w[t] * x[t]
    return acc


def _exact_w_py(X, y, alpha, w64, w):  # pragma: no cover - compiled by numba
    """w64 = sum_i alpha_i y_i x_i accumulated in float64, and the float32 working copy w reset to it."""
    w64[:] = 0.0
    for i in range(X.shape[0]):
        if alpha[i] != 0.0:
            coef = alpha[i] * y[i]
            for t in range(X.shape[1]):
                w64[t] += coef * X[i, t]
    for t in range(X.shape[1]):
        w[t] = w64[t]


def _dual_cd_path_py(X, y, costs, positive_weight, tol, max_iter, seed, W, n_iter):  # pragma: no cover
    """liblinear's dual coordinate descent for the L2-loss SVM, over increasing costs with warm starts.

    X (n, d) float32 includes the bias column; y in {-1, +1}; writes W (n_costs, d) and n_iter. A port
    of liblinear's solve_l2r_l1l2_svc (L2 loss: no upper bound, diagonal 1 / (2 C_i)), including
    shrinking and its stopping rule on the projected-gradient gap. Compiled by numba below (nogil, so
    threads run it in parallel).

    Precision: the coordinate loop keeps w in float32 (the dot and the axpy over d are the whole cost,
    and float32 halves their bytes and doubles the vector width). Rounding drifts w away from
    sum_i alpha_i y_i x_i by ~1e-6 relative over many epochs, so whenever the stopping rule is met, w
    is recomputed exactly from alpha in float64 and the rule must hold again for one more full pass on
    that exact w before the solver stops. Each returned W row is that float64 recomputation.
    """
    n, d = X.shape
    np.random.seed(seed)
    alpha = np.zeros(n)
    w = np.zeros(d, np.float32)
    w64 = np.zeros(d)
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
                g = y[i] * np.float64(_dot(w, X[i])) - 1.0 + alpha[i] * diag[i]
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
                    step = np.float32((alpha[i] - old) * y[i])
                    for t in range(d):
                        w[t] += step * X[i, t]
                s += 1
            it += 1
            if pg_max_new - pg_min_new <= tol:
                if active == n:
                    if exact:  # the rule held on a pass that started from the exact w
                        break
                    _exact_w(X, y, alpha, w64, w)
                    exact, pg_max_old = True, inf
                    continue
                active, pg_max_old = n, inf  # unshrink and check everything once more
                exact = False
                continue
            exact = False
            pg_max_old = pg_max_new if pg_max_new > 0 else inf
        _exact_w(X, y, alpha, w64, w)  # also the next cost's warm start, free of drift
        W[c] = w64
        n_iter[c] = it


try:
    import numba

    _dot = numba.njit(fastmath=True, cache=True, inline="always")(_dot_py)
    _exact_w = numba.njit(fastmath=True, cache=True)(_exact_w_py)
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
    return _solve_path(add_bias(X).astype(np.float32), y, costs, positive_weight, tol, max_iter, seed)


def _solve_path(Xb32: np.ndarray, y: np.ndarray, costs: Sequence[float], positive_weight: float, tol: float,
                max_iter: int, seed: int) -> np.ndarray:
    """`fit_svm_path` on rows that already carry the bias column, in float32."""
    if _dual_cd_path is None:
        from hexa_zoo.errors import ConfigError

        raise ConfigError("the fast low-shot SVM solver needs numba, which is not installed",
                          "pip install numba, or run the serial reference with --set solver=sklearn")
    order = np.argsort(costs, kind="stable")
    W = np.empty((len(costs), Xb32.shape[1]))
    n_iter = np.zeros(len(costs), dtype=np.int64)
    _dual_cd_path(np.ascontiguousarray(Xb32, dtype=np.float32), np.asarray(y, dtype=np.float64),
                  np.asarray(costs, dtype=np.float64)[order], float(positive_weight), float(tol), int(max_iter),
                  int(seed), W, n_iter)
    out = np.empty_like(W)
    out[order] = W
    return out


def add_bias(X: np.ndarray) -> np.ndarray:
    """[X, 1]: liblinear's intercept as a regularised feature (intercept_scaling = 1)."""
    return np.hstack([np.asarray(X, dtype=np.float64), np.ones((len(X), 1))])


# ------------------------------------------------------------------------------------- the protocol

@dataclass
class LowShotResult:
    """Per-k mAP values over samples (percent), the chosen costs, and notes."""

    map_values: dict[str, list[float]] = field(default_factory=dict)   # "1", ..., "full" -> values
    chosen_cost: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _ap_function(cfg: LowShotSvmConfig):
    return lambda scores, labels: voc07_ap(scores, labels, eleven_point=cfg.ap == "voc07_11point")


@dataclass(frozen=True)
class _PathJob:
    """One cost path to solve on trainval `rows`. `held_out` rows (labels `held_out_y`): a CV fold, scored by
    sklearn's average precision (as `cross_val_score`); otherwise the weights are kept for the test set."""

    key: tuple               # (k or "full", sample, class) for a test model, plus the fold index for CV
    rows: np.ndarray
    y: np.ndarray
    held_out: np.ndarray | None = None
    held_out_y: np.ndarray | None = None


def _cv_jobs(key: tuple, rows: np.ndarray, y: np.ndarray, folds: int) -> list[_PathJob]:
    """`cross_val_score(cv=folds)`'s splits (StratifiedKFold, unshuffled) of one training set."""
    from sklearn.model_selection import StratifiedKFold

    return [_PathJob(key + (f,), rows[tr], y[tr], held_out=rows[te], held_out_y=y[te])
            for f, (tr, te) in enumerate(StratifiedKFold(folds).split(rows, y))]


def _solve_all(jobs: list[_PathJob], X: np.ndarray, Xb32: np.ndarray, cfg: LowShotSvmConfig, seed: int):
    """Solve every job in one thread pool, largest first (so two threads stay busy to the end).

    Returns {key: float32 weights (n_costs, d + 1)} for test models and {key: CV APs (n_costs,)} for folds.
    """
    from joblib import Parallel, delayed
    from sklearn.metrics import average_precision_score

    def solve(job: _PathJob):
        W = _solve_path(Xb32[job.rows], job.y, cfg.costs, cfg.positive_weight, cfg.tol, cfg.max_iter, seed)
        if job.held_out is None:
            return job.key, W.astype(np.float32)
        decision = add_bias(X[job.held_out]) @ W.T
        return job.key, np.array([average_precision_score(job.held_out_y, decision[:, j])
                                  for j in range(len(cfg.costs))])

    jobs = sorted(jobs, key=lambda job: -len(job.rows))  # stable: ties keep their order
    out = Parallel(n_jobs=cfg.n_jobs, prefer="threads")(delayed(solve)(job) for job in jobs)
    weights = {key: v for key, v in out if v.ndim == 2}
    return weights, {key: v for key, v in out if v.ndim == 1}


def _test_aps(weights: dict, Xt_b32: np.ndarray, test_labels: np.ndarray, cfg: LowShotSvmConfig,
              chunk: int = 48) -> dict:
    """Test AP of every cost of every model: {key: (n_costs,)}. The scores of `chunk` models come from
    one float32 matrix product (instead of ~900 thin float64 ones); class c's models are scored against
    test labels column c (key[2])."""
    from joblib import Parallel, delayed

    eleven = cfg.ap == "voc07_11point"
    keys = list(weights)

    def score(part):
        S = Xt_b32 @ np.concatenate([weights[key] for key in part]).T
        n = len(cfg.costs)
        return [(key, voc07_ap_columns(S[:, i * n:(i + 1) * n], test_labels[:, key[2]], eleven_point=eleven))
                for i, key in enumerate(part)]

    parts = Parallel(n_jobs=cfg.n_jobs, prefer="threads")(
        delayed(score)(keys[i:i + chunk]) for i in range(0, len(keys), chunk))
    return {key: aps for part in parts for key, aps in part}


def lowshot_svm_eval(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                     test_labels: np.ndarray, cfg: LowShotSvmConfig, *, seed: int = 0,
                     class_names: Sequence[str] | None = None) -> LowShotResult:
    """The whole protocol on features: (N, D) features and (N, C) VOC labels (1 / -1 / 0)."""
    if cfg.solver == "sklearn":
        return reference_lowshot_svm(train_feats, train_labels, test_feats, test_labels, cfg, seed=seed,
                                     class_names=class_names)
    from threadpoolctl import threadpool_limits

    X = l2_normalize(train_feats)
    Xb32 = add_bias(X).astype(np.float32)
    Xt_b32 = add_bias(l2_normalize(test_feats)).astype(np.float32)
    n_classes = train_labels.shape[1]
    names = list(class_names or range(n_classes))
    negatives = cfg.negatives_per_positive if cfg.negatives_per_positive is not None else n_classes - 1
    result = LowShotResult()

    def y_of(c, rows):  # class c's training labels: present 1, anything else -1 (as VISSL)
        return np.where(train_labels[rows, c] == 1, 1.0, -1.0)

    # Every SVM path of the protocol: (k, sample, class) low-shot models (and their CV folds when the cost
    # is chosen by CV), then the full-data model and its CV folds per class.
    jobs, skipped = [], {}
    for k in cfg.ks:
        for s in range(cfg.num_samples):
            for c, idx in enumerate(sample_lowshot(train_labels, k, negatives * k, sample_rng(seed, s, k))):
                if idx is None:
                    skipped.setdefault(k, set()).add(c)
                    continue
                jobs.append(_PathJob((k, s, c), idx, y_of(c, idx)))
                if cfg.cost_selection == "cv" and min(cfg.cv_folds, k) >= 2:
                    jobs += _cv_jobs((k, s, c), idx, jobs[-1].y, min(cfg.cv_folds, k))
    usable = [c for c in range(n_classes) if (train_labels[:, c] == 1).sum() >= cfg.cv_folds] if cfg.full else []
    every = np.arange(len(X))
    for c in usable:
        jobs.append(_PathJob(("full", 0, c), every, y_of(c, every)))
        if cfg.cost_selection != "test":
            jobs += _cv_jobs(("full", 0, c), every, jobs[-1].y, cfg.cv_folds)

    with threadpool_limits(limits=1, user_api="blas"):  # the pool's threads are the parallelism
        weights, cv_aps = _solve_all(jobs, X, Xb32, cfg, seed)
        test_ap = _test_aps(weights, Xt_b32, test_labels, cfg)

    fold_aps: dict[tuple, list[np.ndarray]] = {}
    for fold_key, v in cv_aps.items():
        fold_aps.setdefault(fold_key[:3], []).append(v)

    def cv_choice(key):  # index of the cost with the best mean CV AP over the folds
        return int(np.argmax(np.mean(fold_aps[key], axis=0)))

    for k in cfg.ks:
        missing = sorted(skipped.get(k, ()))
        if missing:
            result.notes.append(f"k={k} skipped for class(es) {[names[c] for c in missing]}: fewer than {k} "
                                f"positives or {negatives * k} negatives in {cfg.train_split}")
        kept = [c for c in range(n_classes) if c not in missing]
        if not kept:
            continue
        ap = np.array([[test_ap[(k, s, c)] for c in kept] for s in range(cfg.num_samples)])  # (s, c, costs)
        if cfg.cost_selection == "cv" and min(cfg.cv_folds, k) >= 2:
            values = [100 * np.mean([ap[s, i, cv_choice((k, s, c))] for i, c in enumerate(kept)])
                      for s in range(cfg.num_samples)]
            result.chosen_cost[str(k)] = "per class (cv)"
        else:
            if cfg.cost_selection == "cv":
                result.notes.append(f"k={k}: {k} positive(s) cannot be cross-validated; cost chosen by the "
                                    "best mean test mAP")
            per_sample_cost = ap.mean(axis=1)  # (samples, costs) mAP
            best = int(np.argmax(per_sample_cost.mean(axis=0)))
            values = list(100 * per_sample_cost[:, best])
            result.chosen_cost[str(k)] = cfg.costs[best]
        result.map_values[str(k)] = [float(v) for v in values]

    if cfg.full:  # k = full: every trainval image, difficult-only ones as negatives (as VISSL's SVMTrainer)
        if len(usable) < n_classes:
            result.notes.append(f"k=full skipped for class(es) {[names[c] for c in range(n_classes) if c not in usable]}"
                                f": fewer than {cfg.cv_folds} positives")
        if usable:
            aps = np.stack([test_ap[("full", 0, c)] for c in usable])  # (classes, costs)
            if cfg.cost_selection == "test":
                best = int(np.argmax(aps.mean(axis=0)))
                result.map_values["full"] = [float(100 * aps[:, best].mean())]
                result.chosen_cost["full"] = cfg.costs[best]
            else:
                picks = [cv_choice(("full", 0, c)) for c in usable]
                result.map_values["full"] = [float(100 * np.mean([aps[i, p] for i, p in enumerate(picks)]))]
                result.chosen_cost["full"] = {names[c]: cfg.costs[p] for c, p in zip(usable, picks)}
    return result


# ------------------------------------------------------------------------------- serial reference

def reference_lowshot_svm(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                          test_labels: np.ndarray, cfg: LowShotSvmConfig, *, seed: int = 0,
                          class_names: Sequence[str] | None = None) -> LowShotResult:
    """The protocol written plainly with scikit-learn, one SVM after another, as VISSL runs it.

    Slow on purpose: it is what `lowshot_svm_eval` must agree with. Same samples, same selection rules.
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import LinearSVC

    def svm(cost):
        return LinearSVC(C=cost, class_weight={1: cfg.positive_weight, -1: 1}, loss="squared_hinge",
                         penalty="l2", dual=True, max_iter=cfg.max_iter, tol=cfg.tol, intercept_scaling=1.0,
                         random_state=seed)

    ap_of = _ap_function(cfg)
    X, Xt = l2_normalize(train_feats), l2_normalize(test_feats)
    n_classes = train_labels.shape[1]
    names = list(class_names or range(n_classes))
    negatives = cfg.negatives_per_positive if cfg.negatives_per_positive is not None else n_classes - 1
    result = LowShotResult()
    for k in cfg.ks:
        samples = [sample_lowshot(train_labels, k, negatives * k, sample_rng(seed, s, k))
                   for s in range(cfg.num_samples)]
        kept = [c for c in range(n_classes) if samples[0][c] is not None]
        missing = [c for c in range(n_classes) if samples[0][c] is None]
        if missing:
            result.notes.append(f"k={k} skipped for class(es) {[names[c] for c in missing]}: fewer than {k} "
                                f"positives or {negatives * k} negatives in {cfg.train_split}")
        if not kept:
            continue
        test_map = np.zeros((cfg.num_samples, len(cfg.costs)))  # VISSL's sample_ap_matrix
        cv_maps = []
        for s in range(cfg.num_samples):
            cv_aps = []
            for c in kept:
                idx = samples[s][c]
                y = np.where(train_labels[idx, c] == 1, 1, -1)
                for j, cost in enumerate(cfg.costs):
                    model = svm(cost).fit(X[idx], y)
                    test_map[s, j] += ap_of(model.decision_function(Xt), test_labels[:, c]) / len(kept)
                if cfg.cost_selection == "cv" and min(cfg.cv_folds, k) >= 2:
                    folds = min(cfg.cv_folds, k)
                    cv = [cross_val_score(svm(cost), X[idx], y, cv=folds, scoring="average_precision").mean()
                          for cost in cfg.costs]
                    best_model = svm(cfg.costs[int(np.argmax(cv))]).fit(X[idx], y)
                    cv_aps.append(ap_of(best_model.decision_function(Xt), test_labels[:, c]))
            cv_maps.append(np.mean(cv_aps) if cv_aps else np.nan)
        if cfg.cost_selection == "cv" and min(cfg.cv_folds, k) >= 2:
            result.map_values[str(k)] = [float(100 * v) for v in cv_maps]
            result.chosen_cost[str(k)] = "per class (cv)"
        else:
            if cfg.cost_selection == "cv":
                result.notes.append(f"k={k}: {k} positive(s) cannot be cross-validated; cost chosen by the "
                                    "best mean test mAP")
            best = int(np.argmax(test_map.mean(axis=0)))
            result.map_values[str(k)] = [float(100 * v) for v in test_map[:, best]]
            result.chosen_cost[str(k)] = cfg.costs[best]

    if cfg.full:
        usable = [c for c in range(n_classes) if (train_labels[:, c] == 1).sum() >= cfg.cv_folds]
        if len(usable) < n_classes:
            result.notes.append(f"k=full skipped for class(es) {[names[c] for c in range(n_classes) if c not in usable]}"
                                f": fewer than {cfg.cv_folds} positives")
        if usable:
            aps = np.zeros((len(usable), len(cfg.costs)))
            picks = []
            for i, c in enumerate(usable):
                y = np.where(train_labels[:, c] == 1, 1, -1)
                cv = []
                for j, cost in enumerate(cfg.costs):
                    if cfg.cost_selection != "test":
                        cv.append(cross_val_score(svm(cost), X, y, cv=cfg.cv_folds,
                                                  scoring="average_precision").mean())
                    aps[i, j] = ap_of(svm(cost).fit(X, y).decision_function(Xt), test_labels[:, c])
                picks.append(int(np.argmax(cv)) if cv else None)
            if cfg.cost_selection == "test":
                best = int(np.argmax(aps.mean(axis=0)))
                result.map_values["full"] = [float(100 * aps[:, best].mean())]
                result.chosen_cost["full"] = cfg.costs[best]
            else:
                result.map_values["full"] = [float(100 * np.mean([aps[i, p] for i, p in enumerate(picks)]))]
                result.chosen_cost["full"] = {names[c]: cfg.costs[p] for c, p in zip(usable, picks)}
    return result


# ------------------------------------------------------------------------------------------- run

def _devkit_root(root: Path) -> Path:
    return root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root


def result_metrics(result: LowShotResult) -> dict:
    """Record metrics `mAP@k1` ... `mAP@full` with mean/std/min/max/n, VISSL's std and the chosen cost."""
    from hexa_zoo.records import metric

    out = {}
    for k, values in result.map_values.items():
        m = metric(values)
        m["std_ddof0"] = float(np.std(values))
        m["cost"] = result.chosen_cost.get(k)
        out[f"mAP@{k}" if k == "full" else f"mAP@k{k}"] = m
    return out


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """The VOC07 low-shot SVM benchmark of `model` on a VOCdevkit (`data`: "embedded" or its path)."""
    from transfer.datasets import read_voc, voc_classes, voc_image_labels

    from .features import EvalTransform, extract_features

    clock = RunClock()
    cfg = resolve_config(LowShotSvmConfig, PRESETS, preset, overrides)
    seed_everything(seed)
    trunk, info = load_model(model)
    root = resolve_data(data)
    devkit = _devkit_root(root)
    classes = list(voc_classes(devkit, cfg.year))
    train_imgs = read_voc(devkit, cfg.year, cfg.train_split)
    test_imgs = read_voc(devkit, cfg.year, cfg.test_split)
    train_labels = np.asarray(voc_image_labels(train_imgs, classes))
    test_labels = np.asarray(voc_image_labels(test_imgs, classes))
    tf = EvalTransform.for_model(info, cfg.resize, cfg.crop, square=cfg.square_resize)
    train_paths, test_paths = [Path(i.path) for i in train_imgs], [Path(i.path) for i in test_imgs]
    kwargs = dict(weights_sha256=info["weights_sha256"], batch_size=cfg.batch_size, device=cfg.device or None)
    train_f = extract_features(trunk, train_paths, tf, desc="svm trainval", **kwargs).features.numpy()
    test_f = extract_features(trunk, test_paths, tf, desc="svm test", **kwargs).features.numpy()

    result = lowshot_svm_eval(train_f, train_labels, test_f, test_labels, cfg, seed=seed, class_names=classes)
    metrics = result_metrics(result)
    log.info("lowshot-svm: %s", ", ".join(f"{n}={m['mean']:.2f}" for n, m in metrics.items()))
    dataset = dataset_record(data, root, dataset_fingerprint(train_paths + test_paths),
                             splits={cfg.train_split: len(train_paths), cfg.test_split: len(test_paths)},
                             classes=classes, year=cfg.year)
    name = "embedded" if dataset["name"] == "embedded" else f"voc{cfg.year[-2:]}"
    notes = [f"cost selection: {cfg.cost_selection}; AP: {cfg.ap}; solver: {cfg.solver}"] + result.notes
    return finish_record(protocol="lowshot-svm", benchmark=benchmark_name(name, "lowshot-svm"), out=out,
                         model_info=info, dataset=dataset, config=cfg, metrics=metrics, seed=seed,
                         preset=preset, clock=clock, notes=notes)
