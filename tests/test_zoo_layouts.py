"""Every release layout converts exactly: a checkpoint written as the release's own code writes it (module
structure re-created in official_architectures.py) gives a timm ResNet-50 whose features equal the official
trunk's, with every trunk tensor taken and only heads, predictors, momentum copies and memory banks left out.
Layouts that keys cannot tell apart are refused without --from."""

from collections.abc import Mapping

import official_architectures as official
import pytest
import timm
import torch

from hexa_zoo import cli, convert, zoo_cli
from hexa_zoo.errors import CheckpointFormatError
from hexa_zoo.layouts import LAYOUTS, simclr_v2_to_torchvision

AMBIGUOUS = None  # auto-detection must refuse: the keys fit byol, simclr_v1 and timm alike
CASES = {  # name: (builder, --from layout, what auto-detection says, groups left out)
    "insdis": (lambda: official.pycontrast("InsDis"), "pycontrast", "pycontrast", {"head", "contrast"}),
    "pirl": (lambda: official.pycontrast("PIRL"), "pycontrast", "pycontrast", {"head", "head_jig", "contrast"}),
    "infomin": (lambda: official.pycontrast("InfoMin"), "pycontrast", "pycontrast",
                {"head", "head_jig", "contrast", "model_ema"}),
    "simclr_v1": (official.simclr_v1, "simclr_v1", AMBIGUOUS, {"fc"}),
    "simclr_v2": (official.simclr_v2, "simclr_v2", "simclr_v2", {"resnet.fc", "head"}),
    "byol": (official.byol, "byol", AMBIGUOUS, {"fc"}),
    "moco_v3": (official.moco_v3, "moco_v3", "moco_v3", {"base_encoder.fc", "momentum_encoder", "predictor"}),
    "simsiam": (official.simsiam, "simsiam", "simsiam", {"encoder.fc", "predictor"}),
    "vissl": (official.vissl, "vissl", "vissl", {"heads", "ema_model", "loss"}),
    "barlowtwins": (official.barlowtwins, "timm", "timm", set()),
    "vicreg": (official.vicreg, "timm", "timm", set()),
    "dino": (official.dino, "timm", "timm", set()),
    "supervised": (official.supervised, "timm", AMBIGUOUS, {"fc"}),
}
# Smaller files of the same releases: PyContrast's model zoo files may hold `model` alone; VISSL also writes
# {model_state_dict: trunk} (extra_scripts/convert_vissl_to_torchvision.py reads both).
VARIANTS = {"insdis": lambda state: {"model": state["model"]},
            "vissl": lambda state: {"model_state_dict": state["classy_state_dict"]["base_model"]["model"]["trunk"]}}
# byol-convert pads like TF ('SAME': the extra pixel at the bottom/right), timm symmetrically; the two agree
# exactly when every stride-2 input is odd, as at 65x65 (65 -> 33 -> 17 -> 9 -> 5 -> 3).
SIZE = {"byol": 65}


def tensor_count(obj) -> int:
    """Tensors a checkpoint holds, optimizer and AMP scaler state aside (written independently of layouts.py)."""
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, Mapping):
        return sum(tensor_count(v) for k, v in obj.items() if k not in ("optimizer", "scaler", "rng"))
    return 0


@pytest.fixture(scope="module")
def timm50():
    return timm.create_model("resnet50", num_classes=0).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_release_layout_converts_exactly(case, timm50, tmp_path):
    build, layout, detected, left_out = CASES[case]
    state, official_features = build()
    path = tmp_path / f"{case}.pth"
    torch.save(state, path)

    converted = convert.to_timm(path, layout=layout)  # read back safely (weights_only), as users' files are
    assert converted.arch == "resnet50" and converted.layout == layout
    template = timm50.state_dict()
    assert list(converted.state_dict) == list(template)  # no trunk tensor missing or extra
    assert set(converted.dropped) == left_out
    taken = len(template) - (53 if case == "byol" else 0)  # byol-convert writes no num_batches_tracked
    assert sum(converted.dropped.values()) + taken == tensor_count(state)  # nothing else left over

    for tensor in template.values():  # no chance of passing on a previous case's weights
        tensor.zero_()
    timm50.load_state_dict(converted.state_dict, strict=True)
    size = SIZE.get(case, 64)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = timm50(x)
    theirs = official_features(x)
    assert ours.shape == theirs.shape == (2, 2048)
    assert (ours - theirs).abs().max().item() < 1e-5, (ours - theirs).abs().max().item()
    assert theirs.abs().max().item() > 1e-2  # features are not trivially zero

    if detected is AMBIGUOUS:
        with pytest.raises(CheckpointFormatError) as err:
            convert.to_timm(path)
        assert "byol, simclr_v1, timm" in err.value.message and "--from byol" in err.value.fix
        assert "--from simclr_v1" in err.value.fix and "--from timm" in err.value.fix
    else:
        assert convert.to_timm(path).layout == detected
    if case in VARIANTS:
        smaller = convert.to_timm(VARIANTS[case](state))
        assert smaller.layout == layout
        assert all(torch.equal(smaller.state_dict[k], v) for k, v in converted.state_dict.items())


