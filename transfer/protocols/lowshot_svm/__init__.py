"""VOC07 low-shot linear SVMs on frozen features (Goyal et al. 2019; VISSL's implementation).

What we follow, read from facebookresearch/vissl:
- `extra_scripts/create_low_shot_samples.py`: 5 independent samples of k in {1, 2, 4, 8, 16, 32, 64, 96}
  positives and 19k negatives per class (`sampling.py` beside it).
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
- AP: VISSL's `svm_utils/evaluate.py` `calculate_ap` (and the fair_self_supervision_benchmark) take the area
  under the precision envelope at every recall step (`ap="all_points"`, the paper preset; it reproduces
  VISSL to 1e-15); VOC2007's 11-point AP (`ap="voc07_11point"`, preset `paper_11point`) reads 1-3 mAP
  apart. The reported numbers are percentages.
- Features: VISSL's VOC07 configs pool res5 with AvgPool2d(6, 1) to 2x2 and flatten (8192-d for a
  ResNet-50; `pooling="vissl_res5"`, the paper preset); global average pooling (2048-d, `pooling="gap"`) is
  the named variant `paper_gap`.
- Spread: VISSL prints numpy's population std over the samples; the paper preset's `std` is that
  (`std_ddof=0`), and both `std_ddof0` and `std_ddof1` are kept in every record.

A k that needs more positives or negatives than a class has in trainval is skipped for that class
(its mAP@k averages the remaining classes) and said so in the record's notes.

Speed: VISSL fits 8,800 low-shot SVMs and 880 cross-validation SVMs one after another. `plan_svms` lists
every SVM the protocol trains; the fast path (`solver="fast"`) solves each one's cost path with the
liblinear port in `svm_solver.py`, all in one thread pool, largest first, and scores the test set
with one float32 matrix product per batch of models; `solver="sklearn"` solves the same plan one LinearSVC
after another (`reference.py`). Both hand their APs to the same `summarise`, so the
cost rules are written once and the reference checks only the solver (tests/test_transfer_frozen.py,
bench/lowshot_svm.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ...common import benchmark_name
from ...readers.voc import read_voc, voc_classes, voc_image_labels
from .sampling import sample_lowshot, sample_rng
from .reference import reference_aps
from ...metrics import voc07_ap_columns
from ...runner import ProtocolRun
from .svm_solver import add_bias, l2_normalize, solve_path

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
    ap: Literal["voc07_11point", "all_points"] = "all_points"
    pooling: Literal["vissl_res5", "gap"] = "vissl_res5"
    std_ddof: int = 0                            # the `std` reported: 0 population (VISSL), 1 sample
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
    "paper": LowShotSvmConfig(),                                 # VISSL: all-points AP, res5 2x2 pooling
    "paper_gap": LowShotSvmConfig(pooling="gap"),                # our earlier features: 2048-d GAP
    "paper_11point": LowShotSvmConfig(ap="voc07_11point"),       # VOC2007's 11-point AP
    # The embedded VOC scenes: 400 trainval, 10 classes (~100 positives each), so k stops at 32.
    "embedded": LowShotSvmConfig(ks=(1, 2, 4, 8, 16, 32), resize=128, crop=128),
}


def embedded_sizes(share: float) -> dict:
    """The embedded preset's settings at `share` (0-1) of its full size: fewer samples per k (at least 2)."""
    return {"num_samples": max(2, round(5 * share))}


# ------------------------------------------------------------------------------------------ plan

@dataclass(frozen=True)
class SvmModel:
    """One SVM of the protocol: class `key[2]`'s model on trainval `rows` (labels `y` in {-1, 1}), trained for
    every cost; `cv_folds` > 0 when its cost is chosen by that many folds of cross-validation."""

    key: tuple               # (k or "full", sample, class)
    rows: np.ndarray
    y: np.ndarray
    cv_folds: int = 0


@dataclass
class SvmPlan:
    """Every SVM the protocol trains, and the classes left out (too few images for a k, or for CV)."""

    models: list[SvmModel]
    skipped: dict[int, set[int]]
    usable_full: list[int]
    negatives: int


