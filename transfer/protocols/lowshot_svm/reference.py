"""The low-shot SVMs solved plainly with scikit-learn, one LinearSVC after another, as VISSL runs them.

Slow on purpose: it is what the fast solver (`svm_solver.py` beside it) must agree with. It solves the same
plan (`lowshot_svm.plan_svms`: the same samples) and hands its APs to the same cost selection, so comparing
the two checks the solver alone. Used by `--set solver=sklearn`, tests/test_transfer_frozen.py and
bench/lowshot_svm.py.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...metrics import voc07_ap
from .svm_solver import l2_normalize


def reference_aps(models: Sequence[Any], train_feats: np.ndarray, test_feats: np.ndarray, test_labels: np.ndarray,
                  cfg: Any, seed: int) -> tuple[dict, dict]:
    """({key: test AP per cost}, {key: mean CV AP per cost}) of each planned model (`key`, `rows`, `y`,
    `cv_folds`), by scikit-learn's LinearSVC with VISSL's constants from `cfg`."""
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import LinearSVC

    def svm(cost):
        return LinearSVC(C=cost, class_weight={1: cfg.positive_weight, -1: 1}, loss="squared_hinge",
                         penalty="l2", dual=True, max_iter=cfg.max_iter, tol=cfg.tol, intercept_scaling=1.0,
                         random_state=seed)

    eleven = cfg.ap == "voc07_11point"
    X, Xt = l2_normalize(train_feats), l2_normalize(test_feats)
    test_ap, cv_ap = {}, {}
    for model in models:
        x, y, labels = X[model.rows], model.y.astype(int), test_labels[:, model.key[2]]
        test_ap[model.key] = np.array([voc07_ap(svm(cost).fit(x, y).decision_function(Xt), labels,
                                                eleven_point=eleven) for cost in cfg.costs])
        if model.cv_folds:
            cv_ap[model.key] = np.array([cross_val_score(svm(cost), x, y, cv=model.cv_folds,
                                                         scoring="average_precision").mean()
                                         for cost in cfg.costs])
    return test_ap, cv_ap
