"""Benchmark: the VOC07 low-shot SVM protocol, ours against the plain serial scikit-learn reference.

Both run the full protocol (k in 1..96, 5 samples, 11 costs, VISSL's cost rules, plus the full-data SVM
with 3-fold CV) on the same fixed synthetic features of VOC07's size: 5011 trainval and 4952 test
images, 2048-d non-negative features (like pooled ResNet-50 res5), 20 classes with VOC07's trainval
class frequencies and some difficult-only labels. Goal: ours at least 10x faster, mAP equal within 0.1.

    python bench/lowshot_svm.py            # the full protocol (the reference takes tens of minutes)
    python bench/lowshot_svm.py --quick    # k in {1, 8, 96}, 2 samples: a few minutes
    python bench/lowshot_svm.py --embedded --reference primal
        # what `hexa demo` runs: the embedded scenes' real features (an untrained resnet18, timm's seed-0
        # initialisation; 400 trainval, 200 test, the embedded preset with 2 samples), our solver against
        # itself with the Gram-matrix path turned off (svm_solver.GRAM_MAX_ROWS = 0)

Figures are printed last as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from transfer.protocols.lowshot_svm import PRESETS, LowShotSvmConfig, lowshot_svm_eval, scene_features
from transfer.protocols.lowshot_svm import svm_solver

# VOC2007 trainval images per class (aeroplane ... tvmonitor), out of 5011.
VOC07_TRAINVAL_COUNTS = (238, 243, 330, 181, 244, 186, 713, 337, 445, 141, 200, 421, 287, 245, 2008, 245, 96,
                         229, 261, 256)


def synthetic_voc_features(n: int, dim: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, dim) float32 >= 0, labels (n, 20) in {1, -1, 0}) with VOC07-like statistics."""
    rng = np.random.default_rng(seed)
    structure = np.random.default_rng(1234)  # class prototypes shared by the trainval and test sets
    freq = np.array(VOC07_TRAINVAL_COUNTS) / 5011
    prototypes = structure.normal(size=(20, dim)) * 0.35
    basis = structure.normal(size=(64, dim)) * 0.5
    present = rng.random((n, 20)) < freq
    labels = np.where(present, 1, -1)
    labels[(rng.random((n, 20)) < 0.02) & ~present] = 0  # difficult-only
    z = present @ prototypes + rng.normal(size=(n, 64)) @ basis + 0.6 * rng.normal(size=(n, dim))
    return np.maximum(z, 0).astype(np.float32), labels


def embedded_scene_features():
    """The embedded scenes' features from resnet18 as timm initialises it under seed 0 (the demo's
    untrained trunk), and their labels: (train, train_labels, test, test_labels)."""
    import tempfile

    from orchestration.demo import untrained_trunk

    with tempfile.TemporaryDirectory() as tmp:
        scenes = scene_features(str(untrained_trunk("resnet18", 0, Path(tmp))), "embedded")
        return scenes.train, scenes.train_labels, scenes.test, scenes.test_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="k in {1, 8, 96}, 2 samples")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--embedded", action="store_true", help="the embedded scenes' features, as the demo runs it")
    parser.add_argument("--reference", choices=("sklearn", "primal"), default="sklearn",
                        help="sklearn: the serial scikit-learn reference; primal: ours without the Gram path")
    parser.add_argument("--skip-reference", action="store_true",
                        help="time ours only (the reference takes tens of minutes); no speedup is computed")
    args = parser.parse_args()
    cfg = LowShotSvmConfig(n_jobs=args.n_jobs)
    if args.quick:
        cfg = LowShotSvmConfig(ks=(1, 8, 96), num_samples=2, n_jobs=args.n_jobs)
    if args.embedded:
        train, train_labels, test, test_labels = embedded_scene_features()
        cfg = replace(PRESETS["embedded"], num_samples=2, n_jobs=args.n_jobs)
    else:
        train, train_labels = synthetic_voc_features(5011, seed=0)
        test, test_labels = synthetic_voc_features(4952, seed=1)

    lowshot_svm_eval(train[:60], train_labels[:60], test[:10], test_labels[:10],  # compile the kernels first
                     LowShotSvmConfig(ks=(1,), num_samples=1, full=False), seed=0)
    svm_solver.solve_path(np.ones((4, 3), np.float32), np.array([1.0, -1.0, 1.0, -1.0]), (1.0,), 2.0, 1e-4, 10, 0,
                          gram=False)  # the w path too: the warm-up above is small enough for the Gram path
    load_before = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    ours = lowshot_svm_eval(train, train_labels, test, test_labels, cfg, seed=0)
    ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    load_after_ours = os.getloadavg()[0]  # 1-minute load averages: other work on the machine skews timings
    print(f"ours: {ours_s:.1f} s ({ours_cpu:.1f} s CPU)", flush=True)
    if args.skip_reference:
        print(json.dumps({"bench": "lowshot_svm", "quick": args.quick, "reference": "skipped",
                          "load_avg_at_start": round(load_before, 2),
                          "load_avg_at_end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
                          "ours_s": round(ours_s, 2), "ours_cpu_s": round(ours_cpu, 2),
                          "map_ours": {k: round(float(np.mean(v)), 3) for k, v in ours.map_values.items()}}))
        return
    start, cpu = time.perf_counter(), time.process_time()
    if args.reference == "sklearn":
        ref = lowshot_svm_eval(train, train_labels, test, test_labels, replace(cfg, solver="sklearn"), seed=0)
    else:
        svm_solver.GRAM_MAX_ROWS = 0
        ref = lowshot_svm_eval(train, train_labels, test, test_labels, cfg, seed=0)
    ref_s, ref_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"reference ({args.reference}): {ref_s:.1f} s ({ref_cpu:.1f} s CPU)", flush=True)

    ours_map = {k: round(float(np.mean(v)), 3) for k, v in ours.map_values.items()}
    ref_map = {k: round(float(np.mean(v)), 3) for k, v in ref.map_values.items()}
    diffs = [abs(a - b) for k in ref.map_values for a, b in zip(ours.map_values[k], ref.map_values[k])]
    print(json.dumps({
        "bench": "lowshot_svm", "quick": args.quick, "reference": args.reference, "features": list(train.shape),
        "test": len(test), "classes": train_labels.shape[1], "data": "embedded" if args.embedded else "synthetic",
        "ks": list(cfg.ks), "samples": cfg.num_samples, "costs": len(cfg.costs), "cpus": os.cpu_count(),
        "load_avg_at_start": round(load_before, 2), "load_avg_after_ours": round(load_after_ours, 2),
        "load_avg_at_end": round(os.getloadavg()[0], 2),
        "ours_s": round(ours_s, 2), "reference_s": round(ref_s, 2), "speedup": round(ref_s / ours_s, 2),
        "ours_cpu_s": round(ours_cpu, 2), "reference_cpu_s": round(ref_cpu, 2),
        "cpu_time_ratio": round(ref_cpu / ours_cpu, 2),
        "max_abs_map_diff": round(max(diffs), 4), "same_costs": ours.chosen_cost == ref.chosen_cost,
        "map_ours": ours_map, "map_reference": ref_map}))


if __name__ == "__main__":
    main()