def plan_svms(train_labels: np.ndarray, cfg: LowShotSvmConfig, seed: int) -> SvmPlan:
    """The (k, sample, class) low-shot models and the full-data model of each class (difficult-only images
    are negatives there, as VISSL's SVMTrainer maps them)."""
    n_classes = train_labels.shape[1]
    negatives = cfg.negatives_per_positive if cfg.negatives_per_positive is not None else n_classes - 1

    def y_of(c, rows):  # class c's training labels: present 1, anything else -1 (as VISSL)
        return np.where(train_labels[rows, c] == 1, 1.0, -1.0)

    models, skipped = [], {}
    for k in cfg.ks:
        folds = min(cfg.cv_folds, k) if cfg.cost_selection == "cv" and min(cfg.cv_folds, k) >= 2 else 0
        for s in range(cfg.num_samples):
            for c, idx in enumerate(sample_lowshot(train_labels, k, negatives * k, sample_rng(seed, s, k))):
                if idx is None:
                    skipped.setdefault(k, set()).add(c)
                    continue
                models.append(SvmModel((k, s, c), idx, y_of(c, idx), folds))
    usable = [c for c in range(n_classes) if (train_labels[:, c] == 1).sum() >= cfg.cv_folds] if cfg.full else []
    every = np.arange(len(train_labels))
    for c in usable:
        models.append(SvmModel(("full", 0, c), every, y_of(c, every),
                               cfg.cv_folds if cfg.cost_selection != "test" else 0))
    return SvmPlan(models, skipped, usable, negatives)


# ---------------------------------------------------------------------------------- cost selection

@dataclass
class LowShotResult:
    """Per-k mAP values over samples (percent), the chosen costs, and notes."""

    map_values: dict[str, list[float]] = field(default_factory=dict)   # "1", ..., "full" -> values
    chosen_cost: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def select_cost(test_ap: np.ndarray, cv_ap: np.ndarray | None) -> tuple[list[float], np.ndarray | int]:
    """mAP (percent) of each sample and the cost chosen, from APs (samples, classes, costs).

    With `cv_ap` (same shape: mean CV AP of each cost) every class of every sample takes the cost of its best
    CV AP (returned as the (samples, classes) indices); without, the cost with the best test mAP averaged over
    the samples, for all classes (VISSL's low-shot rule; returned as one index).
    """
    if cv_ap is None:
        per_sample = test_ap.mean(axis=1)  # (samples, costs) mAP
        best = int(np.argmax(per_sample.mean(axis=0)))
        return [float(100 * v) for v in per_sample[:, best]], best
    picks = cv_ap.argmax(axis=2)
    classes = np.arange(test_ap.shape[1])
    return [float(100 * test_ap[s, classes, picks[s]].mean()) for s in range(len(test_ap))], picks


def summarise(plan: SvmPlan, test_ap: dict, cv_ap: dict, cfg: LowShotSvmConfig,
              class_names: Sequence[str] | None, n_classes: int) -> LowShotResult:
    """The reported mAP per k from every model's test AP per cost (and CV AP per cost where planned)."""
    names = list(class_names or range(n_classes))
    result = LowShotResult()
    for k in cfg.ks:
        missing = sorted(plan.skipped.get(k, ()))
        if missing:
            result.notes.append(f"k={k} skipped for class(es) {[names[c] for c in missing]}: fewer than {k} "
                                f"positives or {plan.negatives * k} negatives in {cfg.train_split}")
        kept = [c for c in range(n_classes) if c not in missing]
        if not kept:
            continue
        keys = [[(k, s, c) for c in kept] for s in range(cfg.num_samples)]
        ap = np.array([[test_ap[key] for key in row] for row in keys])  # (samples, classes, costs)
        use_cv = all(key in cv_ap for row in keys for key in row)
        if cfg.cost_selection == "cv" and not use_cv:
            result.notes.append(f"k={k}: {k} positive(s) cannot be cross-validated; cost chosen by the "
                                "best mean test mAP")
        values, chosen = select_cost(ap, np.array([[cv_ap[key] for key in row] for row in keys]) if use_cv else None)
        result.map_values[str(k)] = values
        result.chosen_cost[str(k)] = "per class (cv)" if use_cv else cfg.costs[chosen]
    if cfg.full:
        usable = plan.usable_full
        if len(usable) < n_classes:
            result.notes.append(f"k=full skipped for class(es) {[names[c] for c in range(n_classes) if c not in usable]}"
                                f": fewer than {cfg.cv_folds} positives")
        if usable:
            keys = [("full", 0, c) for c in usable]
            ap = np.array([[test_ap[key] for key in keys]])
            use_cv = cfg.cost_selection != "test"
            values, chosen = select_cost(ap, np.array([[cv_ap[key] for key in keys]]) if use_cv else None)
            result.map_values["full"] = values
            result.chosen_cost["full"] = ({names[c]: cfg.costs[p] for c, p in zip(usable, chosen[0])} if use_cv
                                          else cfg.costs[chosen])
    return result


