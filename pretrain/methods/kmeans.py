"""Spherical k-means over a memory bank, distributed the way swav's DeepCluster-v2 does it.

swav `main_deepclusterv2.py: cluster_memory`: for each prototype head, rank 0 picks K initial centroids
among its own memory bank and broadcasts them; each iteration assigns every embedding to the centroid
with the largest dot product (E step), then sums and counts per cluster are all-reduced and the
centroids become the normalised means (M step; an empty cluster keeps its centroid). After the last
iteration one more E step gives the final assignments, which are all-gathered together with the
dataset indices of the bank, so every rank holds the assignment of every image seen (-100 otherwise).
Head h clusters the bank of crop `h % n_crops` (crops 0 and 1 alternate), as swav does.

Without an initialised process group everything runs in one process with the same result.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..processes import distributed

IGNORE_INDEX = -100


def initial_centroids(local_embeddings: Tensor, k: int) -> Tensor:
    """K rows of rank 0's bank chosen by `torch.randperm` (global RNG), broadcast to every rank.

    swav asserts the bank holds at least K embeddings; with fewer we repeat rows (drawn with replacement),
    whose duplicates then stay empty clusters. `DeepClusterV2.adapt_to_data` avoids this case.
    """
    centroids = torch.empty(k, local_embeddings.shape[1], device=local_embeddings.device,
                            dtype=local_embeddings.dtype)
    if not distributed() or dist.get_rank() == 0:
        n = local_embeddings.shape[0]
        if n == 0:
            raise ValueError("cannot pick k-means centroids from an empty memory bank")
        idx = torch.randperm(n)[:k]
        if len(idx) < k:
            idx = torch.cat([idx, torch.randint(n, (k - len(idx),))])
        centroids = local_embeddings[idx.to(local_embeddings.device)].clone()
    if distributed():
        dist.broadcast(centroids, 0)
    return centroids


def spherical_kmeans(embeddings: Tensor, centroids: Tensor, iters: int = 10) -> tuple[Tensor, Tensor]:
    """Run `iters` iterations from `centroids`; returns (centroids (K, D), assignments (N,)).

    embeddings: (N, D) L2-normalised rows of this rank's bank. In a process group, sums and counts are
    all-reduced so every rank computes the same centroids from all ranks' data.
    """
    centroids = centroids.clone()
    k = centroids.shape[0]
    for n_iter in range(iters + 1):
        assignments = (embeddings @ centroids.t()).max(dim=1).indices  # E step
        if n_iter == iters:
            break
        counts = torch.bincount(assignments, minlength=k).to(embeddings.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, embeddings)
        if distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        centroids = F.normalize(centroids, dim=1)
    return centroids, assignments


def _all_gather_cat(t: Tensor) -> Tensor:
    if not distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts)


@torch.no_grad()
def cluster_memory(memory_embeddings: Tensor, memory_index: Tensor, nmb_prototypes: Sequence[int],
                   dataset_size: int, iters: int = 10) -> tuple[list[Tensor], Tensor]:
    """Cluster a memory bank once per head: (centroids per head, assignments (heads, dataset_size)).

    memory_embeddings: (n_crops, M, D) normalised embeddings of this rank; memory_index: (M,) their dataset
    indices, negative for slots not filled yet (left out). Every rank must pass banks of the same M.
    assignments[h, i] is image i's cluster for head h, or -100 if no rank has it in its bank.
    """
    filled = memory_index >= 0
    gathered_index = _all_gather_cat(memory_index)
    assignments = torch.full((len(nmb_prototypes), dataset_size), IGNORE_INDEX, dtype=torch.long)
    all_centroids = []
    for head, k in enumerate(nmb_prototypes):
        bank = memory_embeddings[head % memory_embeddings.shape[0]]
        local = bank[filled]
        centroids, local_assign = spherical_kmeans(local, initial_centroids(local, k), iters)
        all_centroids.append(centroids)
        full = torch.full((bank.shape[0],), IGNORE_INDEX, dtype=torch.long, device=bank.device)
        full[filled] = local_assign
        gathered = _all_gather_cat(full)
        seen = gathered_index >= 0
        assignments[head][gathered_index[seen].cpu()] = gathered[seen].cpu()
    return all_centroids, assignments
