"""Error paths say what a user needs: where we looked and what to run; unsafe files never execute."""

import os
import socket
import subprocess
import sys
import time

import pytest
import timm
import torch

from hexa_zoo import cli, convert, load_trunk, weights
from hexa_zoo.errors import CheckpointFormatError, OfflineError, UnsafeCheckpointError, WeightsNotFoundError
from hexa_zoo.releases import RELEASES
from hexa_zoo.publish import publish
from test_zoo_convert import moco_checkpoint, random_torchvision, swav_release, trunk_of


@pytest.fixture(scope="module")
def tv18():
    return random_torchvision("resnet18", seed=21)


class _Payload:
    """Unpickling this would call os.makedirs(marker): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_missing_weights_offline_fail_at_once_saying_where_and_how():
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        timm.create_model("hexa_moco_r18", pretrained=True)
    assert time.perf_counter() - start < 2
    text = str(err.value)
    assert str(weights.zoo_home() / "hexa_moco_r18.embedded" / "model.safetensors") in text
    assert "Hugging Face Hub: hexa-zoo/hexa_moco_r18.embedded" in text and "offline, so not asked" in text
    assert "hexa pretrain --method hexa_moco --arch resnet18 --data embedded" in text
    assert "hexa zoo publish CHECKPOINT --model hexa_moco_r18 --tag embedded" in text


def test_official_model_offline_names_the_release_and_the_fetch_command():
    url = RELEASES["moco_v2_r50.in1k_ep200"].url
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        load_trunk("moco_v2_r50.in1k_ep200")
    assert time.perf_counter() - start < 2
    text = str(err.value)
    assert f"official release: {url} (not downloaded" in text
    assert "hexa zoo fetch moco_v2_r50.in1k_ep200 --file PATH" in text
    assert "hexa zoo convert PATH moco_v2_r50.safetensors --from moco" in text


def test_local_zoo_answers_without_any_network_even_online(tv18, monkeypatch):
    publish(trunk_of(tv18), "moco_v2_r18")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    start = time.perf_counter()
    model = timm.create_model("moco_v2_r18", pretrained=True)
    assert time.perf_counter() - start < 2 and model.weights_source.startswith("local zoo: ")


def test_other_local_tags_are_suggested_and_unknown_tags_listed(tv18):
    publish(trunk_of(tv18), "hexa_moco_r18", tag="my_run")
    with pytest.raises(WeightsNotFoundError) as err:
        timm.create_model("hexa_moco_r18", pretrained=True)
    assert "The local zoo has hexa_moco_r18.my_run: ask for it by name." in str(err.value)
    with pytest.raises(WeightsNotFoundError) as err:
        timm.create_model("moco_v2_r50.in1k_ep9999", pretrained=True)
    assert "has no tag 'in1k_ep9999'" in err.value.message and "moco_v2_r50.in1k_ep800" in err.value.fix


@pytest.mark.parametrize("zip_format", [True, False])
def test_unsafe_pickle_is_refused_and_nothing_runs(zip_format, tmp_path):
    marker, src, out = tmp_path / "code_ran", tmp_path / "evil.pth", tmp_path / "out.safetensors"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": _Payload(marker)}, src,
               _use_new_zipfile_serialization=zip_format)
    attempts = [lambda: convert.convert(src, out), lambda: load_trunk(src), lambda: publish(src, "moco_v2_r18"),
                lambda: timm.create_model("moco_v2_r18", pretrained=True, pretrained_cfg_overlay=dict(file=str(src)))]
    for attempt in attempts:
        with pytest.raises(UnsafeCheckpointError) as err:
            attempt()
        assert f"refusing to load {src}" in err.value.message and "arbitrary code" in err.value.message
        assert "os.makedirs" in err.value.message  # what it would have called
        assert "weights_only=False" in err.value.fix  # how to proceed if the user trusts the file
    assert not marker.exists() and not out.exists()


def test_wrong_layout_is_named_with_the_fix(tv18, tmp_path, capsys):
    src, out = tmp_path / "swav_800ep_pretrain.pth.tar", tmp_path / "out.safetensors"
    torch.save(swav_release(tv18), src)
    assert cli.main(["zoo", "convert", str(src), str(out), "--from", "moco"]) == 1
    err = capsys.readouterr().err
    assert "is not a MoCo (keys module.encoder_q.*" in err and "it looks like a SwAV release" in err
    assert "fix: use --from auto (or --from swav)" in err
    assert not out.exists()


def test_missing_and_mismatched_keys_are_reported_by_name(tv18):
    broken = moco_checkpoint(tv18)
    del broken["state_dict"]["module.encoder_q.layer4.1.bn2.running_var"]  # encoder_k is intact: must not be used
    with pytest.raises(CheckpointFormatError) as err:
        convert.to_timm(broken)
    assert "missing: layer4.1.bn2.running_var" in err.value.message and "under 'encoder_q.'" in err.value.message

    reshaped = moco_checkpoint(tv18)
    reshaped["state_dict"]["module.encoder_q.conv1.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(CheckpointFormatError) as err:
        convert.to_timm(reshaped, arch="resnet18")
    assert "conv1.weight: checkpoint (64, 3, 5, 5) vs model (64, 3, 7, 7)" in err.value.message


def test_publishing_the_wrong_architecture_says_so(tv18):
    with pytest.raises(CheckpointFormatError) as err:
        publish(trunk_of(tv18), "moco_v2_r50")
    assert "holds a resnet18 trunk, but this model is a resnet50" in err.value.message


def test_push_offline_fails_at_once_and_keeps_the_local_folder(tv18):
    start = time.perf_counter()
    with pytest.raises(OfflineError) as err:
        publish(trunk_of(tv18), "hexa_moco_r18", push_to_hub="my-lab/hexa_moco_r18.embedded")
    assert time.perf_counter() - start < 5  # includes writing the folder; no network wait
    folder = weights.zoo_home() / "hexa_moco_r18.embedded"
    assert "offline" in err.value.message and f"The local folder is kept: {folder}" in err.value.message
    assert f"hf upload my-lab/hexa_moco_r18.embedded {folder}" in err.value.fix
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_missing_overlay_file_and_missing_paths_fail_clearly(tmp_path, capsys):
    with pytest.raises(WeightsNotFoundError) as err:
        timm.create_model("moco_v2_r18", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "no.pth")))
    assert "does not exist" in err.value.message
    with pytest.raises(WeightsNotFoundError) as err:
        load_trunk(tmp_path / "nothing_here.safetensors")
    assert "no file or folder at" in err.value.message
    assert cli.main(["zoo", "fetch", "dcluster_v2_r18"]) == 1
    stderr = capsys.readouterr().err
    assert "no weights for dcluster_v2_r18.embedded" in stderr and "fix: " in stderr


def test_import_hexa_zoo_is_light_and_offline():
    code = "\n".join([
        "import socket, sys",
        "def no_network(*a, **k): raise AssertionError('network touched at import')",
        "socket.socket.connect = no_network",
        "import hexa_zoo, timm",
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pretrain', 'transfer', 'leaderboards', 'orchestration'))",
        "assert not heavy, heavy",
        "assert {'hexa_moco_r50', 'swav_r50', 'dcluster_v2_r18'} <= set(timm.list_models('*'))",
        "print('ok')",
    ])
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
