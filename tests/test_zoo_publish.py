"""Publishing and loading: a published folder is what `timm.create_model(NAME, pretrained=True)` loads,
exactly; it loads with plain timm; the Hub cache and official releases resolve in order."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import timm
import torch

from hexa_zoo import cli, load_trunk, weights, zoo_cli
from hexa_zoo.fileio import sha256_file
from hexa_zoo.models import OFFICIAL
from hexa_zoo.publish import publish
from test_zoo_convert import (hexa_checkpoint, moco_checkpoint, moco_r50, random_torchvision,  # noqa: F401
                              timm_features, torchvision_features, trunk_of)


@pytest.fixture(scope="module")
def tv18():
    return random_torchvision("resnet18", seed=11)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_publish_then_create_model_loads_exactly_those_weights(tv18, images, tmp_path):
    ckpt = tmp_path / "checkpoint_0004.pth"
    torch.save(hexa_checkpoint(tv18), ckpt)
    card = {"recipe": {"lr": 0.06, "epochs": 5}, "data": "embedded dataset, 64 px", "metrics": {"knn_top1": 41.5}}

    folder = publish(ckpt, "hexa_moco_r18", tag="embedded", card=card)

    assert folder == weights.zoo_home() / "hexa_moco_r18.embedded"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and config["hexa_zoo"]["model"] == "hexa_moco_r18"

    model = timm.create_model("hexa_moco_r18", pretrained=True)
    assert model.num_classes == 0 and model.weights_source == f"local zoo: {folder}"
    for key, value in trunk_of(tv18).items():
        assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(timm_features(model, images), torchvision_features(tv18, images))

    readme = (folder / "README.md").read_text()
    for expected in ("lr: 0.06", "| knn_top1 | 41.5 |", "embedded dataset, 64 px", "license: mit",
                     "arXiv:2012.13493", "@article{li2020hexa"):
        assert expected in readme
    _, info = load_trunk("hexa_moco_r18.embedded")
    assert info["weights_sha256"] == sha256_file(folder / "model.safetensors") == config["hexa_zoo"]["weights_sha256"]
    assert info["name"] == "hexa_moco_r18.embedded" and info["arch"] == "resnet18"
    assert info["mean"] == (0.485, 0.456, 0.406) and info["std"] == (0.229, 0.224, 0.225)


def test_zoo_folder_loads_with_plain_timm_and_no_hexa_zoo(tv18, images, tmp_path):
    folder = publish(trunk_of(tv18), "moco_v2_r18")
    torch.save(images, tmp_path / "x.pt")
    script = "\n".join([
        "import sys, timm, torch",
        f"model = timm.create_model('local-dir:{folder}', pretrained=True).eval()",
        "assert 'hexa_zoo' not in sys.modules, 'hexa_zoo was imported'",
        "with torch.no_grad():",
        f"    torch.save(model(torch.load('{tmp_path / 'x.pt'}')), '{tmp_path / 'y.pt'}')",
    ])
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, cwd=tmp_path)
    assert torch.equal(torch.load(tmp_path / "y.pt"), torchvision_features(tv18, images))
    # load_trunk takes the folder too, with or without timm's prefix
    for spec in (folder, f"local-dir:{folder}"):
        model, info = load_trunk(spec)
        assert info["name"] == "moco_v2_r18.embedded" and torch.equal(timm_features(model, images),
                                                                      torchvision_features(tv18, images))


def test_unregistered_run_tag_and_a_fresh_head(tv18):
    publish(trunk_of(tv18), "dcluster_v2_r18", tag="seed3_ep20")
    model = timm.create_model("dcluster_v2_r18.seed3_ep20", pretrained=True, num_classes=7)
    assert model.pretrained_cfg["tag"] == "seed3_ep20" and model.fc.weight.shape == (7, 512)
    assert torch.equal(model.layer4[1].bn2.running_var, tv18.layer4[1].bn2.running_var)


def test_an_unregistered_name_publishes_a_folder_that_load_trunk_reads(tv18, images, capsys):
    folder = publish(trunk_of(tv18), "hexa_moco_resnet18_wide", tag="embedded",
                     card={"recipe": {"method": "hexa_moco", "arch": "resnet18"}})
    model, info = load_trunk(folder)
    assert info["name"] == "hexa_moco_resnet18_wide.embedded" and info["arch"] == "resnet18"
    assert torch.equal(timm_features(model, images), torchvision_features(tv18, images))
    assert "hexa_zoo.load_trunk" in (folder / "README.md").read_text()
    assert zoo_cli.main(["list"]) == 0
    assert "hexa_moco_resnet18_wide.embedded" in capsys.readouterr().out


def test_explicit_overlay_file_comes_first_and_foreign_files_are_converted(tv18, images, tmp_path):
    publish(trunk_of(random_torchvision("resnet18", seed=99)), "hexa_dcluster_r18")  # must NOT be used
    ckpt = tmp_path / "moco_v1_200ep_pretrain.pth.tar"
    torch.save(moco_checkpoint(tv18), ckpt)
    model = timm.create_model("hexa_dcluster_r18", pretrained=True, pretrained_cfg_overlay=dict(file=str(ckpt)))
    assert model.weights_source == f"file: {ckpt}"
    assert torch.equal(timm_features(model, images), torchvision_features(tv18, images))


def test_hub_cache_serves_offline_under_the_configured_org(tv18, images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEXA_ZOO_HF_ORG", "my-lab")
    folder = publish(trunk_of(tv18), "moco_v2_r18", zoo=tmp_path / "built_elsewhere")
    # lay it out exactly as huggingface_hub's cache holds a downloaded repository
    repo_cache = weights.hf_cache_dir() / "models--my-lab--moco_v2_r18.embedded"
    shutil.copytree(folder, repo_cache / "snapshots" / ("0" * 40))
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text("0" * 40)

    model = timm.create_model("moco_v2_r18", pretrained=True)

    assert model.weights_source == "Hub cache: my-lab/moco_v2_r18.embedded"
    assert torch.equal(timm_features(model, images), torchvision_features(tv18, images))
    assert zoo_cli.main(["list"]) == 0
    assert "cached from the Hub: my-lab/moco_v2_r18.embedded" in capsys.readouterr().out


def test_official_release_is_converted_on_the_fly(moco_r50):  # noqa: F811 (the fixture, by name)
    tv50, raw = moco_r50
    url = OFFICIAL["moco_v2_r50.in1k_ep800"][0]
    cached = weights.official_download_path(url)
    cached.parent.mkdir(parents=True)
    os.symlink(raw, cached)  # as if downloaded earlier: offline, nothing else is asked
    model, info = load_trunk("moco_v2_r50")
    assert info["name"] == "moco_v2_r50.in1k_ep800" and info["arch"] == "resnet50"
    assert info["source"] == f"official release: {url}"
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(timm_features(model, x), torchvision_features(tv50, x))


def test_cli_publish_list_info(tv18, tmp_path, capsys):
    ckpt, recipe = tmp_path / "checkpoint.pth", tmp_path / "recipe.yaml"
    torch.save(hexa_checkpoint(tv18, "encoder"), ckpt)
    recipe.write_text("method: hexa_dcluster\nepochs: 5\n")
    assert cli.main(["zoo", "publish", str(ckpt), "--model", "hexa_dcluster_r18", "--recipe", str(recipe),
                     "--metric", "knn_top1=40.5", "--data", "embedded"]) == 0
    assert "hexa_dcluster_r18.embedded" in capsys.readouterr().out
    assert cli.main(["zoo", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    row = next(line for line in listing if line.startswith("hexa_dcluster_r18.embedded"))
    assert "local zoo" in row and "*" in row
    assert next(line for line in listing if line.startswith("hexa_moco_r18.embedded")).endswith(
        "not yet available (Hub: hexa-zoo/hexa_moco_r18.embedded)")
    assert cli.main(["zoo", "info", "hexa_dcluster_r18"]) == 0
    info = capsys.readouterr().out
    assert "# hexa_dcluster_r18.embedded" in info and "| knn_top1 | 40.5 |" in info and "epochs: 5" in info


@pytest.mark.parametrize("command", ["list", "info", "fetch", "convert", "publish"])
def test_every_subcommand_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"hexa zoo {command} " in out
