"""Benchmark: the many-shot C sweep, ours (warm-started, parallel L-BFGS) against the serial scikit-learn sweep.

Both sweep C = 1 / wd over ssl-transfer's 45 values of logspace(-6, 5) on the same fixed synthetic features
(DTD-sized by default: 1880 train, 1880 validation and 1880 test images, 47 classes, 2048-d non-negative
features like pooled ResNet-50 res5), choose the first best C on validation and refit on train + val.
Goal: ours at least 5x faster at the same chosen C and the same test accuracy.

    python bench/manyshot_sweep.py                  # DTD-sized (the reference takes minutes)
    python bench/manyshot_sweep.py --quick          # 600 / 600 / 600 images, 512-d, 20 classes

Figures are printed last as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from transfer.protocols.manyshot.logreg_sweep import fast_sweep, sklearn_sweep, ssl_transfer_costs
from transfer.metrics import top1_accuracy


def synthetic_features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative features with class structure shared across splits (prototypes from a fixed seed)."""
    structure = np.random.default_rng(1234)
    prototypes = structure.normal(size=(classes, dim)) * 0.3
    basis = structure.normal(size=(32, dim)) * 0.4
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    z = prototypes[labels] + rng.normal(size=(n, 32)) @ basis + 0.8 * rng.normal(size=(n, dim))
    return np.maximum(z, 0).astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n, dim, classes = (600, 512, 20) if args.quick else (1880, 2048, 47)
    train, val, test = (synthetic_features(n, dim, classes, s) for s in (0, 1, 2))
    costs = ssl_transfer_costs(45)
    load_before = os.getloadavg()[0]

    start = time.perf_counter()
    ours_scores, ours_best = fast_sweep(*train, *val, costs, top1_accuracy, classes, n_jobs=args.n_jobs,
                                        device=args.device)
    ours_s = time.perf_counter() - start
    print(f"ours: {ours_s:.1f} s, C = {costs[ours_best]:.4g}", flush=True)
    start = time.perf_counter()
    ref_scores, ref_best = sklearn_sweep(*train, *val, costs, top1_accuracy)
    ref_s = time.perf_counter() - start
    print(f"serial scikit-learn: {ref_s:.1f} s, C = {costs[ref_best]:.4g}", flush=True)

    # Test accuracy of each at its chosen C (refit on train + val), each with its own solver.
    from transfer.protocols.manyshot.logreg_sweep import fit_once
    import torch

    trainval = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    model = fit_once(*trainval, costs[ours_best], classes, device=args.device)
    with torch.no_grad():
        ours_test = top1_accuracy(test[1], model(torch.as_tensor(test[0], dtype=torch.float64, device=args.device)).cpu().numpy())
    ref_test = sklearn_sweep(*trainval, *test, [costs[ref_best]], top1_accuracy)[0][0]
    print(json.dumps({"bench": "manyshot_sweep", "quick": args.quick, "n": n, "dim": dim, "classes": classes,
                      "cpus": os.cpu_count(), "device": args.device, "n_jobs": args.n_jobs,
                      "load_avg_at_start": round(load_before, 2), "load_avg_at_end": round(os.getloadavg()[0], 2),
                      "ours_s": round(ours_s, 2), "sklearn_s": round(ref_s, 2), "speedup": round(ref_s / ours_s, 2),
                      "C_ours": costs[ours_best], "C_sklearn": costs[ref_best], "same_C": ours_best == ref_best,
                      "val_top1_max_abs_diff": round(float(np.max(np.abs(np.subtract(ours_scores, ref_scores)))), 3),
                      "test_top1_ours": round(ours_test, 3), "test_top1_sklearn": round(ref_test, 3)}))


if __name__ == "__main__":
    main()
