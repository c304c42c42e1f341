"""The weighted k-nearest-neighbour vote on frozen features (InstDisc / DINO), shared by the kNN protocol
(`transfer/protocols/knn.py`) and pre-training's online monitor (`pretrain/loop/monitor.py`).

Features are L2-normalised, so the similarity is the cosine; each query's k most similar training
features vote for their class with weight exp(sim / T). Memory stays bounded on large sets: queries go in
chunks of `chunk_size`, and for each chunk the training set is scanned in chunks too, merging a running
top-k, so at most chunk_size x chunk_size similarities exist at once.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                num_classes: int, ks: Sequence[int], temperature: float = 0.07,
                chunk_size: int = 4096) -> dict[int, torch.Tensor]:
    """Class scores (n_test, num_classes) for each k, by the exp(sim / T)-weighted vote.

    Inputs need not be normalised (they are L2-normalised here). A k larger than the training set
    uses all training images. Runs on the device of `train_feats`.
    """
    device = train_feats.device
    train = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.to(device).long()
    kmax = min(max(ks), len(train))
    out = {k: torch.empty(len(test_feats), num_classes) for k in ks}
    for start in range(0, len(test_feats), chunk_size):
        query = F.normalize(test_feats[start:start + chunk_size].to(device).float(), dim=1)
        top_sim = torch.full((len(query), 0), float("-inf"), device=device)
        top_idx = torch.empty((len(query), 0), dtype=torch.long, device=device)
        for t0 in range(0, len(train), chunk_size):
            sim = query @ train[t0:t0 + chunk_size].T
            s, i = sim.topk(min(kmax, sim.shape[1]), dim=1)
            top_sim, order = torch.cat([top_sim, s], 1).topk(min(kmax, top_sim.shape[1] + s.shape[1]), dim=1)
            top_idx = torch.cat([top_idx, i + t0], 1).gather(1, order)
        weights = (top_sim / temperature).exp()
        neighbour_labels = labels[top_idx]
        for k in ks:
            kk = min(k, kmax)
            votes = torch.zeros(len(query), num_classes, device=device)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            out[k][start:start + len(query)] = votes.cpu()
    return out
