"""Pre-training methods: losses, hard views, k-means, MoCo-v2 and DeepCluster-v2 (one process, CPU)."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hexa_zoo.errors import ConfigError
from pretrain.methods import losses
from pretrain.methods.aux_bn import AuxBatchNorm
from pretrain.methods.deepcluster import DeepClusterConfig, DeepClusterV2
from pretrain.methods.hard_views import HardViewConfig, adversarial_view, cutmix, frozen_bn_stats
from pretrain.methods.kmeans import cluster_memory, spherical_kmeans
from pretrain.methods.moco import MoCo, MocoConfig, batch_shuffle_ddp, batch_unshuffle_ddp, shuffled_forward

HEXA = HardViewConfig(enabled=True)


def unit(*shape, dim=-1):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=dim)


# ---- losses -------------------------------------------------------------------------------------
def test_info_nce_matches_explicit_loop():
    torch.manual_seed(0)
    q, k, queue, t = unit(5, 8), unit(5, 8), unit(8, 11, dim=0), 0.2
    logits = losses.moco_logits(q, k, queue, t)
    expected = 0.0
    for i in range(5):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / t) for j in range(11))
        expected += -math.log(pos / (pos + neg)) / 5
    assert logits.shape == (5, 12)
    assert losses.info_nce(logits).item() == pytest.approx(expected, rel=1e-5)


def test_soft_info_nce_against_batch_keys_and_queue():
    torch.manual_seed(1)
    q, keys, queue, t, lam = unit(4, 6), unit(4, 6), unit(6, 7, dim=0), 0.2, 0.3
    perm = torch.tensor([2, 0, 3, 1])
    logits = losses.batch_queue_logits(q, keys, queue, t)
    target = losses.mixed_targets(torch.arange(4), perm, lam, logits.shape[1])
    expected = 0.0
    for i in range(4):
        row = [float(q[i] @ keys[j]) / t for j in range(4)] + [float(q[i] @ queue[:, j]) / t for j in range(7)]
        log_z = math.log(sum(math.exp(v) for v in row))
        expected += -(lam * (row[i] - log_z) + (1 - lam) * (row[int(perm[i])] - log_z)) / 4
    assert losses.info_nce(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_prototype_cross_entropy_matches_per_head_cross_entropy():
    torch.manual_seed(2)
    scores = [torch.randn(6, 5), torch.randn(6, 3)]
    targets = [torch.tensor([0, 4, -100, 2, 1, -100]), torch.tensor([2, 2, 0, -100, 1, 0])]
    expected = 0.0
    for s, tg in zip(scores, targets):
        keep = tg != -100
        expected += F.cross_entropy(s[keep] / 0.1, tg[keep]).item() / 2
    assert losses.prototype_cross_entropy(scores, targets, 0.1).item() == pytest.approx(expected, rel=1e-5)
    # soft one-hot targets (lam = 1) give the same value; rows with an unassigned image are skipped
    soft = [losses.mixed_targets(tg, tg, 1.0, s.shape[1]) for s, tg in zip(scores, targets)]
    assert losses.prototype_cross_entropy(scores, soft, 0.1).item() == pytest.approx(expected, rel=1e-5)
    # nothing assigned yet: zero, not nan
    nothing = [torch.full((6,), -100), torch.full((6,), -100)]
    assert losses.prototype_cross_entropy(scores, nothing, 0.1).item() == 0.0


# ---- hard views ---------------------------------------------------------------------------------
def small_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_step_size_defaults_and_validation():
    assert HardViewConfig().step_size == pytest.approx(1.25 * 4 / 255)
    assert HardViewConfig(steps=5).step_size == pytest.approx(2.5 * (4 / 255) / 5)
    assert HardViewConfig(alpha=0.1).step_size == 0.1
    assert HardViewConfig(enabled=True, aux_bn=True).use_aux_bn
    assert not HardViewConfig(enabled=False, aux_bn=True).use_aux_bn  # the baseline has no hard views
    with pytest.raises(ConfigError, match="steps"):
        HardViewConfig(steps=0)


@pytest.mark.parametrize("free", [False, True])
def test_adversarial_view_stays_in_ball_raises_loss_and_keeps_bn_stats(free):
    net = small_net().train()
    torch.manual_seed(4)
    x = torch.rand(16, 3, 12, 12)
    x[0] = 0.0  # pixels on the box edge must stay inside [0, 1]
    labels = torch.randint(0, 4, (16,))
    loss_fn = lambda v: F.cross_entropy(net(v), labels)  # noqa: E731
    cfg = HardViewConfig(enabled=True, eps=8 / 255, steps=1 if free else 3, random_start=not free)
    grad = None
    if free:
        probe = x.clone().requires_grad_(True)
        with frozen_bn_stats(net):
            grad, = torch.autograd.grad(loss_fn(probe), probe)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x_adv = adversarial_view(x, loss_fn, cfg, input_grad=grad, model=net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"attack changed {k}"
    assert (x_adv - x).abs().max() <= cfg.eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > cfg.eps / 2  # it did move
    with torch.no_grad(), frozen_bn_stats(net):
        assert loss_fn(x_adv) > loss_fn(x) + 1e-3


@pytest.mark.parametrize("random_start", [False, True])
def test_adversarial_view_from_an_overflowed_gradient_is_finite_and_in_the_ball(random_start):
    """An AMP-scaled input gradient that overflowed fp16 (inf) or went nan must not poison the view."""
    torch.manual_seed(5)
    x = torch.rand(4, 3, 6, 6) * 0.5 + 0.25  # away from 0 and 1: the expected step is not clipped
    grad = (torch.randn(4, 3, 6, 6) * 1e5).half()  # |g| > 65504 overflows to +-inf in fp16
    grad[0, 0, 0, 0], grad[1, 1, 1, 1] = float("nan"), float("-inf")
    assert torch.isinf(grad).sum() > 10 and torch.isnan(grad).sum() == 1

    def no_forward(_):
        raise AssertionError("a free one-step attack must not run a forward")

    cfg = HardViewConfig(enabled=True, eps=8 / 255, steps=1, random_start=random_start)
    x_adv = adversarial_view(x, no_forward, cfg, input_grad=grad)
    assert torch.isfinite(x_adv).all()
    assert (x_adv - x).abs().max() <= cfg.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    if not random_start:  # from x, one step of 1.25 eps clipped to the ball: x + eps * sign(g), nan -> no step
        g = grad.float()
        expected = x + cfg.eps * torch.where(torch.isnan(g), torch.zeros_like(g), torch.sign(g))
        assert torch.allclose(x_adv, expected, atol=1e-6)
        assert x_adv[0, 0, 0, 0] == x[0, 0, 0, 0] and x_adv[1, 1, 1, 1] == pytest.approx(x[1, 1, 1, 1] - cfg.eps)


def test_frozen_bn_stats_only_inside_the_context():
    net = small_net().train()
    bn = net[1]
    mean0 = bn.running_mean.clone()
    with frozen_bn_stats(net):
        net(torch.rand(4, 3, 8, 8))
    assert torch.equal(bn.running_mean, mean0) and int(bn.num_batches_tracked) == 0
    net(torch.rand(4, 3, 8, 8))
    assert not torch.equal(bn.running_mean, mean0) and int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_target_weights_equal_pasted_areas(seed):
    np.random.seed(seed)
    torch.manual_seed(seed)
    x = torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 20, 24).clone()  # image i is all (i + 1)
    mixed, perm, lam = cutmix(x, alpha=1.0)
    for i in range(8):
        own = (mixed[i, 0] == i + 1).float().mean().item()
        if int(perm[i]) == i:
            assert own == 1.0
        else:
            assert own == pytest.approx(lam)
            assert (mixed[i, 0] == int(perm[i]) + 1).float().mean().item() == pytest.approx(1 - lam)
    target = losses.mixed_targets(torch.arange(8), perm, lam, 8)
    assert torch.allclose(target.sum(1), torch.ones(8))


# ---- k-means ------------------------------------------------------------------------------------
def reference_spherical_kmeans(x, centroids, iters):
    """numpy loops: assign by max dot product; new centroid = normalised mean; empty keeps its centroid."""
    x, c = x.numpy().astype(np.float64), centroids.numpy().astype(np.float64).copy()
    for _ in range(iters):
        a = np.argmax(x @ c.T, axis=1)
        for j in range(len(c)):
            if (a == j).any():
                m = x[a == j].mean(0)
                c[j] = m / np.linalg.norm(m)
    return c, np.argmax(x @ c.T, axis=1)


def test_kmeans_on_separable_data_and_against_reference():
    g = torch.Generator().manual_seed(5)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    truth = torch.arange(4).repeat_interleave(25)
    x = F.normalize(centers[truth] + 0.05 * torch.randn(100, 16, generator=g), dim=1)
    init = x[[0, 25, 50, 75]]
    centroids, assign = spherical_kmeans(x, init, iters=10)
    assert torch.equal(assign, truth)
    assert torch.allclose(centroids, F.normalize(centers, dim=1), atol=0.05)
    # from a poor random start, against an independent implementation
    rand_init = x[torch.randperm(100, generator=g)[:6]]
    c, a = spherical_kmeans(x, rand_init, iters=10)
    c_ref, a_ref = reference_spherical_kmeans(x, rand_init, 10)
    assert np.array_equal(a.numpy(), a_ref)
    assert np.allclose(c.numpy(), c_ref, atol=1e-5)


def test_cluster_memory_maps_assignments_to_dataset_indices():
    g = torch.Generator().manual_seed(6)
    bank = F.normalize(torch.randn(2, 10, 8, generator=g), dim=2)
    index = torch.tensor([7, 3, 9, 0, 11, 5, 2, 8, -1, -1])  # two empty slots; images 1, 4, 6, 10 unseen
    torch.manual_seed(0)
    cents, assign = cluster_memory(bank, index, (3, 2), dataset_size=12, iters=4)
    assert assign.shape == (2, 12)
    unseen = [1, 4, 6, 10]
    assert (assign[:, unseen] == -100).all()
    for head in range(2):  # head h clusters the bank of crop h
        expected = (bank[head, :8] @ cents[head].t()).argmax(1)
        assert torch.equal(assign[head, index[:8]], expected)


# ---- MoCo ---------------------------------------------------------------------------------------
def tiny_moco(hard=HEXA, **kw):
    torch.manual_seed(0)
    return MoCo(MocoConfig(queue_size=kw.pop("queue_size", 32), hidden_dim=64, **kw), hard, "resnet18", 64)


def test_queue_enqueue_is_a_ring_buffer():
    m = tiny_moco(hard=HardViewConfig(), queue_size=10)
    old = m.queue.clone()
    keys = F.normalize(torch.randn(4, 128), dim=1)
    m.queue_ptr[0] = 8
    m._dequeue_and_enqueue(keys)
    assert torch.equal(m.queue[:, [8, 9, 0, 1]], keys.t())
    assert torch.equal(m.queue[:, 2:8], old[:, 2:8])
    assert int(m.queue_ptr) == 2


def test_momentum_update_matches_definition():
    m = tiny_moco(hard=HardViewConfig(), momentum=0.9)
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    q = [p.clone() for p in m.encoder_q.parameters()]
    k = [p.clone() for p in m.encoder_k.parameters()]
    buffers = [b.clone() for b in m.encoder_k.buffers()]
    m.on_step_end()
    for pk, k0, q0 in zip(m.encoder_k.parameters(), k, q):
        assert torch.allclose(pk, 0.9 * k0 + 0.1 * q0, atol=1e-6)
    assert all(torch.equal(b, b0) for b, b0 in zip(m.encoder_k.buffers(), buffers))


def test_shuffle_bn_unshuffle_undoes_its_permutation():
    torch.manual_seed(7)
    x = torch.randn(8, 5)
    shuffled, unshuffle = batch_shuffle_ddp(x)
    assert not torch.equal(shuffled, x)
    assert torch.equal(batch_unshuffle_ddp(shuffled, unshuffle), x)
    # sub-batch shuffle BN: with BN in eval mode (no batch coupling) the keys equal a plain forward
    m = tiny_moco(hard=HardViewConfig()).eval()
    imgs = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(shuffled_forward(m.encoder_k, imgs, 2), m.encoder_k(imgs), atol=1e-5)
        # in train mode the sub-batches really have their own statistics
        m.train()
        with frozen_bn_stats(m):
            assert not torch.allclose(shuffled_forward(m.encoder_k, imgs, 2), m.encoder_k(imgs), atol=1e-3)


def moco_eval_loss(m, x0, x1, queue):
    with torch.no_grad(), frozen_bn_stats(m):
        q = m._query(x0, wrapped=False)
        k = F.normalize(m.encoder_k(m.normalize(x1)), dim=1)
        return losses.info_nce(losses.moco_logits(q, k, queue, m.cfg.temperature)).item()


def test_moco_hexa_steps_reduce_the_loss():
    m = tiny_moco(queue_size=16, momentum=0.9)
    g = torch.Generator().manual_seed(8)
    x0 = torch.rand(8, 3, 32, 32, generator=g)
    x1 = x0.flip(3)
    queue = m.queue.clone()  # negatives held fixed: on one repeated batch the queue would fill with its own keys
    opt = torch.optim.SGD(m.param_groups(), lr=0.05, momentum=0.9)
    start = moco_eval_loss(m, x0, x1, queue)
    calls = []
    for _ in range(3):
        opt.zero_grad()
        logs = m.training_step([x0, x1], torch.arange(8), lambda loss: (calls.append(1), loss.backward()))
        opt.step()
        m.on_step_end()
        m.queue.copy_(queue)
    assert len(calls) == 9  # clean, adversarial and CutMix backward per step
    assert {"loss", "loss_clean", "loss_adv", "loss_cutmix"} <= set(logs)
    assert logs["loss"] == pytest.approx(logs["loss_clean"] + logs["loss_adv"] + logs["loss_cutmix"])
    assert moco_eval_loss(m, x0, x1, queue) < start - 0.05


def test_moco_adapt_shrinks_the_queue():
    fit = dict(dataset_size=100, batch_size=16, world_size=1, steps_per_epoch=6)
    section, notes = MoCo.adapt(MocoConfig(queue_size=65536), **fit)
    assert len(notes) == 1 and "queue_size" in notes[0]
    assert section.queue_size == 80
    assert MoCo.adapt(section, **fit) == (section, [])
    assert MoCo(section, HardViewConfig(), "resnet18").queue.shape == (128, 80)


def run_steps(m, views, n, opt_state=None):
    opt = torch.optim.SGD(m.param_groups(), lr=0.05, momentum=0.9)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    out = []
    for _ in range(n):
        opt.zero_grad()
        out.append(m.training_step(views, torch.arange(views[0].shape[0]), lambda loss: loss.backward()))
        opt.step()
        m.on_step_end()
    return out, opt.state_dict()


def test_moco_state_dict_round_trip_resumes_exactly():
    g = torch.Generator().manual_seed(9)
    views = [torch.rand(4, 3, 16, 16, generator=g) for _ in range(2)]
    a = tiny_moco()
    _, opt_state = run_steps(a, views, 1)
    b = tiny_moco()
    b.load_state_dict(a.state_dict())
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    torch.manual_seed(1), np.random.seed(1)
    logs_a, _ = run_steps(a, views, 1, opt_state)
    torch.manual_seed(1), np.random.seed(1)
    logs_b, _ = run_steps(b, views, 1, opt_state)
    assert logs_a == logs_b
    assert torch.equal(a.queue, b.queue) and int(a.queue_ptr) == int(b.queue_ptr) == 8


# ---- DeepCluster-v2 -----------------------------------------------------------------------------
def tiny_dcluster(hard=HEXA, n=16, **kw):
    torch.manual_seed(0)
    cfg = DeepClusterConfig(hidden_mlp=64, feat_dim=32, nmb_prototypes=kw.pop("nmb", (4, 3)),
                            freeze_prototypes_epochs=kw.pop("freeze", 0), **kw)
    method = DeepClusterV2(cfg, hard, "resnet18", n, steps_per_epoch=1)  # freeze counted in steps
    return method


def multicrop(x):
    small = x.shape[-1] // 2
    return [x, x.flip(3), F.interpolate(x, size=small, mode="bilinear", align_corners=False)]


def dcluster_epoch(m, data, epoch, batch=8, opt=None):
    m.on_epoch_start(epoch)
    logs = []
    for start in range(0, data.shape[0], batch):
        idx = torch.arange(start, start + batch)
        if opt is not None:
            opt.zero_grad()
        logs.append(m.training_step(multicrop(data[idx]), idx, lambda loss: loss.backward()))
        if opt is not None:
            opt.step()
        m.on_step_end()
    return logs


def test_deepcluster_epochs_fill_bank_then_cluster_into_prototypes():
    m = tiny_dcluster(hard=HardViewConfig())
    data = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    logs = dcluster_epoch(m, data, 0)
    assert all(entry["filling_memory"] == 1.0 for entry in logs)
    assert sorted(m.memory_index.tolist()) == list(range(16))
    assert (m.assignments == -100).all()
    bank = m.memory_embeddings.clone()
    torch.manual_seed(11)
    m.on_epoch_start(1)
    torch.manual_seed(11)
    cents, expected = cluster_memory(bank, m.memory_index, (4, 3), 16, 10)
    assert torch.equal(m.assignments, expected) and (m.assignments >= 0).all()
    for h, c in enumerate(cents):
        assert torch.allclose(m.prototypes.head(h).weight, c)
    # a resumed run calls on_epoch_start(1) again: the restored clustering must stay
    before = m.assignments.clone()
    m.memory_embeddings.normal_()
    m.on_epoch_start(1)
    assert torch.equal(m.assignments, before)


def dcluster_eval_loss(m, data):
    with torch.no_grad(), frozen_bn_stats(m):
        _, scores = m.network([m.normalize(v) for v in multicrop(data)])
        targets = [a.repeat(3) for a in m.assignments]
        return losses.prototype_cross_entropy(scores, targets, m.cfg.temperature).item()


def test_deepcluster_hexa_steps_reduce_the_loss_and_freeze_prototypes():
    m = tiny_dcluster(freeze=2, n=8)
    data = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    dcluster_epoch(m, data, 0)
    m.on_epoch_start(1)
    protos = [p.clone() for p in m.prototypes.parameters()]
    opt = torch.optim.SGD(m.param_groups(), lr=0.05, momentum=0.9)
    start = dcluster_eval_loss(m, data)
    for step in range(3):
        opt.zero_grad()
        logs = m.training_step(multicrop(data), torch.arange(8), lambda loss: loss.backward())
        opt.step()
        m.on_step_end()
        if step == 1:  # frozen for the first 2 iterations
            assert all(torch.equal(p, p0) for p, p0 in zip(m.prototypes.parameters(), protos))
    assert not all(torch.equal(p, p0) for p, p0 in zip(m.prototypes.parameters(), protos))
    assert {"loss", "loss_clean", "loss_adv", "loss_cutmix"} <= set(logs)
    assert dcluster_eval_loss(m, data) < start - 0.05


def test_deepcluster_adapt_and_state_dict_round_trip():
    section, notes = DeepClusterV2.adapt(DeepClusterConfig(nmb_prototypes=(3000, 5)), dataset_size=16, batch_size=8,
                                         world_size=1, steps_per_epoch=2)
    assert len(notes) == 1 and "nmb_prototypes[0]" in notes[0] and section.nmb_prototypes == (16, 5)
    m = tiny_dcluster(nmb=section.nmb_prototypes)
    assert m.prototypes.head(0).weight.shape == (16, 32) and m.nmb_prototypes == (16, 5)
    data = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    opt = torch.optim.SGD(m.param_groups(), lr=0.05)
    dcluster_epoch(m, data, 0, opt=opt)
    dcluster_epoch(m, data, 1, batch=8, opt=opt)
    other = tiny_dcluster(nmb=section.nmb_prototypes)
    other.load_state_dict(m.state_dict())
    for (name, ta), tb in zip(m.state_dict().items(), other.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert int(other.iteration) == 2 and int(other.assignments_epoch) == 1
    idx = torch.arange(8)
    results = []
    for model in (m, other):
        torch.manual_seed(2), np.random.seed(2)
        results.append(model.training_step(multicrop(data[idx]), idx, lambda loss: loss.backward()))
    assert results[0] == results[1]


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown architecture"):
        MoCo(MocoConfig(), HardViewConfig(), "no_such_net", 10)


def test_deepcluster_local_memory_state_round_trip():
    m = tiny_dcluster(hard=HardViewConfig())
    m.memory_embeddings.normal_(), m.memory_index.random_(0, 16), m.memory_ptr.fill_(5)
    other = tiny_dcluster(hard=HardViewConfig())
    other.load_local_memory_state(m.local_memory_state())
    for k in ("memory_embeddings", "memory_index", "memory_ptr"):
        assert torch.equal(getattr(other, k), getattr(m, k))


def test_a_timm_backbone_with_a_pre_logits_head_trains():
    torch.manual_seed(0)
    m = MoCo(MocoConfig(queue_size=8), HEXA, "mobilenetv3_small_050", 16)  # pooled output 1024, not 288
    assert m.encoder_q.head[0].in_features == m.trunk(torch.rand(2, 3, 32, 32)).shape[1] == 1024
    logs = m.training_step([torch.rand(4, 3, 32, 32) for _ in range(2)], torch.arange(4), lambda loss: loss.backward())
    assert math.isfinite(logs["loss"])


def test_aux_bn_forward_and_gradients_are_those_of_a_network_with_the_twins_bn():
    """Inside `active()` the network behaves exactly like a copy whose BN layers are the twins."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)).train()
    aux = AuxBatchNorm(net)
    for twin in aux.twins:  # make the twins differ from the main layers
        twin.weight.data.uniform_(0.5, 1.5)
        twin.bias.data.uniform_(-0.5, 0.5)
        twin.running_mean.uniform_(-1, 1)
    reference = copy.deepcopy(net)
    for i, layer in enumerate((1, 4)):
        reference[layer].load_state_dict(aux.twins[i].state_dict())
    main_params = [net[1].weight, net[4].bias]
    main_stats = net[1].running_mean.clone()
    x = torch.randn(5, 3, 8, 8)

    with aux.active():
        out = net(x)
    expected = reference(x)
    torch.testing.assert_close(out, expected)
    (out.square().sum() + aux.idle_main_term()).backward()
    expected.square().sum().backward()

    assert net[1].weight is main_params[0] and net[4].bias is main_params[1]  # swapped back
    for i, layer in enumerate((1, 4)):
        torch.testing.assert_close(aux.twins[i].weight.grad, reference[layer].weight.grad)
        torch.testing.assert_close(aux.twins[i].running_mean, reference[layer].running_mean)
        assert int(aux.twins[i].num_batches_tracked) == 1
        assert torch.count_nonzero(net[layer].weight.grad) == 0  # only the idle term's zero reached it
    torch.testing.assert_close(net[0].weight.grad, reference[0].weight.grad)
    torch.testing.assert_close(net[1].running_mean, main_stats)  # the main statistics never moved
    assert int(net[1].num_batches_tracked) == 0