def test_byol_conversion_names_the_padding_difference_at_even_sizes(timm50):
    """At even sizes byol-convert's TF padding and timm's symmetric padding see different pixels: exactness
    holds for the weights (and at odd sizes), not for byol-convert's own forward at 224x224."""
    state, official_features = official.byol()
    timm50.load_state_dict(convert.to_timm(state, layout="byol").state_dict)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (timm50(x) - official_features(x)).abs().max().item() > 1e-3


def test_simclr_v2_keys_map_to_torchvision_names():
    """Separius's module paths, read off its resnet.py, against torchvision's names for the same tensors."""
    pairs = {"resnet.net.0.0.weight": "resnet.conv1.weight",
             "resnet.net.0.1.0.running_var": "resnet.bn1.running_var",
             "resnet.net.1.blocks.0.projection.shortcut.weight": "resnet.layer1.0.downsample.0.weight",
             "resnet.net.2.blocks.0.projection.bn.0.bias": "resnet.layer2.0.downsample.1.bias",
             "resnet.net.3.blocks.5.net.0.weight": "resnet.layer3.5.conv1.weight",
             "resnet.net.4.blocks.2.net.3.0.num_batches_tracked": "resnet.layer4.2.bn2.num_batches_tracked",
             "resnet.net.4.blocks.2.net.5.0.weight": "resnet.layer4.2.bn3.weight",
             "net.1.blocks.1.net.4.weight": "layer1.1.conv3.weight",
             "resnet.fc.weight": "resnet.fc.weight", "head.layers.0.weight": "head.layers.0.weight"}
    assert {k: simclr_v2_to_torchvision(k) for k in pairs} == pairs


def test_ambiguous_file_is_refused_by_the_command_naming_the_choices(tmp_path, capsys):
    state, _ = official.simclr_v1()
    src, out = tmp_path / "resnet50-1x.pth", tmp_path / "out.safetensors"
    torch.save(state, src)
    assert cli.main(["zoo", "convert", str(src), str(out)]) == 1
    err = capsys.readouterr().err
    assert "several layouts (byol, simclr_v1, timm)" in err and "--from simclr_v1" in err
    assert not out.exists()
    assert cli.main(["zoo", "convert", str(src), str(out), "--from", "simclr_v1"]) == 0
    assert "no mean/std normalisation" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(out, "pt") as f:
        assert f.metadata()["converted_from"] == "simclr_v1" and "unnormalized" in f.metadata()["input"]


def test_a_layout_named_wrongly_is_refused(tmp_path):
    state, _ = official.simsiam()
    with pytest.raises(CheckpointFormatError) as err:
        convert.to_timm(state, layout="pycontrast")
    assert "looks like a SimSiam" in err.value.message and "--from simsiam" in err.value.fix


def test_convert_help_lists_every_layout(capsys):
    with pytest.raises(SystemExit):
        cli.main(["zoo", "convert", "--help"])
    text = capsys.readouterr().out
    for name in LAYOUTS:
        assert name in text, name
    for name in LAYOUTS:  # and the parser takes each
        args = zoo_cli._parser().parse_args(["convert", "a.pth", "b.safetensors", "--from", name])
        assert args.layout == name


def test_timm_filter_reads_a_renamed_layout(timm50):
    """The path `timm.create_model(..., pretrained=True)` takes for zoo releases renames SimCLR-v2 too."""
    state, official_features = official.simclr_v2()
    trunk = convert.timm_filter(state, timm50)
    timm50.load_state_dict(trunk, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (timm50(x) - official_features(x)).abs().max().item() < 1e-5


def test_every_release_names_a_layout_tested_here():
    from hexa_zoo.releases import RELEASES

    tested = {layout for _, layout, _, _ in CASES.values()}
    for key, release in RELEASES.items():
        assert release.layout in LAYOUTS and release.layout in tested | {"moco", "swav", "dcluster_v2"}, key
