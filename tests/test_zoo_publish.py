"""Publishing and loading: a published folder is what `timm.create_model(NAME, pretrained=True)` loads,
exactly; it loads with plain timm; the Hub cache and official releases resolve in order."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import timm
import torch

from hexa_zoo import cli, load_trunk, weights, zoo_cli
from hexa_zoo.fileio import sha256_file
from hexa_zoo.releases import RELEASES
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


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """The Hub's file endpoint, `/<org>/<repo>/resolve/<revision>/<file>`, serving local folders."""

    repos: dict = {}   # "org/repo" -> folder
    requests: list = []
    commit = "c0ffee" * 6 + "abcd"

    def _file(self):
        parts = self.path.split("/")  # "", org, repo, "resolve", revision, file
        if len(parts) == 6 and parts[3] == "resolve" and f"{parts[1]}/{parts[2]}" in self.repos:
            path = self.repos[f"{parts[1]}/{parts[2]}"] / parts[5]
            if path.is_file():
                return path
        return None

    def do_HEAD(self, body=False):
        self.requests.append((self.command, self.path))
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", f'"{sha256_file(path)}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.do_HEAD(body=True)

    def log_message(self, *args):
        pass


def test_hub_download_through_huggingface_hub_from_a_local_endpoint(tv18, images, tmp_path):
    # The online path, end to end with the real huggingface_hub client: an empty zoo and cache, the Hub
    # at a local HF_ENDPOINT. timm.create_model downloads, loads exactly those weights, and the next
    # load is served from huggingface_hub's cache with the Hub gone.
    folder = publish(trunk_of(tv18), "hexa_moco_r18", zoo=tmp_path / "on_the_hub")
    _FakeHub.repos = {"my-lab/hexa_moco_r18.embedded": folder}
    _FakeHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HEXA_ZOO_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", HEXA_ZOO_HF_ORG="my-lab",
               HEXA_ZOO_HOME=str(tmp_path / "zoo"), HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1")
    torch.save(images, tmp_path / "images.pt")
    child = ("import sys, timm, torch, hexa_zoo\n"
             "m = timm.create_model('hexa_moco_r18', pretrained=True).eval()\n"
             "x = torch.load(sys.argv[1])\n"
             "torch.save({'source': m.weights_source, 'features': m(x).detach()}, sys.argv[2])\n")
    try:
        run = subprocess.run([sys.executable, "-c", child, str(tmp_path / "images.pt"), str(tmp_path / "out1.pt")],
                             env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    first = torch.load(tmp_path / "out1.pt", weights_only=True)
    assert first["source"] == "Hub: my-lab/hexa_moco_r18.embedded"
    assert torch.allclose(first["features"], torchvision_features(tv18, images), atol=1e-5)
    fetched = {path.rsplit("/", 1)[1] for command, path in _FakeHub.requests
               if command == "GET" and "/resolve/" in path}
    assert fetched == {"model.safetensors", "config.json"}, _FakeHub.requests

    run = subprocess.run([sys.executable, "-c", child, str(tmp_path / "images.pt"), str(tmp_path / "out2.pt")],
                         env=env, capture_output=True, text=True, timeout=120)  # the Hub is down now
    assert run.returncode == 0, run.stderr[-3000:]
    second = torch.load(tmp_path / "out2.pt", weights_only=True)
    assert second["source"] == "Hub cache: my-lab/hexa_moco_r18.embedded"
    assert torch.equal(second["features"], first["features"])


def test_a_downloaded_release_is_checked_and_converted_once_into_the_zoo(moco_r50, monkeypatch):  # noqa: F811
    import dataclasses

    from hexa_zoo.release_files import file_digests

    tv50, raw = moco_r50
    release = RELEASES["moco_v2_r50.in1k_ep800"]
    # As if the authors published this file's md5 prefix: the check is real, only the number is the fixture's.
    monkeypatch.setitem(RELEASES, release.name, dataclasses.replace(release, checksum=f"md5:{file_digests(raw)['md5'][:8]}"))
    cached = weights.official_download_path(release.url)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(raw, cached)  # as if downloaded earlier: offline, nothing else is asked
    model, info = load_trunk("moco_v2_r50")
    folder = weights.zoo_folder("moco_v2_r50", "in1k_ep800")
    assert info["name"] == "moco_v2_r50.in1k_ep800" and info["arch"] == "resnet50"
    assert info["source"] == f"local zoo: {folder}"
    assert "published md5" in (folder / "README.md").read_text()
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


@pytest.mark.parametrize("command", ["list", "info", "fetch", "convert", "publish", "mirror"])
def test_every_subcommand_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"hexa zoo {command} " in out
