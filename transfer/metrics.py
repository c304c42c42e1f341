"""Metrics shared by the transfer protocols: VOC average precision, top-k accuracy and the many-shot scores.

VOC labels follow the VOCdevkit convention (what `transfer.readers.voc.voc_image_labels` returns):
1 = the class is present, -1 = absent, 0 = present only as "difficult" objects, which VOC07
evaluation ignores (neither a hit nor a miss).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each image in order of decreasing score (difficult images dropped).

    Ties keep a stable order (the order of the input), like VOCdevkit's sort.
    """
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    fp = np.cumsum(~positive[order])
    n_pos = positive.sum()
    recall = tp / n_pos if n_pos else np.zeros_like(tp, dtype=np.float64)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return precision, recall


def voc07_ap(scores: np.ndarray, labels: np.ndarray, *, eleven_point: bool = True) -> float:
    """Average precision of one class, as a fraction in [0, 1].

    `eleven_point=True` is VOC2007's metric: the mean over recall thresholds t = 0, 0.1, ..., 1 of the
    best precision at recall >= t. `eleven_point=False` is the all-points area under the
    monotone precision envelope (VOC2010+, and what VISSL's `get_precision_recall` computes).
    A class with no positive image has AP 0.
    """
    precision, recall = precision_recall(scores, labels)
    if recall.size == 0 or recall[-1] == 0:
        return 0.0
    if eleven_point:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = recall >= t - 1e-12
            ap += (precision[above].max() if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def voc07_ap_columns(scores: np.ndarray, labels: np.ndarray, *, eleven_point: bool = True) -> np.ndarray:
    """`voc07_ap` of every column of an (N, M) score matrix against one (N,) label vector, vectorised.

    The low-shot SVM scores thousands of (class, cost) models; this is the same computation as
    calling `voc07_ap` per column, done as whole-matrix sorts and cumulative sums.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).ravel()
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    n_pos = int(positive.sum())
    if n_pos == 0 or scores.shape[0] == 0:
        return np.zeros(scores.shape[1])
    hits = positive[np.argsort(-scores, axis=0, kind="stable")]
    tp = np.cumsum(hits, axis=0)
    precision = tp / np.arange(1, len(hits) + 1)[:, None]
    if eleven_point:
        recall = tp / n_pos
        return sum(np.where(recall >= t - 1e-12, precision, 0.0).max(axis=0) for t in np.linspace(0, 1, 11)) / 11.0
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    return (hits * envelope).sum(axis=0) / n_pos


def voc07_map(scores: np.ndarray, labels: np.ndarray, *, eleven_point: bool = True) -> tuple[float, np.ndarray]:
    """Mean AP over classes for (N, C) scores and labels; returns (mAP, per-class AP), both fractions."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    aps = np.array([voc07_ap(scores[:, c], labels[:, c], eleven_point=eleven_point)
                    for c in range(labels.shape[1])])
    return float(aps.mean()), aps


def topk_accuracy(logits: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent for each k (k larger than the number of classes counts as all-correct)."""
    logits, targets = torch.as_tensor(logits), torch.as_tensor(targets).long()
    if logits.shape[0] == 0:
        raise ValueError("top-k accuracy of an empty set")
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == targets[:, None]
    return {k: 100.0 * hit[:, :min(k, kmax)].any(dim=1).float().mean().item() for k in ks}


# ------------------------------------------------------------------- many-shot scores (ssl-transfer's)

def top1_accuracy(labels: np.ndarray, decision: np.ndarray) -> float:
    return float(100.0 * np.mean(np.asarray(decision).argmax(axis=1) == labels))


def mean_per_class_accuracy(labels: np.ndarray, decision: np.ndarray) -> float:
    """The mean over the classes present in `labels` of the fraction of their images predicted right."""
    pred = np.asarray(decision).argmax(axis=1)
    return float(100.0 * np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


def eleven_point_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """ssl-transfer's `voc_ap` over scikit-learn's precision_recall_curve: mean over t in 0, 0.1, ..., 1 of
    the best precision at recall >= t (the curve's closing point, recall 0 and precision 1, included)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def mean_ap(labels: np.ndarray, decision: np.ndarray) -> float:
    return float(100.0 * np.mean([eleven_point_ap(labels[:, k], decision[:, k]) for k in range(labels.shape[1])]))


MANYSHOT_SCORES = {"top1": top1_accuracy, "mean_per_class": mean_per_class_accuracy, "mAP": mean_ap}
