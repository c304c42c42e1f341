"""HEXA as one step over any pseudo-label method: the step on a toy method, the three holes it had closed
(free gradient under aux BN and for multi-crop methods, PGD under fp16), the catalog's recipe pairs, the
configuration that a run records, and tags that say what ran."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from hexa_zoo import catalog
from hexa_zoo.errors import ConfigError, HexaError
from pretrain.loop import trainer
from pretrain.methods import hard_views
from pretrain.config import load_recipe
from pretrain.methods.deepcluster import DeepClusterConfig, DeepClusterV2
from pretrain.methods.hard_views import HardViewConfig, adversarial_view, free_step_note, hexa_step
from pretrain.methods.losses import soft_cross_entropy
from pretrain.methods.method import PseudoLabelMethod
from pretrain.methods.moco import MoCo, MocoConfig

from test_pretrain_trainer import make_images, tiny_cfg

HEXA = HardViewConfig(enabled=True, eps=8 / 255)


class Toy(PseudoLabelMethod):
    """A pseudo-label method in a few lines: the target is the argmax of a fixed random projection of the
    other view; the prediction a linear classifier of the pixels."""

    anchor_scored_alone = True

    def __init__(self, hard: HardViewConfig, classes: int = 5):
        super().__init__(hard)
        torch.manual_seed(0)
        self.network = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))
        self.trunk = self.network
        self.register_buffer("teacher", torch.randn(3 * 8 * 8, classes))

    def clean_step(self, views, index):
        targets = F.one_hot((views[1].flatten(1) @ self.teacher).argmax(1), self.teacher.shape[1]).float()
        return self.view_loss(views[0], targets), targets, {}

    def view_loss(self, x, targets, wrapped=True):
        return soft_cross_entropy(self.net(wrapped)(self.normalize(x)), targets)

    def mix_targets(self, targets, perm, lam):
        return lam * targets + (1 - lam) * targets[perm]


def toy_views(batch: int = 16):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 8, 8, generator=g)
    return [x, x.flip(3)]


def spy_on_attacks(monkeypatch) -> list[dict]:
    """Record every call of `adversarial_view` made by the HEXA step (its arguments), running it as usual."""
    calls = []
    real = hard_views.adversarial_view

    def spy(x, loss_fn, cfg, **kw):
        calls.append(dict(kw, x=x, loss_fn=loss_fn))
        return real(x, loss_fn, cfg, **kw)

    monkeypatch.setattr(hard_views, "adversarial_view", spy)
    return calls


def test_hexa_step_over_a_toy_method(monkeypatch):
    """The step has no method special case: a toy method gets a clean, an adversarial and a CutMix view, each
    with its own backward, the adversarial one harder, the CutMix one scored against area-mixed targets."""
    method, views = Toy(HEXA), toy_views()
    perm, lam = torch.roll(torch.arange(16), 1), 0.7
    x_mix = views[0].clone()
    x_mix[:, :, :4] = views[0][perm][:, :, :4]
    monkeypatch.setattr(hard_views, "cutmix", lambda x, alpha: (x_mix, perm, lam))
    attacks = spy_on_attacks(monkeypatch)
    backwards = []
    logs = hexa_step(method, views, torch.arange(16), lambda loss: (backwards.append(loss.item()), loss.backward()))

    assert len(backwards) == 3 and logs["loss"] == pytest.approx(sum(backwards))
    assert logs["loss_adv"] > logs["loss_clean"] and logs["hardness_adv"] == pytest.approx(
        logs["loss_adv"] - logs["loss_clean"])
    # the free first step: the gradient handed over is the attack loss's own gradient at the anchor
    x = views[0].clone().requires_grad_(True)
    targets = F.one_hot((views[1].flatten(1) @ method.teacher).argmax(1), 5).float()
    own, = torch.autograd.grad(method.view_loss(x, targets), x)
    torch.testing.assert_close(attacks[0]["input_grad"], own)
    # CutMix against a hand computation: lam on the own target, 1 - lam on perm's
    logits = method.network(method.normalize(x_mix))
    soft = lam * targets + (1 - lam) * targets[perm]
    expected = -(soft * F.log_softmax(logits, 1)).sum(1).mean()
    assert logs["loss_cutmix"] == pytest.approx(expected.item(), rel=1e-5)

    baseline = Toy(HardViewConfig())
    calls = []
    logs = hexa_step(baseline, views, torch.arange(16), lambda loss: (calls.append(1), loss.backward()))
    assert len(calls) == 1 and set(logs) == {"loss", "loss_clean"}


def test_aux_bn_attack_takes_its_gradient_from_the_network_that_scores_the_view(monkeypatch):
    """Hole 1: under aux_bn the view is scored by the twins, so the clean gradient (main BN) is not reused."""
    hexa = HardViewConfig(enabled=True, aux_bn=True)
    torch.manual_seed(0)
    method = MoCo(MocoConfig(queue_size=16, hidden_dim=32), hexa, "resnet10t", 64)
    assert "aux_bn" in free_step_note(hexa, method)
    attacks = spy_on_attacks(monkeypatch)
    method.training_step([torch.rand(8, 3, 32, 32) for _ in range(2)], torch.arange(8), lambda loss: loss.backward())
    assert attacks[0]["input_grad"] is None  # so adversarial_view differentiates loss_fn under the twins' BN
    assert free_step_note(HEXA, MoCo) is None


def test_deepcluster_attack_uses_crop_0s_own_loss_gradient(monkeypatch):
    """Hole 2: crops 0 and 1 share one forward (BatchNorm statistics), so the clean backward's gradient of
    crop 0 is not its own loss's; the first attack step takes crop 0's own gradient."""
    torch.manual_seed(0)
    method = DeepClusterV2(DeepClusterConfig(hidden_mlp=32, feat_dim=16, nmb_prototypes=(3,),
                                             freeze_prototypes_epochs=0), HEXA, "resnet10t", 8)
    crops = [torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32), torch.rand(8, 3, 16, 16)]
    method.on_epoch_start(0)
    method.training_step(crops, torch.arange(8), lambda loss: loss.backward())
    method.on_epoch_start(1)
    assert "crop 0" in free_step_note(HEXA, method)
    attacks = spy_on_attacks(monkeypatch)
    method.zero_grad()
    method.training_step(crops, torch.arange(8), lambda loss: loss.backward())
    assert attacks[0]["input_grad"] is None
    # what the attack differentiates is crop 0 scored alone against its assignment
    x = crops[0].clone().requires_grad_(True)
    targets = [a[torch.arange(8)] for a in method.assignments]
    with hard_views.frozen_bn_stats(method.network):
        torch.testing.assert_close(attacks[0]["loss_fn"](x), method.view_loss(x, targets, wrapped=False))


def test_multi_step_pgd_moves_under_fp16_gradients_that_underflow_unscaled():
    """Hole 3: per-pixel gradients below fp16's range are zero, and sign(0) takes no step; the attack loss is
    multiplied by the loss scale first (sign is scale-invariant)."""
    cfg = HardViewConfig(enabled=True, steps=3, free=False, eps=8 / 255)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))

    def tiny_fp16_loss(v):  # a float32 loss over an fp16 graph, as under autocast: gradients ~3e-9 per pixel
        return (v.half() * 3.0).float().mean() * 1e-5

    def at_the_boundary(scale: float) -> float:
        torch.manual_seed(3)
        adv = adversarial_view(x, tiny_fp16_loss, cfg, loss_scale=scale)
        moved = (adv - x).abs()
        inside = (x > cfg.eps) & (x < 1 - cfg.eps)  # pixels that the [0, 1] clamp cannot stop
        return (moved[inside] > cfg.eps * 0.999).float().mean().item()

    assert at_the_boundary(1.0) < 0.05       # no step: the random start stays where it was
    assert at_the_boundary(2.0 ** 16) > 0.99  # three sign steps of 2.5 eps / 3 reach the ball's edge


def test_hexa_step_gives_the_attack_the_loss_scale(monkeypatch):
    method, views = Toy(dataclasses.replace(HEXA, free=False, steps=2)), toy_views()
    attacks = spy_on_attacks(monkeypatch)

    hexa_step(method, views, torch.arange(16), lambda loss: loss.backward(), loss_scale=1024.0)
    assert attacks[0]["loss_scale"] == 1024.0 and attacks[0]["input_grad"] is None


# ---------------------------------------------------------------------------------- the catalog's recipes
def test_every_hexa_recipe_is_its_baseline_plus_hard_views():
    checked = 0
    for entry in catalog.METHODS.values():
        for scale, recipe in entry.recipes.items():
            cfg = load_recipe(recipe).to_dict()
            assert cfg["method"] == entry.name and cfg["hard_views"]["enabled"] == entry.is_hexa, recipe
            if not entry.is_hexa:
                continue
            base = load_recipe(catalog.METHODS[entry.baseline].recipes[scale]).to_dict()
            differs = {k for k in set(cfg) | set(base) if cfg.get(k) != base.get(k)}
            assert differs == {"method", "out", "hard_views"}, (recipe, differs)
            checked += 1
    assert checked == 3 * 3  # three HEXA methods, three scales each
    # the recipe files behind the catalog all exist, and every shipped recipe belongs to a catalog scale
    listed = {r for m in catalog.METHODS.values() for r in m.recipes.values()}
    from pretrain.config import recipe_names

    assert listed == set(recipe_names())


def test_the_method_decides_the_hard_views():
    assert load_recipe("hexa_moco_r18_embedded").hard_views.enabled
    assert not load_recipe("hexa_moco_r18_embedded", ["method=moco_v2"]).hard_views.enabled
    with pytest.raises(ConfigError, match="use --method hexa_moco"):
        load_recipe("moco_v2_r18_embedded", ["hard_views.enabled=true"])
    with pytest.raises(ConfigError, match="unknown method"):
        load_recipe("moco_v2_r18_embedded", ["method=simclr"])


def test_a_short_run_scales_the_schedule_instead_of_refusing():
    cfg = load_recipe("dcluster_v2_r50_800ep", ["epochs=1"])
    assert cfg.warmup_epochs == pytest.approx(10 / 800)
    assert cfg.deepcluster.freeze_prototypes_epochs == pytest.approx(958.5 / 800)  # still the whole run
    swav = load_recipe("swav_r50_200ep_bs256", ["epochs=20"])
    assert swav.swav.queue_start_epoch == pytest.approx(1.5) and swav.swav.freeze_prototypes_epochs == 0.1
    assert load_recipe("dcluster_v2_r50_800ep", ["epochs=1", "warmup_epochs=0"]).warmup_epochs == 0
    with pytest.raises(HexaError, match="warmup_epochs"):  # asked for explicitly: still refused
        load_recipe("dcluster_v2_r50_800ep", ["epochs=2", "warmup_epochs=5"])


# ------------------------------------------------------------------------ what a run records and publishes
def test_config_yaml_is_the_configuration_that_ran(tmp_path, caplog):
    data = make_images(tmp_path / "my_images", 24)
    cfg = dataclasses.replace(tiny_cfg(data, tmp_path / "run", epochs=1, publish=True), method="hexa_moco",
                              moco=dataclasses.replace(tiny_cfg(data, tmp_path).moco, queue_size=4096))
    with caplog.at_level(logging.INFO, logger="pretrain"):
        result = trainer.train(cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["hard_views"]["enabled"] is True
    assert "deepcluster" not in saved and "swav" not in saved
    assert saved["moco"]["queue_size"] == 16  # adapted: 24 images minus a batch of 8, a multiple of 8
    reloaded = load_recipe(tmp_path / "run" / "config.yaml")
    assert reloaded.to_dict() == saved and reloaded.moco.queue_size == 16
    # each epoch's line says how hard the hard views were
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1")]
    assert "adversarial" in epoch_lines[0] and "hardness" in epoch_lines[0] and "CutMix" in epoch_lines[0]
    # the tag says what ran: this folder, one epoch; the last line names exactly that
    assert result.model == "hexa_moco_resnet10t.my_images_ep1"
    assert result.zoo_dir.name == result.model and "load_trunk" in result.load_hint


def test_a_folder_run_publishes_under_a_tag_that_says_what_ran(tmp_path, monkeypatch):
    import timm

    import hexa_zoo  # noqa: F401  (registers the models)

    data = make_images(tmp_path / "train", 16)
    cfg = dataclasses.replace(tiny_cfg(data, tmp_path / "run", epochs=1, publish=True), arch="resnet18")
    result = trainer.train(cfg)
    assert result.model.startswith("moco_v2_r18.") and result.model.endswith("_train_ep1")  # <parent>_train
    assert result.load_hint == f"import hexa_zoo, timm; timm.create_model('{result.model}', pretrained=True)"
    model = timm.create_model(result.model, pretrained=True)
    trunk = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    torch.testing.assert_close(model.conv1.weight, trunk["encoder_q.trunk.conv1.weight"])


def test_a_tag_cannot_leave_the_zoo(tmp_path, r18_file):
    from hexa_zoo.publish import publish
    from hexa_zoo.weights import zoo_folder

    for tag in ("../../../tmp/x", "a/b", "..", "x.y"):
        with pytest.raises(ConfigError, match="tag"):
            publish(r18_file, "hexa_moco_r18", tag=tag, zoo=tmp_path / "zoo")
        with pytest.raises(ConfigError):
            zoo_folder("hexa_moco_r18", tag, tmp_path / "zoo")
    assert not (tmp_path / "tmp").exists() and not list(tmp_path.glob("**/x"))


def test_ideal_step_costs_follow_the_documented_counts():
    from pretrain.methods.cost import ideal_step_cost

    cost = lambda recipe, *sets: ideal_step_cost(load_recipe(recipe, list(sets)))  # noqa: E731
    assert cost("moco_v2_r50_200ep") == pytest.approx(4 / 3)
    assert cost("hexa_moco_r50_200ep") == pytest.approx(10 / 3)           # the free step costs nothing
    assert cost("hexa_moco_r50_200ep", "hard_views.steps=3") == pytest.approx(10 / 3 + 2)
    assert cost("hexa_moco_r50_200ep", "hard_views.aux_bn=true") == pytest.approx(10 / 3 + 1)
    pixels = 2 + 6 * 96 ** 2 / 224 ** 2
    assert cost("dcluster_v2_r50_800ep") == pytest.approx(pixels)
    assert cost("hexa_dcluster_r50_800ep") == pytest.approx(pixels + 3)   # no free step for crop 0
    assert cost("hexa_swav_r50_800ep", "hard_views.cutmix=false") == pytest.approx(pixels + 2)
