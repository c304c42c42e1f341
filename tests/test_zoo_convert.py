"""Conversion is exact: checkpoints in each official layout, built from a random torchvision ResNet,
give a timm trunk whose features equal the torchvision model's; exports have the right names and values.

The builders below are also used by the other test_zoo_* files.
"""

import pickle

import pytest
import timm
import torch
import torchvision

from hexa_zoo import cli, convert, load_trunk
from hexa_zoo.errors import CheckpointFormatError

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def random_torchvision(arch: str = "resnet18", seed: int = 0) -> torch.nn.Module:
    """A torchvision ResNet with random weights *and* random BN statistics (so BN is no identity), eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(1234)
    return model.eval()


def trunk_of(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def torchvision_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    fc, model.fc = model.fc, torch.nn.Identity()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.fc = fc


def timm_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def shifted(state: dict) -> dict:
    """Different values of the same shapes (a key encoder that must never be mistaken for the query one)."""
    return {k: (v + 1 if v.is_floating_point() else v) for k, v in state.items()}


def _sgd_state():
    return {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "params": [0, 1]}]}


def moco_checkpoint(tv: torch.nn.Module, arch: str = "resnet18", with_key_encoder: bool = True) -> dict:
    """facebookresearch/moco main_moco.py: {epoch, arch, state_dict, optimizer}, DDP-prefixed, MLP head fc.0/fc.2."""
    trunk, dim = trunk_of(tv), tv.fc.in_features
    state = {f"module.encoder_q.{k}": v for k, v in trunk.items()}
    head = {"fc.0.weight": torch.randn(dim, dim), "fc.0.bias": torch.randn(dim),
            "fc.2.weight": torch.randn(128, dim), "fc.2.bias": torch.randn(128)}
    state.update({f"module.encoder_q.{k}": v for k, v in head.items()})
    if with_key_encoder:
        state.update({f"module.encoder_k.{k}": v for k, v in shifted({**trunk, **head}).items()})
    state["module.queue"] = torch.randn(128, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": arch, "state_dict": state, "optimizer": _sgd_state()}


def swav_release(tv: torch.nn.Module, prototypes: str = "swav") -> dict:
    """facebookresearch/swav release file: a bare DDP state dict with projection head and prototypes."""
    dim = tv.fc.in_features
    state = {f"module.{k}": v for k, v in trunk_of(tv).items()}
    state.update({"module.projection_head.0.weight": torch.randn(2048, dim), "module.projection_head.0.bias": torch.randn(2048),
                  "module.projection_head.1.weight": torch.ones(2048), "module.projection_head.1.bias": torch.zeros(2048),
                  "module.projection_head.1.running_mean": torch.zeros(2048),
                  "module.projection_head.1.running_var": torch.ones(2048),
                  "module.projection_head.1.num_batches_tracked": torch.tensor(5),
                  "module.projection_head.3.weight": torch.randn(128, 2048), "module.projection_head.3.bias": torch.randn(128)})
    if prototypes == "swav":
        state["module.prototypes.weight"] = torch.randn(300, 128)
    else:  # DeepCluster-v2: three prototype heads
        state.update({f"module.prototypes.prototypes{i}.weight": torch.randn(300, 128) for i in range(3)})
    return state


def hexa_checkpoint(tv: torch.nn.Module, style: str = "trunk") -> dict:
    """This project's trainer: {"epoch", "step", "method", "arch", "config", "model": method.state_dict(), ...}."""
    trunk = trunk_of(tv)
    if style == "trunk":  # a MoCo-style method exposing `trunk`, key encoder beside it
        model = {**{f"trunk.{k}": v for k, v in trunk.items()},
                 **{f"encoder_k.0.{k}": v for k, v in shifted(trunk).items()},
                 "head.0.weight": torch.randn(64, tv.fc.in_features), "queue": torch.randn(64, 32)}
        method = "hexa_moco"
    elif style == "encoder_q":  # query encoder = Sequential(trunk, head); key copy under encoder_k
        model = {**{f"encoder_q.0.{k}": v for k, v in trunk.items()},
                 **{f"encoder_k.0.{k}": v for k, v in shifted(trunk).items()},
                 "encoder_q.1.0.weight": torch.randn(64, tv.fc.in_features), "queue": torch.randn(64, 32)}
        method = "moco_v2"
    else:  # DeepCluster-style: encoder = Sequential(trunk, head), prototypes, memory bank
        model = {**{f"encoder.0.{k}": v for k, v in trunk.items()},
                 "encoder.1.0.weight": torch.randn(64, tv.fc.in_features),
                 "prototypes.0.weight": torch.randn(30, 64), "memory_bank": torch.randn(2, 100, 64)}
        method = "hexa_dcluster"
    return {"epoch": 3, "step": 120, "method": method, "arch": "resnet18", "config": {"lr": 0.06, "epochs": 5},
            "model": model, "optimizer": _sgd_state(), "scaler": None}