@pytest.mark.parametrize("family", ["moco", "deepcluster"])
def test_aux_bn_steps_keep_hard_views_out_of_the_published_bn(family):
    """With hard_views.aux_bn the clean view alone updates the trunk's BN; the twins see both hard views."""
    from hexa_zoo.convert import to_timm

    torch.manual_seed(0)
    hexa = HardViewConfig(enabled=True, aux_bn=True)
    if family == "moco":
        method = MoCo(MocoConfig(queue_size=16, hidden_dim=32), hexa, "resnet18", 64)
        views = [torch.rand(8, 3, 32, 32) for _ in range(2)]
        trunk = method.encoder_q.trunk
    else:
        method = DeepClusterV2(DeepClusterConfig(hidden_mlp=32, feat_dim=16, nmb_prototypes=(3,),
                                                 freeze_prototypes_epochs=0), hexa, "resnet18", 8)
        views = [torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)]
        method.on_epoch_start(0)
        method.training_step(views, torch.arange(8), lambda loss: loss.backward())
        method.on_epoch_start(1)
        trunk = method.trunk
    method.train()
    opt = torch.optim.SGD([p for g in method.param_groups() for p in g["params"]], lr=0.1)
    tracked = int(trunk.bn1.num_batches_tracked)
    logs = method.training_step(views, torch.arange(8), lambda loss: loss.backward())
    opt.step()
    method.on_step_end()

    assert math.isfinite(logs["loss"]) and "loss_adv" in logs and "loss_cutmix" in logs
    assert int(trunk.bn1.num_batches_tracked) == tracked + 1          # the clean view
    assert int(method.hard_view_bn.twins[0].num_batches_tracked) == 2        # adversarial + CutMix (attacks frozen)
    assert method.hard_view_bn.twins[0].weight.grad.abs().sum() > 0
    assert any(p is method.hard_view_bn.twins[0].weight for g in method.param_groups() for p in g["params"])
    # the checkpoint's twins are not part of the trunk: conversion finds the same weights as the trunk
    converted = to_timm({"model": method.state_dict(), "arch": "resnet18"})
    assert converted.state_dict.keys() == trunk.state_dict().keys()
    torch.testing.assert_close(converted.state_dict["bn1.weight"], trunk.bn1.weight.detach())
