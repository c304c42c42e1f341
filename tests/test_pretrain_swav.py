"""SwAV and HEXA_SwAV: Sinkhorn codes against an independent computation, the swapped loss by hand, a tiny
run that learns, the queue, the official release layout, and the published models through timm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hexa_zoo.convert import to_timm
from pretrain.loop import trainer
from pretrain.methods.hard_views import HardViewConfig
from pretrain.methods.swav import SwAV, SwavConfig, sinkhorn, swapped_prediction_loss, swav_release

from test_pretrain_trainer import make_images, tiny_cfg


def sinkhorn_numpy(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """Sinkhorn-Knopp as the SwAV paper writes it (Q: K x B; rows to 1/K, columns to 1/B), in float64."""
    q = np.exp(scores / epsilon).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_sinkhorn_codes_against_an_independent_computation_and_their_marginals():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(40, 16, generator=g), dim=1) @ F.normalize(torch.randn(7, 16, generator=g), dim=1).t()
    codes = sinkhorn(scores, 0.05, 3)
    np.testing.assert_allclose(codes.numpy(), sinkhorn_numpy(scores.double().numpy(), 0.05, 3), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(codes.sum(1), torch.ones(40))       # each sample: a distribution
    long = sinkhorn(scores, 0.05, 200)                               # converged: each prototype 40/7 of the mass
    torch.testing.assert_close(long.sum(0), torch.full((7,), 40 / 7), rtol=1e-3, atol=1e-3)
    assert sinkhorn(scores.half(), 0.05, 3).isfinite().all()        # exp(1 / 0.05) would overflow fp16


def test_swapped_prediction_loss_by_hand():
    g = torch.Generator().manual_seed(1)
    scores = [torch.randn(3, 4, generator=g) for _ in range(3)]        # crops 0, 1 (assigned) and 2
    codes = [torch.softmax(torch.randn(3, 4, generator=g), 1) for _ in range(2)]
    T = 0.1

    def ce(q, s):  # mean over samples of -sum_k q log softmax(s / T)
        return float(np.mean([-sum(q[i, k] * (s[i] / T).log_softmax(0)[k] for k in range(4)) for i in range(3)]))

    by_hand = ((ce(codes[0], scores[1]) + ce(codes[0], scores[2])) / 2 +
               (ce(codes[1], scores[0]) + ce(codes[1], scores[2])) / 2) / 2
    assert swapped_prediction_loss(scores, codes, (0, 1), T).item() == pytest.approx(by_hand, rel=1e-5)


def tiny_swav(hard=HardViewConfig(), **kw):
    torch.manual_seed(0)
    return SwAV(SwavConfig(hidden_mlp=32, feat_dim=16, nmb_prototypes=6, **kw), hard, "resnet18")


def crops(x):
    return [x, x.flip(3), F.interpolate(x, size=x.shape[-1] // 2, mode="bilinear", align_corners=False)]


@pytest.mark.parametrize("hexa", [False, True], ids=["swav", "hexa_swav"])
def test_a_tiny_run_learns_and_keeps_the_prototypes_normalised_and_frozen(hexa):
    method = tiny_swav(HardViewConfig(enabled=hexa), freeze_prototypes_epochs=2)
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(method.param_groups(), lr=0.02, momentum=0.9)  # HEXA sums three losses: 0.1 diverges
    losses, frozen = [], method.prototypes.weight.clone()
    for step in range(8):
        opt.zero_grad()
        logs = method.training_step(crops(x), torch.arange(16), lambda loss: loss.backward())
        opt.step()
        losses.append(logs["loss_clean"])
        if step == 0:  # normalised before the step, then frozen: unchanged by it
            torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(6))
            frozen = method.prototypes.weight.clone()
        if step == 1:
            torch.testing.assert_close(method.prototypes.weight, frozen)
    assert not torch.equal(method.prototypes.weight, frozen)  # trained after the freeze
    assert losses[-1] < losses[0] - 0.05
    assert ({"loss_adv", "loss_cutmix", "hardness_adv"} <= set(logs)) == hexa


def test_the_queue_fills_and_joins_the_codes(monkeypatch):
    import pretrain.methods.swav as swav_module

    method, seen = tiny_swav(queue_length=8, queue_start_epoch=0), []
    monkeypatch.setattr(swav_module, "sinkhorn", lambda out, eps, its: (seen.append(out.shape[0]), sinkhorn(out, eps, its))[1])
    for _ in range(4):
        x = torch.rand(4, 3, 32, 32)
        method.training_step(crops(x), torch.arange(4), lambda loss: loss.backward())
    # two assigned crops per step; the queue (8 rows) joins once its last row is written (after step 2)
    assert seen == [4, 4, 4, 4, 12, 12, 12, 12]
    section, notes = SwAV.adapt(SwavConfig(queue_length=3840), dataset_size=100, batch_size=16, world_size=1,
                                steps_per_epoch=6)
    assert section.queue_length == 80 and "queue_length" in notes[0]
    assert SwAV.adapt(SwavConfig(queue_length=3850), dataset_size=10 ** 6, batch_size=256, world_size=1,
                      steps_per_epoch=1)[0].queue_length == 3840  # a multiple of the batch, as swav


def test_a_trained_swav_converts_to_the_official_layout_the_zoo_reads():
    method = tiny_swav()
    release = swav_release(method.state_dict())
    assert "module.prototypes.weight" in release and "module.projection_head.0.weight" in release
    assert "module.conv1.weight" in release and not any(k.startswith("module.trunk.") for k in release)
    converted = to_timm(release, arch="resnet18")
    assert converted.layout == "swav"
    for key, value in method.trunk.state_dict().items():
        torch.testing.assert_close(converted.state_dict[key], value)


def test_swav_and_hexa_swav_train_publish_and_load_through_timm(tmp_path):
    import timm

    import hexa_zoo  # noqa: F401

    data = make_images(tmp_path / "imgs", 16)
    for method in ("swav", "hexa_swav"):
        base = tiny_cfg(data, tmp_path / method, epochs=1, publish=True, tag="embedded")
        cfg = dataclasses.replace(
            base, method=method, arch="resnet18", optimizer="lars", lr=4.8, lr_reference_batch=8,
            augment=dataclasses.replace(base.augment, crop_sizes=(32, 16), crop_counts=(2, 1)),
            swav=dataclasses.replace(base.swav, nmb_prototypes=5, hidden_mlp=32, queue_length=8, queue_start_epoch=0))
        result = trainer.train(cfg)
        assert result.model == f"{method}_r18.embedded"
        model = timm.create_model(f"{method}_r18", pretrained=True)
        state = torch.load(sorted((tmp_path / method / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
        torch.testing.assert_close(model.conv1.weight, state["trunk.conv1.weight"])