LAYOUTS = {
    "moco": (lambda tv: moco_checkpoint(tv), "moco"),
    "moco_v1_no_arch": (lambda tv: {"state_dict": moco_checkpoint(tv)["state_dict"]}, "moco"),
    "swav_release": (lambda tv: swav_release(tv), "swav"),
    "swav_training": (lambda tv: {"epoch": 5, "state_dict": swav_release(tv), "optimizer": _sgd_state()}, "swav"),
    "dcluster_v2_release": (lambda tv: swav_release(tv, "dcluster"), "dcluster_v2"),
    "dcluster_v2_training": (lambda tv: {"epoch": 5, "state_dict": swav_release(tv, "dcluster"),
                                         "optimizer": _sgd_state()}, "dcluster_v2"),
    "hexa_trunk": (lambda tv: hexa_checkpoint(tv, "trunk"), "hexa"),
    "hexa_encoder_q": (lambda tv: hexa_checkpoint(tv, "encoder_q"), "hexa"),
    "hexa_encoder": (lambda tv: hexa_checkpoint(tv, "encoder"), "hexa"),
    "timm_bare": (lambda tv: trunk_of(tv), "timm"),
}


@pytest.fixture(scope="module")
def tv18():
    return random_torchvision("resnet18")


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def timm18():
    return timm.create_model("resnet18", num_classes=0)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_converts_to_identical_timm_features(layout, tv18, timm18, images):
    build, expected_layout = LAYOUTS[layout]
    converted = convert.to_timm(build(tv18))
    assert converted.layout == expected_layout and converted.arch == "resnet18"
    for tensor in timm18.state_dict().values():  # no chance of passing on a previous case's weights
        tensor.zero_()
    timm18.load_state_dict(converted.state_dict, strict=True)
    assert torch.equal(timm_features(timm18, images), torchvision_features(tv18, images))


