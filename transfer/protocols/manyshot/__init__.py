"""Many-shot linear transfer to 11 datasets, as ssl-transfer's `linear.py` (Ericsson et al., CVPR 2021).

The frozen trunk in eval mode gives global-average-pooled features of Resize(224, bicubic) + CenterCrop(224)
images (cached). A multinomial L-BFGS logistic regression is fitted for each C = 1 / wd, wd in
logspace(-6, 5, 45); the C with the best validation score (the official validation split of Aircraft, DTD,
Flowers and VOC2007, else a seeded 20% of train) is refitted on train + validation and scored on test.
Metrics as published: mean per-class accuracy (Aircraft, Caltech101, Flowers, Pets), 11-point mAP of
per-class binary fits (VOC2007), top-1 (the rest). The sweep is warm-started and parallel
(`logreg_sweep.py` beside it); `--set solver=sklearn` runs ssl-transfer's serial scikit-learn sweep instead.

    hexa transfer manyshot --model moco_v2_r50 --dataset dtd --data /data/dtd --out results/ --preset paper
    hexa transfer manyshot --model hexa_moco_r18.embedded --dataset embedded --data embedded --out results/
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ...common import benchmark_name, resolve_config
from ...metrics import MANYSHOT_SCORES
from .logreg_sweep import fast_sweep, fit_once, sklearn_sweep, ssl_transfer_costs
from ...readers.manyshot import LAYOUTS, WITH_VALIDATION, ManyShotData, read_manyshot, split_validation
from ...runner import ProtocolRun

log = logging.getLogger(__name__)

DATASETS = tuple(name for name in LAYOUTS if name != "embedded")


@dataclass(frozen=True)
class ManyShotConfig:
    dataset: str = ""             # one of readers.manyshot.LAYOUTS (--dataset NAME); the embedded preset: embedded
    resize: int = 224             # ssl-transfer: Resize(224, bicubic) + CenterCrop(224)
    crop: int = 224
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    wd_values: int = 45           # wd in logspace(-6, 5, wd_values)
    val_fraction: float = 0.2     # held out of train where there is no validation split
    val_seed: int = 0             # ssl-transfer: np.random.seed(0)
    max_iter: int = 1000          # L-BFGS iterations per fit (scikit-learn's sweep: the same cap)
    solver: Literal["fast", "sklearn"] = "fast"
    n_jobs: int = 0               # threads of the fast sweep; 0: one per two CPU cores (at least one)
    train_list: str = ""          # Caltech101 / SUN397 split lists (default: beside the data)
    test_list: str = ""
    batch_size: int = 64
    device: str = ""


PRESETS: dict[str, ManyShotConfig] = {
    "paper": ManyShotConfig(),
    # 64 px images; a coarser grid (8 values of the same range) and 100 L-BFGS steps keep it to a minute on 2 cores.
    "embedded": ManyShotConfig(dataset="embedded", resize=64, crop=64, wd_values=8, max_iter=100, batch_size=100),
}


# -------------------------------------------------------------------------------------------- protocol

def sweep_and_test(train_x, train_y, val_x, val_y, test_x, test_y, data: ManyShotData, cfg: ManyShotConfig,
                   device) -> tuple[float, float, list[float]]:
    """(test score at the chosen C, the chosen C, validation score per C)."""
    costs = ssl_transfer_costs(cfg.wd_values)
    score = MANYSHOT_SCORES[data.metric]
    multilabel = data.metric == "mAP"
    if cfg.solver == "sklearn":
        scores, best = sklearn_sweep(train_x, train_y, val_x, val_y, costs, score, multilabel=multilabel)
    else:
        scores, best = fast_sweep(train_x, train_y, val_x, val_y, costs, score, len(data.classes),
                                  multilabel=multilabel, max_iter=cfg.max_iter,
                                  n_jobs=cfg.n_jobs or max(1, (os.cpu_count() or 2) // 2), device=device)
    trainval_x, trainval_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    if cfg.solver == "sklearn":
        test_scores, _ = sklearn_sweep(trainval_x, trainval_y, test_x, test_y, [costs[best]], score,
                                       multilabel=multilabel)
        return test_scores[0], costs[best], scores
    import torch

    model = fit_once(trainval_x, trainval_y, costs[best], len(data.classes), multilabel=multilabel,
                     max_iter=cfg.max_iter, device=device)
    with torch.no_grad():
        decision = model(torch.as_tensor(test_x, dtype=torch.float64, device=device)).cpu().numpy()
    return score(test_y, decision), costs[best], scores


def run(model: str, data: str, out: str | Path, *, preset: str = "embedded", overrides: Sequence[str] = (),
        seed: int = 0) -> dict:
    """Many-shot linear transfer of `model` to one dataset (`--set dataset=NAME`, or `--dataset NAME`)."""
    # A missing folder gets its dataset's layout hint at once (not the plain "does not exist"), before the model
    # loads; so does an unknown dataset name.
    cfg = resolve_config(ManyShotConfig, PRESETS, preset, overrides)
    if str(data) != "embedded" and not Path(data).expanduser().exists() or cfg.dataset not in LAYOUTS:
        read_manyshot(cfg.dataset, Path(data).expanduser())
    run = ProtocolRun.start("manyshot", ManyShotConfig, PRESETS, model, data, preset=preset, overrides=overrides,
                            seed=seed)
    root = run.root
    dataset = read_manyshot(cfg.dataset, root, train_list=cfg.train_list, test_list=cfg.test_list)
    sizes = {"train": len(dataset.train.labels), "test": len(dataset.test.labels)}
    if dataset.val is not None:
        sizes["val"] = len(dataset.val.labels)
    run.use_data(root, dataset.files, fingerprint_root=root, dataset=cfg.dataset, splits=sizes,
                 num_classes=len(dataset.classes), metric=dataset.metric)
    tf = run.transform(cfg.resize, cfg.crop, interpolation=cfg.interpolation)
    train_f = run.features(dataset.train.images, tf, desc=f"{cfg.dataset} train").numpy()
    test_f = run.features(dataset.test.images, tf, desc=f"{cfg.dataset} test").numpy()
    if dataset.val is not None:
        val_f, val_y = run.features(dataset.val.images, tf, desc=f"{cfg.dataset} val").numpy(), dataset.val.labels
        fit_f, fit_y = train_f, dataset.train.labels
        val_note = "the official validation split"
    else:
        fit_rows, val_rows = split_validation(len(train_f), cfg.val_fraction, cfg.val_seed)
        fit_f, fit_y, val_f, val_y = (train_f[fit_rows], dataset.train.labels[fit_rows], train_f[val_rows],
                                      dataset.train.labels[val_rows])
        val_note = f"a seeded {cfg.val_fraction:.0%} of train (np.random.seed({cfg.val_seed}) shuffle)"
    test_score, cost, val_scores = sweep_and_test(fit_f, fit_y, val_f, val_y, test_f, dataset.test.labels, dataset,
                                                  cfg, run.device)
    log.info("manyshot %s: %s %.2f at C=%.4g", cfg.dataset, dataset.metric, test_score, cost)
    name = "embedded" if str(data) == "embedded" else cfg.dataset
    metric = {"mean": test_score, "std": 0.0, "n": 1, "values": [test_score], "C": cost}
    notes = [f"metric: {dataset.metric}; C chosen on {val_note} among {cfg.wd_values} values, then refit on "
             f"train + val; solver: {cfg.solver}",
             "validation score per C: " + ", ".join(f"{c:.3g}: {s:.2f}" for c, s in
                                                      zip(ssl_transfer_costs(cfg.wd_values), val_scores))]
    if cfg.dataset in WITH_VALIDATION and dataset.val is None:
        notes.append("no validation split found: a held-out part of train was used")
    return run.finish(benchmark_name(name, "manyshot"), out, {dataset.metric: metric}, notes=notes)