# -------------------------------------------------------------------------------------- fast path

@dataclass(frozen=True)
class _PathJob:
    """One cost path to solve on trainval `rows`. `held_out` rows (labels `held_out_y`): a CV fold, scored by
    sklearn's average precision (as `cross_val_score`); otherwise the weights are kept for the test set."""

    key: tuple               # (k or "full", sample, class) for a test model, plus the fold index for CV
    rows: np.ndarray
    y: np.ndarray
    held_out: np.ndarray | None = None
    held_out_y: np.ndarray | None = None


def _jobs(model: SvmModel) -> list[_PathJob]:
    """The model's own path, and `cross_val_score(cv=folds)`'s splits (StratifiedKFold, unshuffled) of it."""
    from sklearn.model_selection import StratifiedKFold

    jobs = [_PathJob(model.key, model.rows, model.y)]
    if model.cv_folds:
        jobs += [_PathJob(model.key + (f,), model.rows[tr], model.y[tr], held_out=model.rows[te],
                          held_out_y=model.y[te])
                 for f, (tr, te) in enumerate(StratifiedKFold(model.cv_folds).split(model.rows, model.y))]
    return jobs


def _solve_all(jobs: list[_PathJob], X: np.ndarray, Xb32: np.ndarray, cfg: LowShotSvmConfig, seed: int):
    """Solve every job in one thread pool, largest first (so two threads stay busy to the end).

    Returns {key: float32 weights (n_costs, d + 1)} for test models and {key: CV APs (n_costs,)} for folds.
    """
    from joblib import Parallel, delayed
    from sklearn.metrics import average_precision_score

    def solve(job: _PathJob):
        W = solve_path(Xb32[job.rows], job.y, cfg.costs, cfg.positive_weight, cfg.tol, cfg.max_iter, seed)
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


def fast_aps(plan: SvmPlan, train_feats: np.ndarray, test_feats: np.ndarray, test_labels: np.ndarray,
             cfg: LowShotSvmConfig, seed: int) -> tuple[dict, dict]:
    """({key: test AP per cost}, {key: mean CV AP per cost}) of every planned model, by the fast solver."""
    from threadpoolctl import threadpool_limits

    X = l2_normalize(train_feats)
    Xb32 = add_bias(X).astype(np.float32)
    Xt_b32 = add_bias(l2_normalize(test_feats)).astype(np.float32)
    jobs = [job for model in plan.models for job in _jobs(model)]
    with threadpool_limits(limits=1, user_api="blas"):  # the pool's threads are the parallelism
        weights, fold_aps = _solve_all(jobs, X, Xb32, cfg, seed)
        test_ap = _test_aps(weights, Xt_b32, test_labels, cfg)
    by_model: dict[tuple, list[np.ndarray]] = {}
    for fold_key, v in fold_aps.items():
        by_model.setdefault(fold_key[:3], []).append(v)
    return test_ap, {key: np.mean(v, axis=0) for key, v in by_model.items()}