def test_convert_command_writes_safetensors_that_plain_timm_loads(tv18, images, tmp_path, capsys):
    src, out = tmp_path / "moco_v2_200ep_pretrain.pth.tar", tmp_path / "trunk.safetensors"
    torch.save(moco_checkpoint(tv18), src)
    assert cli.main(["zoo", "convert", str(src), str(out)]) == 0
    assert "MoCo" in capsys.readouterr().out
    model = timm.create_model("resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(out), num_classes=0))
    assert torch.equal(timm_features(model, images), torchvision_features(tv18, images))


def test_moco_conversion_takes_the_query_encoder_and_reports_what_it_dropped(tv18):
    converted = convert.to_timm(moco_checkpoint(tv18))
    assert converted.prefix == "encoder_q."
    assert converted.dropped == {"encoder_q.fc": 4, "encoder_k": len(trunk_of(tv18)) + 4, "queue": 1, "queue_ptr": 1}
    expected = trunk_of(tv18)
    assert list(converted.state_dict) == list(timm.create_model("resnet18", num_classes=0).state_dict())
    assert all(torch.equal(converted.state_dict[k], expected[k]) for k in expected)


def test_load_trunk_converts_a_foreign_checkpoint_in_memory(tv18, images, tmp_path):
    src = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(swav_release(tv18), src)
    model, info = load_trunk(src)
    assert info["arch"] == "resnet18" and info["name"] == src.name and "swav" in info["source"]
    assert not model.training and model.num_classes == 0
    assert torch.equal(timm_features(model, images), torchvision_features(tv18, images))


def test_architecture_is_inferred_from_shapes_not_guessed(tmp_path):
    tv34 = random_torchvision("resnet34", seed=3)
    converted = convert.to_timm(swav_release(tv34))  # no `arch` field: resnet18 fits a prefix of it, must be refused
    assert converted.arch == "resnet34"


def test_torchvision_export_loads_into_torchvision(tv18, images, tmp_path):
    src, out = tmp_path / "moco.pth.tar", tmp_path / "tv.pth"
    torch.save(moco_checkpoint(tv18), src)
    convert.convert(src, out, to="torchvision")
    fresh = torchvision.models.resnet18()
    result = fresh.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and result.unexpected_keys == []
    assert torch.equal(torchvision_features(fresh.eval(), images), torchvision_features(tv18, images))


def detectron2_r50_names():
    """detectron2's ResNet-50 parameter names (build_resnet_backbone, BasicStem + BottleneckBlocks), written
    from its module structure, each with the torchvision name of the same tensor."""
    pairs = [("stem.conv1.weight", "conv1.weight")] + [(f"stem.conv1.norm.{p}", f"bn1.{p}") for p in BN_PARAMS]
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for block in range(blocks):
            d2, tv = f"res{stage}.{block}", f"layer{stage - 1}.{block}"
            if block == 0:
                pairs += [(f"{d2}.shortcut.weight", f"{tv}.downsample.0.weight")]
                pairs += [(f"{d2}.shortcut.norm.{p}", f"{tv}.downsample.1.{p}") for p in BN_PARAMS]
            for conv in (1, 2, 3):
                pairs += [(f"{d2}.conv{conv}.weight", f"{tv}.conv{conv}.weight")]
                pairs += [(f"{d2}.conv{conv}.norm.{p}", f"{tv}.bn{conv}.{p}") for p in BN_PARAMS]
    return pairs


@pytest.fixture(scope="session")
def moco_r50(tmp_path_factory):
    """A MoCo-v2 checkpoint of a random torchvision ResNet-50 (query encoder only, to stay small)."""
    tv50 = random_torchvision("resnet50", seed=5)
    path = tmp_path_factory.mktemp("r50") / "moco_v2_800ep_pretrain.pth.tar"
    torch.save(moco_checkpoint(tv50, "resnet50", with_key_encoder=False), path)
    return tv50, path


def test_detectron2_export_has_detectron2_r50_names_and_values(moco_r50, tmp_path):
    tv50, src = moco_r50
    out = tmp_path / "moco_r50.pkl"
    convert.convert(src, out, to="detectron2")
    with open(out, "rb") as f:
        exported = pickle.load(f)
    assert exported["matching_heuristics"] is True and exported["__author__"]
    pairs = detectron2_r50_names()
    assert len(pairs) == 53 * 5  # 49 convs (stem + 16 blocks x 3) and 4 shortcuts: a weight and 4 BN tensors each
    assert sorted(exported["model"]) == sorted(d2 for d2, _ in pairs)
    reference = tv50.state_dict()
    for d2, tv in pairs:
        assert (exported["model"][d2] == reference[tv].numpy()).all(), d2


def test_convert_refuses_the_wrong_architecture_naming_keys(tv18, tmp_path):
    src, out = tmp_path / "r18.pth", tmp_path / "out.safetensors"
    torch.save(moco_checkpoint(tv18), src)
    with pytest.raises(CheckpointFormatError) as err:
        convert.convert(src, out, arch="resnet50")
    assert "does not hold a resnet50 trunk" in err.value.message and "layer1.0.conv3.weight" in err.value.message
    assert "--arch" in err.value.fix
    assert not out.exists()
