"""Loss functions of the pre-training methods, as pure functions of tensors (no state, no modules).

- MoCo's InfoNCE: logits of a query against its positive key and the queue of negatives; with a hard
  target (the positive) or a soft one (HEXA's CutMix query, scored against the keys of the whole batch
  followed by the queue, target lambda on key i and 1 - lambda on key perm(i)).
- DeepCluster-v2's cross-entropy of prototype scores / T against k-means assignments, averaged over
  prototype heads, with -100 marking images that have no assignment yet; and its soft (CutMix) form.

Logits are computed in float32 so the functions behave the same under autocast.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def moco_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """The official MoCo logits `[q.k_i ; q.queue] / T`, shape (B, 1 + K); the positive is column 0.

    q, k: (B, D) L2-normalised; queue: (D, K) L2-normalised columns (the official layout).
    """
    q, k, queue = q.float(), k.float(), queue.float()
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue
    return torch.cat([l_pos, l_neg], dim=1) / temperature


def batch_queue_logits(q: Tensor, keys: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """Logits of each query against every key of the batch, then the queue: (B, B + K) = `[q.keys^T ; q.queue] / T`."""
    q, keys, queue = q.float(), keys.float(), queue.float()
    return torch.cat([q @ keys.t(), q @ queue], dim=1) / temperature


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over rows of `-sum_j target_ij log softmax(logits)_ij`.

    Rows whose target sums to zero carry no label and are left out of the mean (the soft analogue of
    ignore_index); if no row has a label the result is 0, still attached to the graph.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    per_row = -(target.float() * log_p).sum(dim=1)
    labelled = target.sum(dim=1) > 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return per_row[labelled].mean()


def info_nce(logits: Tensor, target: Tensor | None = None) -> Tensor:
    """InfoNCE = cross-entropy over contrastive logits.

    target None: the positive is column 0 (MoCo's layout). A long tensor (B,): hard targets.
    A float tensor (B, C): soft targets (see `soft_cross_entropy`).
    """
    if target is None:
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    if target.is_floating_point():
        return soft_cross_entropy(logits, target)
    return F.cross_entropy(logits.float(), target)


def mixed_targets(first: Tensor, second: Tensor, lam: float, num_classes: int) -> Tensor:
    """`lam * onehot(first) + (1 - lam) * onehot(second)`, shape (B, num_classes).

    A row where either label is IGNORE_INDEX is all zeros, so `soft_cross_entropy` skips it.
    """
    valid = (first != IGNORE_INDEX) & (second != IGNORE_INDEX)
    target = torch.zeros(first.shape[0], num_classes, device=first.device)
    rows = torch.nonzero(valid).squeeze(1)
    target[rows, first[rows]] += lam
    target[rows, second[rows]] += 1.0 - lam
    return target


def prototype_cross_entropy(scores: Sequence[Tensor], targets: Sequence[Tensor], temperature: float) -> Tensor:
    """DeepCluster-v2's loss: the mean over heads h of CE(scores[h] / T, targets[h]).

    scores[h]: (N, K_h) dot products of normalised embeddings with head h's prototypes.
    targets[h]: (N,) long assignments with IGNORE_INDEX for unassigned images (hard, as in swav's
    `nn.CrossEntropyLoss(ignore_index=-100)`), or (N, K_h) float soft targets (CutMix).
    """
    if len(scores) != len(targets) or not scores:
        raise ValueError(f"need one target per head, got {len(scores)} score and {len(targets)} target tensors")
    total = 0.0
    for s, t in zip(scores, targets):
        logits = s.float() / temperature
        if t.is_floating_point():
            total = total + soft_cross_entropy(logits, t)
        elif bool((t != IGNORE_INDEX).any()):
            total = total + F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX)
        else:  # every target ignored: F.cross_entropy would return nan (0 / 0)
            total = total + logits.sum() * 0.0
    return total / len(scores)