def lowshot_svm_eval(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                     test_labels: np.ndarray, cfg: LowShotSvmConfig, *, seed: int = 0,
                     class_names: Sequence[str] | None = None) -> LowShotResult:
    """The whole protocol on features: (N, D) features and (N, C) VOC labels (1 / -1 / 0)."""
    plan = plan_svms(train_labels, cfg, seed)
    if cfg.solver == "sklearn":
        test_ap, cv_ap = reference_aps(plan.models, train_feats, test_feats, test_labels, cfg, seed)
    else:
        test_ap, cv_ap = fast_aps(plan, train_feats, test_feats, test_labels, cfg, seed)
    return summarise(plan, test_ap, cv_ap, cfg, class_names, train_labels.shape[1])


# ------------------------------------------------------------------------------------------- run

def _devkit_root(root: Path) -> Path:
    return root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root


def result_metrics(result: LowShotResult, std_ddof: int = 0) -> dict:
    """Record metrics `mAP@k1` ... `mAP@full` with mean/std/min/max/n and the chosen cost; `std` with
    `std_ddof` (0: VISSL's population std), and both spreads by name."""
    from hexa_zoo.records import metric

    out = {}
    for k, values in result.map_values.items():
        m = metric(values)
        m["std_ddof0"] = float(np.std(values))
        m["std_ddof1"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        m["std"] = m["std_ddof0"] if std_ddof == 0 else m["std_ddof1"]
        m["cost"] = result.chosen_cost.get(k)
        out[f"mAP@{k}" if k == "full" else f"mAP@k{k}"] = m
    return out


@dataclass
class SceneFeatures:
    """The protocol's inputs: trunk features and VOC labels (1 / -1 / 0) of both splits, and their run."""

    run: ProtocolRun
    classes: list[str]
    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray


def scene_features(model: str, data: str, *, preset: str = "embedded", overrides: Sequence[str] = (),
                   seed: int = 0) -> SceneFeatures:
    """Features of a VOCdevkit's train and test splits (`data`: "embedded" or its path) for the protocol."""
    run = ProtocolRun.start("lowshot-svm", LowShotSvmConfig, PRESETS, model, data, preset=preset,
                            overrides=overrides, seed=seed)
    cfg = run.cfg
    root = run.root
    devkit = _devkit_root(root)
    classes = list(voc_classes(devkit, cfg.year))
    train_imgs = read_voc(devkit, cfg.year, cfg.train_split)
    test_imgs = read_voc(devkit, cfg.year, cfg.test_split)
    train_paths, test_paths = [Path(i.path) for i in train_imgs], [Path(i.path) for i in test_imgs]
    run.use_data(root, train_paths + test_paths, splits={cfg.train_split: len(train_paths),
                                                         cfg.test_split: len(test_paths)},
                 classes=classes, year=cfg.year)
    tf = run.transform(cfg.resize, cfg.crop, square=cfg.square_resize)
    return SceneFeatures(run, classes,
                         run.features(train_paths, tf, desc="svm trainval", pooling=cfg.pooling).numpy(),
                         np.asarray(voc_image_labels(train_imgs, classes)),
                         run.features(test_paths, tf, desc="svm test", pooling=cfg.pooling).numpy(),
                         np.asarray(voc_image_labels(test_imgs, classes)))


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """The VOC07 low-shot SVM benchmark of `model` on a VOCdevkit (`data`: "embedded" or its path)."""
    scenes = scene_features(model, data, preset=preset, overrides=overrides, seed=seed)
    cfg = scenes.run.cfg
    result = lowshot_svm_eval(scenes.train, scenes.train_labels, scenes.test, scenes.test_labels, cfg, seed=seed,
                              class_names=scenes.classes)
    metrics = result_metrics(result, cfg.std_ddof)
    log.info("lowshot-svm: %s", ", ".join(f"{n}={m['mean']:.2f}" for n, m in metrics.items()))
    name = "embedded" if scenes.run.dataset["name"] == "embedded" else f"voc{cfg.year[-2:]}"
    notes = [f"cost selection: {cfg.cost_selection}; AP: {cfg.ap}; features: {cfg.pooling} "
             f"({scenes.train.shape[1]}-d); std over samples with ddof {cfg.std_ddof}; solver: {cfg.solver}"] + result.notes
    return scenes.run.finish(benchmark_name(name, "lowshot-svm"), out, metrics, notes=notes)
