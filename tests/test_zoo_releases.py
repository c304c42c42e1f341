"""The releases table and fetching with integrity: every model of ssl-transfer's tables and the newer
self-supervised ResNet-50s are zoo models with their published facts; a release file is downloaded once (here
from a file:// URL), checked against the published checksum or the sha256 recorded at first use, converted
once into the zoo with its model card; a file that fails leaves nothing behind; offline errors say what to do."""

import csv
import dataclasses
import re
from pathlib import Path

import pytest
import timm
import torch

import hexa_zoo  # noqa: F401  (registers the models)
from hexa_zoo import cli, loading, weights
from hexa_zoo.catalog import METHODS, MODELS
from hexa_zoo.errors import CheckpointFormatError, IntegrityError, OfflineError, WeightsNotFoundError
from hexa_zoo.release_files import file_digests, recorded_first_use
from hexa_zoo.releases import RELEASES, release_for
from test_zoo_convert import (moco_checkpoint, random_torchvision, swav_release, timm_features,  # noqa: F401
                              torchvision_features)

REPO = Path(__file__).resolve().parents[1]
SELF_SUPERVISED_SINCE = ("Barlow Twins", "VICReg", "DINO", "MoCo-v3", "SimSiam")


def ssl_transfer_top1() -> dict[str, float]:
    """ssl-transfer's Table 1 ImageNet column, as transcribed for the leaderboard (read as data)."""
    with open(REPO / "leaderboards" / "sources" / "ssl_transfer_tables.csv", newline="") as f:
        return {r["model"]: float(r["value"]) for r in csv.DictReader(f) if r["protocol"] == "imagenet_linear_reported"}


# ------------------------------------------------------------------------------------------- the table

def test_every_ssl_transfer_model_and_the_newer_ones_are_releases_with_their_published_top1():
    table = ssl_transfer_top1()
    assert len(table) == 14
    for method, top1 in table.items():
        release = release_for(method)
        assert release is not None, method
        assert release.top1 == top1 and "ssl-transfer" in release.top1_source, method
    for method in SELF_SUPERVISED_SINCE:
        assert release_for(method) is not None, method
    self_supervised = {r.method for r in RELEASES.values() if r.method != "Supervised"}
    assert len(self_supervised) >= 18


def test_default_release_is_the_one_ssl_transfer_evaluated():
    from leaderboards.ssl_transfer import EPOCHS

    for method, epochs in EPOCHS.items():  # the epochs its readme's weight files name
        assert release_for(method).epochs == int(epochs), method
    assert release_for("MoCo-v2", 200).tag == "in1k_ep200" and release_for("MoCo-v2", 100) is None


def test_each_release_states_its_facts_in_one_form():
    for name, r in RELEASES.items():
        assert name == f"{r.model}.{r.tag}" and r.tag.startswith(f"in1k_ep{r.epochs}") and r.model.endswith("_r50")
        assert re.fullmatch(r"arXiv:\d{4}\.\d{4,5}", r.paper), name
        assert r.checksum is None or re.fullmatch(r"(md5|sha256):[0-9a-f]{8,64}", r.checksum), name
        assert r.license in {"cc-by-nc-4.0", "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause"}, name
        assert r.url.startswith("https://") and re.fullmatch(r"[\w.-]+/[\w.-]+", r.source.split()[0]), name
        assert 50 < r.top1 < 80 and r.top1_source, name
        assert r.trainable == (r.model in MODELS), name


def test_the_catalog_says_which_methods_are_trained_and_pretrain_choices_did_not_grow():
    assert set(METHODS) == {"moco_v2", "hexa_moco", "dcluster_v2", "hexa_dcluster", "swav", "hexa_swav"}
    trainable = {r.method for r in RELEASES.values() if r.trainable}
    assert trainable == {"MoCo-v2", "DeepCluster-v2", "SwAV"}
    assert {r.catalog_method for r in RELEASES.values() if r.trainable} == {"moco_v2", "dcluster_v2", "swav"}


def test_timm_lists_every_release_as_pretrained_and_builds_release_only_models():
    listed = set(timm.list_models(pretrained=True))
    assert set(RELEASES) <= listed
    model = timm.create_model("byol_r50", num_classes=0)
    assert model.pretrained_cfg["tag"] == "in1k_ep1000" and model.num_features == 2048
    assert model.pretrained_cfg["license"] == "apache-2.0"


def test_list_releases_shows_source_checksum_status_and_top1(capsys):
    assert cli.main(["zoo", "list", "--releases"]) == 0
    out = capsys.readouterr().out
    for r in RELEASES.values():
        line = next(line for line in out.splitlines() if line.startswith(r.name + " "))
        assert f"{r.top1:.1f}" in line and r.source in line
        assert (f"published {r.checksum}" if r.checksum else "none published") in line


# ------------------------------------------------------------------------------------------- fetching

