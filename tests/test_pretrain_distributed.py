"""Two CPU processes (gloo, file:// rendezvous): shuffle BN, distributed k-means, MoCo and DeepCluster in DDP.

One spawned job runs every check and writes its findings to JSON; the tests below read them.
"""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

WORLD = 2
N_BANK = 12  # bank slots per rank in the k-means check


def make_bank():
    """A global bank (2 crops, 2 * N_BANK slots) with shuffled dataset indices and two empty slots."""
    g = torch.Generator().manual_seed(21)
    centers = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    labels = torch.randint(0, 3, (2, WORLD * N_BANK), generator=g)
    bank = F.normalize(centers[labels] + 0.3 * torch.randn(2, WORLD * N_BANK, 8, generator=g), dim=2)
    index = torch.randperm(30, generator=g)[:WORLD * N_BANK]
    index[[5, 17]] = -1
    return bank, index


def _flat(module_or_tensors):
    tensors = module_or_tensors if isinstance(module_or_tensors, list) else list(module_or_tensors.parameters())
    return torch.cat([t.detach().float().flatten() for t in tensors])


def _spread(t):
    """Largest difference of a tensor across ranks."""
    parts = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(parts, t.contiguous())
    return max((p - parts[0]).abs().max().item() for p in parts)


def _moco_steps(rank, hexa):
    """MoCo: different initial weights per rank; DDP and setup_distributed must make them one model."""
    from pretrain.methods.moco import MoCo, MocoConfig

    torch.manual_seed(rank)
    moco = MoCo(MocoConfig(queue_size=16, hidden_dim=32), hexa, "resnet18", 64)
    moco.setup_distributed()
    opt = torch.optim.SGD(moco.param_groups(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    for _ in range(2):
        views = [torch.rand(4, 3, 32, 32, generator=g) for _ in range(2)]
        opt.zero_grad()
        logs = moco.training_step(views, torch.arange(4), lambda loss: loss.backward())
        opt.step()
        moco.on_step_end()
    return {"moco_loss": logs["loss"],
            "moco_spread": {"encoder_q": _spread(_flat(moco.encoder_q)), "encoder_k": _spread(_flat(moco.encoder_k)),
                            "queue": _spread(moco.queue)},
            "moco_moved": _flat(moco.encoder_q.trunk).sub(_flat(moco.encoder_k.trunk)).abs().max().item()}


def _deepcluster_steps(rank, hexa):
    """DeepCluster: epoch 0 fills the per-rank banks, epoch 1 clusters them together and trains."""
    from pretrain.methods.deepcluster import DeepClusterConfig, DeepClusterV2

    torch.manual_seed(rank)
    dc = DeepClusterV2(DeepClusterConfig(hidden_mlp=32, feat_dim=16, nmb_prototypes=(3, 4), freeze_prototypes_epochs=0),
                       hexa, "resnet18", 16)
    dc.setup_distributed()
    opt = torch.optim.SGD(dc.param_groups(), lr=0.05, momentum=0.9)
    data = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for epoch in range(2):
        dc.on_epoch_start(epoch)
        for step in range(2):
            idx = torch.arange(16).view(WORLD, 2, 4)[rank, step]  # a DistributedSampler's split
            crops = [data[idx], data[idx].flip(3), F.interpolate(data[idx], size=16)]
            opt.zero_grad()
            logs = dc.training_step(crops, idx, lambda loss: loss.backward())
            opt.step()
            dc.on_step_end()
    return {"dc_loss": logs["loss"], "dc_assigned": int((dc.assignments >= 0).all(dim=1).sum()),
            "dc_spread": {"online": _spread(torch.cat([_flat(m) for m in dc.network.children()])),
                          "assignments": _spread(dc.assignments.float())}}


def swav_scores() -> torch.Tensor:
    """12 samples' cosine scores against 5 prototypes (each rank takes 6)."""
    g = torch.Generator().manual_seed(11)
    return F.normalize(torch.randn(12, 8, generator=g), dim=1) @ F.normalize(torch.randn(5, 8, generator=g), dim=1).t()


def _swav_steps(rank):
    """HEXA_SwAV under DDP with a queue: the ranks' networks stay one model."""
    from pretrain.methods.hard_views import HardViewConfig
    from pretrain.methods.swav import SwAV, SwavConfig

    torch.manual_seed(rank)
    cfg = SwavConfig(hidden_mlp=32, feat_dim=16, nmb_prototypes=6, queue_length=16, queue_start_epoch=0)
    swav = SwAV(cfg, HardViewConfig(enabled=True), "resnet18")
    swav.setup_distributed()
    opt = torch.optim.SGD(swav.param_groups(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(2000 + rank)
    for _ in range(3):
        x = torch.rand(4, 3, 32, 32, generator=g)
        opt.zero_grad()
        logs = swav.training_step([x, x.flip(3), F.interpolate(x, size=16)], torch.arange(4), lambda l: l.backward())
        opt.step()
    return {"swav_loss": logs["loss"], "swav_spread": _spread(torch.cat([_flat(m) for m in swav.network.children()])),
            "swav_queue_filled": int((swav.queue.abs().sum(-1) > 0).sum())}


def _worker(rank, init_file, out_dir):
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    from pretrain.methods.hard_views import HardViewConfig
    from pretrain.methods.kmeans import cluster_memory
    from pretrain.methods.moco import batch_shuffle_ddp, batch_unshuffle_ddp, concat_all_gather

    res = {}
    # shuffle BN across ranks
    torch.manual_seed(100 + rank)
    x = (torch.arange(6.0) + 10 * rank).view(6, 1).repeat(1, 3)
    shuffled, unshuffle = batch_shuffle_ddp(x)
    res["unshuffle_restores"] = torch.equal(batch_unshuffle_ddp(shuffled, unshuffle), x)
    before, after = concat_all_gather(x), concat_all_gather(shuffled)
    res["shuffle_is_a_permutation"] = sorted(after[:, 0].tolist()) == sorted(before[:, 0].tolist())
    res["shuffle_mixes_ranks"] = bool((shuffled[:, 0] >= 10).any() and (shuffled[:, 0] < 10).any())

    # distributed k-means on this rank's half of the bank
    bank, index = make_bank()
    mine = slice(rank * N_BANK, (rank + 1) * N_BANK)
    torch.manual_seed(7)
    cents, assign = cluster_memory(bank[:, mine], index[mine], (3, 4), 30, 5)
    res["kmeans_assignments"] = assign.tolist()
    res["kmeans_centroids"] = [c.tolist() for c in cents]

    # SwAV's Sinkhorn codes on this rank's half of the scores, sums all-reduced
    from pretrain.methods.swav import sinkhorn

    scores = swav_scores()
    res["sinkhorn"] = sinkhorn(scores[rank * 6:(rank + 1) * 6], 0.05, 3).tolist()
    res.update(_swav_steps(rank))

    # augment.pipeline=auto: rank 0 measures gpu faster, rank 1 cpu; rank 0's figures decide for both
    from pretrain.data.pipeline_choice import PipelineChoice, broadcast_from_rank0

    readings = iter((0.0, 4.0, 10.0, 11.0) if rank == 0 else (0.0, 1.0, 10.0, 20.0))
    choice = PipelineChoice(None, 4, clock=lambda: next(readings), broadcast=broadcast_from_rank0(torch.device("cpu")))
    for step in range(8):
        choice.step_done(step, 8)
    res["pipeline_choice"] = [choice.chosen, choice.img_per_s]

    for suffix, hexa in (("", HardViewConfig(enabled=True)), ("_aux", HardViewConfig(enabled=True, aux_bn=True))):
        res.update({k + suffix: v for k, v in _moco_steps(rank, hexa).items()})
        res.update({k + suffix: v for k, v in _deepcluster_steps(rank, hexa).items()})
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(str(out / "rendezvous"), str(out)), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_shuffle_bn_across_ranks_undoes_its_permutation(ranks):
    for r in ranks:
        assert r["unshuffle_restores"] and r["shuffle_is_a_permutation"]
    assert any(r["shuffle_mixes_ranks"] for r in ranks)


def test_auto_pipeline_decision_is_rank0s_on_every_rank(ranks):
    # rank 0 timed cpu 4 s and gpu 1 s for 16 images each; rank 1 the other way round
    assert [r["pipeline_choice"] for r in ranks] == [["gpu", {"cpu": 4.0, "gpu": 16.0}]] * WORLD


def test_distributed_kmeans_equals_single_process(ranks):
    from pretrain.methods.kmeans import spherical_kmeans

    bank, index = make_bank()
    torch.manual_seed(7)  # rank 0 drew the initial centroids from its own half, head after head
    expected = torch.full((2, 30), -100, dtype=torch.long)
    for head, k in enumerate((3, 4)):
        rank0 = bank[head, :N_BANK][index[:N_BANK] >= 0]
        init = rank0[torch.randperm(len(rank0))[:k]]
        filled = index >= 0
        cents, assign = spherical_kmeans(bank[head][filled], init, 5)
        expected[head, index[filled]] = assign
        for r in ranks:
            assert torch.allclose(torch.tensor(r["kmeans_centroids"][head]), cents, atol=1e-5)
    for r in ranks:
        assert torch.equal(torch.tensor(r["kmeans_assignments"]), expected)


@pytest.mark.parametrize("aux", ["", "_aux"], ids=["shared_bn", "aux_bn"])
def test_moco_ddp_keeps_ranks_in_sync(ranks, aux):
    for r in ranks:  # with aux_bn, encoder_q includes the twins: their gradients are averaged too
        assert r["moco_spread" + aux] == {"encoder_q": 0.0, "encoder_k": 0.0, "queue": 0.0}
        assert r["moco_moved" + aux] > 0  # the query encoder did train
    assert ranks[0]["moco_loss" + aux] != ranks[1]["moco_loss" + aux]  # on different data


@pytest.mark.parametrize("aux", ["", "_aux"], ids=["shared_bn", "aux_bn"])
def test_deepcluster_ddp_clusters_all_ranks_and_keeps_them_in_sync(ranks, aux):
    for r in ranks:
        assert r["dc_spread" + aux] == {"online": 0.0, "assignments": 0.0}
        assert r["dc_assigned" + aux] == 2  # both heads assign every image, whichever rank embedded it
        assert r["dc_loss" + aux] > 0


def test_distributed_sinkhorn_equals_one_process_and_swav_ranks_stay_in_sync(ranks):
    from pretrain.methods.swav import sinkhorn

    expected = sinkhorn(swav_scores(), 0.05, 3)
    got = torch.cat([torch.tensor(r["sinkhorn"]) for r in ranks])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for r in ranks:
        assert r["swav_spread"] == 0.0 and r["swav_loss"] > 0
        assert r["swav_queue_filled"] == 2 * 8  # two assigned crops, 8 of 8 slots per rank after two batches of 4