@pytest.fixture(scope="module")
def r50_files(tmp_path_factory):
    """A MoCo-layout and a swav-layout release file of one random torchvision ResNet-50."""
    tv50 = random_torchvision("resnet50", seed=29)
    root = tmp_path_factory.mktemp("releases")
    moco, swav = root / "moco_v2_800ep_pretrain.pth.tar", root / "selav2_400ep_pretrain.pth.tar"
    torch.save(moco_checkpoint(tv50, "resnet50", with_key_encoder=False), moco)
    torch.save(swav_release(tv50), swav)
    return tv50, moco, swav


@pytest.fixture
def online(monkeypatch):
    """hexa-zoo online, with no Hub (the release URL is the only source) and nothing reachable over a socket."""
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_hub(repo):
        raise OSError("no Hub in the tests")

    monkeypatch.setattr(loading, "download_from_hub", no_hub)
    downloads = []
    import torch.hub

    real = torch.hub.download_url_to_file
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, **kw: (downloads.append(url), real(url, dst, progress=False)))
    return downloads


def served(monkeypatch, name: str, path: Path, **changes):
    """The release `name` served from `path` through a file:// URL (its other facts as published, or `changes`)."""
    release = dataclasses.replace(RELEASES[name], url=path.as_uri(), **changes)
    monkeypatch.setitem(RELEASES, name, release)
    return release


def test_fetch_downloads_checks_converts_caches_and_writes_the_card_once(r50_files, online, monkeypatch, capsys):
    tv50, moco, _ = r50_files
    md5 = file_digests(moco)["md5"]
    release = served(monkeypatch, "moco_v2_r50.in1k_ep800", moco, checksum=f"md5:{md5[:8]}")
    assert cli.main(["zoo", "fetch", "moco_v2_r50.in1k_ep800"]) == 0
    assert online == [release.url]
    folder = weights.zoo_folder("moco_v2_r50", "in1k_ep800")
    assert "checked, converted and cached" in capsys.readouterr().out
    card = (folder / "README.md").read_text()
    for fact in (release.source, release.url, "published md5", md5[:8], "cc-by-nc-4.0", "moco layout",
                 "71.1", "ssl-transfer Table 1"):
        assert fact in card, fact
    x = torch.randn(2, 3, 64, 64)
    model = timm.create_model("moco_v2_r50.in1k_ep800", pretrained=True, num_classes=0)
    assert model.weights_source == f"local zoo: {folder}"
    assert torch.equal(timm_features(model, x), torchvision_features(tv50, x))

    assert cli.main(["zoo", "fetch", "moco_v2_r50.in1k_ep800"]) == 0  # the second fetch downloads nothing
    assert online == [release.url] and "already in the zoo" in capsys.readouterr().out


def test_create_model_fetches_a_release_only_model_and_records_its_first_use_sha256(r50_files, online, monkeypatch,
                                                                                     tmp_path):
    import shutil

    tv50, _, swav = r50_files
    served_file = tmp_path / "selav2_400ep_pretrain.pth.tar"
    shutil.copyfile(swav, served_file)
    release = served(monkeypatch, "sela_v2_r50.in1k_ep400", served_file)
    assert release.checksum is None and recorded_first_use(release) is None
    model = timm.create_model("sela_v2_r50", pretrained=True, num_classes=0)
    folder = weights.zoo_folder("sela_v2_r50", "in1k_ep400")
    assert model.weights_source == f"local zoo: {folder}" and online == [release.url]
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(timm_features(model, x), torchvision_features(tv50, x))
    sha256 = file_digests(served_file)["sha256"]
    assert recorded_first_use(release)["sha256"] == sha256
    card = (folder / "README.md").read_text()
    assert "sha256 recorded at first download" in card and sha256 in card and "SeLa-v2" in card

    # The zoo folder deleted, and the file at the URL changed since: the new download is refused against the record.
    shutil.rmtree(folder)
    weights.official_download_path(release.url).unlink()
    state = torch.load(served_file, weights_only=True)
    state["module.conv1.weight"] = state["module.conv1.weight"] + 1
    torch.save(state, served_file)
    with pytest.raises(IntegrityError) as err:
        loading.fetch_release(release)
    assert "differs from the sela_v2_r50.in1k_ep400 file first downloaded" in str(err.value)
    assert sha256 in str(err.value) and len(online) == 2
    _assert_nothing_left(release)


def _assert_nothing_left(release):
    assert not weights.zoo_folder(release.model, release.tag).exists()
    downloads = weights.official_download_path(release.url).parent
    assert not weights.official_download_path(release.url).exists()
    assert not [p for p in downloads.iterdir() if p.name.startswith(".")]  # no temporary left either


def test_a_download_that_fails_its_published_checksum_is_refused_and_leaves_nothing(r50_files, online, monkeypatch):
    _, moco, _ = r50_files
    release = served(monkeypatch, "moco_v2_r50.in1k_ep800", moco)  # the real published md5 prefix a04e12f8
    with pytest.raises(IntegrityError) as err:
        loading.fetch_release(release)
    text = str(err.value)
    assert "the authors publish a04e12f8" in text and file_digests(moco)["md5"] in text
    assert "download it again" in text
    _assert_nothing_left(release)


def test_a_truncated_download_without_checksum_is_refused_and_leaves_nothing(r50_files, online, monkeypatch, tmp_path):
    _, _, swav = r50_files
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(swav.read_bytes()[: swav.stat().st_size // 2])
    release = served(monkeypatch, "sela_v2_r50.in1k_ep400", truncated)
    with pytest.raises(CheckpointFormatError) as err:
        timm.create_model("sela_v2_r50", pretrained=True)
    assert "could not be converted" in str(err.value) and "the download was deleted" in str(err.value)
    _assert_nothing_left(release)
    assert recorded_first_use(release) is None  # a file that never converted is not trusted


def test_a_file_downloaded_by_hand_is_checked_and_converted(r50_files, monkeypatch, capsys):
    tv50, _, swav = r50_files
    assert cli.main(["zoo", "fetch", "sela_v2_r50.in1k_ep400", "--file", str(swav)]) == 0  # offline: no network
    folder = weights.zoo_folder("sela_v2_r50", "in1k_ep400")
    assert swav.is_file() and (folder / "model.safetensors").is_file()
    assert recorded_first_use(RELEASES["sela_v2_r50.in1k_ep400"])["sha256"] == file_digests(swav)["sha256"]


def test_offline_fetch_names_the_url_and_the_commands_for_a_file_downloaded_by_hand(capsys):
    release = RELEASES["moco_v2_r50.in1k_ep800"]
    with pytest.raises(OfflineError) as err:
        loading.fetch_release(release)
    text = str(err.value)
    assert release.url in text
    assert "hexa zoo fetch moco_v2_r50.in1k_ep800 --file PATH" in text
    assert "hexa zoo convert PATH moco_v2_r50.safetensors --from moco" in text
    with pytest.raises(WeightsNotFoundError) as err:
        timm.create_model("dino_r50", pretrained=True)
    assert RELEASES["dino_r50.in1k_ep800"].url in str(err.value) and "--from timm" in str(err.value)


def test_a_tf_or_jax_release_asks_for_its_conversion_tool(online):
    release = RELEASES["byol_r50.in1k_ep1000"]
    with pytest.raises(WeightsNotFoundError) as err:
        loading.fetch_release(release)
    assert "ajtejankar/byol-convert" in str(err.value) and "hexa zoo fetch byol_r50.in1k_ep1000 --file PATH" in str(err.value)
    assert online == []


def test_the_readme_zoo_table_lists_every_release_as_the_table_says():
    readme = (REPO / "README.md").read_text()
    for r in RELEASES.values():
        row = next((line for line in readme.splitlines() if line.startswith(f"| {r.name} |")), None)
        assert row is not None, r.name
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].startswith(r.method) and cells[2] == str(r.epochs) and float(cells[3]) == r.top1, r.name
        assert (r.checksum or "none published") in cells[4] and cells[6] == r.license, r.name


def test_a_published_sha256_prefix_is_checked_as_torchvision_names_it(r50_files, monkeypatch, tmp_path):
    tv50, _, _ = r50_files
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(tv50.state_dict(), path)  # a torchvision state dict, fc included (left out by the conversion)
    sha256 = file_digests(path)["sha256"]
    release = served(monkeypatch, "supervised_r50.in1k_ep90", path, checksum=f"sha256:{sha256[:8]}")
    folder = loading.fetch_release(release, path)
    assert f"sha256 {sha256[:8]} matches" in (folder / "README.md").read_text()
    x = torch.randn(2, 3, 64, 64)
    model = timm.create_model("supervised_r50", pretrained=True, num_classes=0)
    assert torch.equal(timm_features(model, x), torchvision_features(tv50, x))
    wrong = served(monkeypatch, "supervised_r50.in1k_ep90", path, checksum="sha256:0676ba61")
    import shutil

    shutil.rmtree(folder)
    with pytest.raises(IntegrityError):
        loading.fetch_release(wrong, path)
    assert path.is_file() and not folder.exists()  # the user's own file is never deleted


def test_simclr_releases_take_raw_pixels_and_the_others_imagenet_normalised_ones():
    """SimCLR's converted checkpoints expect [0, 1] pixels (ssl-transfer evaluates them with --no-norm); the
    preprocessing every protocol reads from the model's config says so, and says ImageNet's for the rest."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    for name, release in RELEASES.items():
        cfg = timm.get_pretrained_cfg(name)
        raw = release.layout in ("simclr_v1", "simclr_v2")
        assert tuple(cfg.mean) == ((0.0, 0.0, 0.0) if raw else IMAGENET_DEFAULT_MEAN), name
        assert tuple(cfg.std) == ((1.0, 1.0, 1.0) if raw else IMAGENET_DEFAULT_STD), name
    assert {r.method for r in RELEASES.values() if r.layout.startswith("simclr")} == {"SimCLR-v1", "SimCLR-v2"}
