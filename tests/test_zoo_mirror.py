"""`hexa zoo mirror`: each release in the local zoo becomes a Hub folder that plain timm loads (`local-dir:`) with
the same weights, whose card parses with huggingface_hub and carries the license, source, checksum and the
published numbers with their protocol variants; a release whose license forbids redistribution is left out."""

import csv
import dataclasses
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import hexa_zoo  # noqa: F401
from hexa_zoo import cli, loading, weights
from hexa_zoo.errors import OfflineError
from hexa_zoo.release_files import file_digests
from hexa_zoo.releases import RELEASES
from test_zoo_releases import r50_files  # noqa: F401  (the fixture, by name)

PUBLISHED = Path(__file__).resolve().parents[1] / "leaderboards" / "published.csv"


@pytest.fixture
def zoo_with_two_releases(r50_files, monkeypatch):  # noqa: F811
    """MoCo-v2 800ep (its md5 as if published) and SeLa-v2 (told its license forbids a mirror) in the local zoo."""
    _, moco, swav = r50_files
    moco_release = dataclasses.replace(RELEASES["moco_v2_r50.in1k_ep800"],
                                       checksum=f"md5:{file_digests(moco)['md5'][:8]}")
    sela = dataclasses.replace(RELEASES["sela_v2_r50.in1k_ep400"], redistribution="the authors ask not to")
    for release, path in ((moco_release, moco), (sela, swav)):
        monkeypatch.setitem(RELEASES, release.name, release)
        loading.fetch_release(release, path)
    return moco_release, sela


def published_moco_v2_800() -> list[dict]:
    """The published rows of MoCo-v2's 800-epoch release, read here independently of hexa_zoo.mirror."""
    with open(PUBLISHED, newline="") as f:
        return [r for r in csv.DictReader(f) if r["method"] in ("MoCo-v2", "MoCo v2") and r["epochs"] == "800"]


def test_mirror_writes_hub_folders_that_plain_timm_loads_with_valid_cards(zoo_with_two_releases, tmp_path, capsys):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    moco_release, sela = zoo_with_two_releases
    out = tmp_path / "hub"
    assert cli.main(["zoo", "mirror", "--org", "my-org", "--out", str(out), "--published", str(PUBLISHED)]) == 0
    text = capsys.readouterr().out
    assert f"would push it to my-org/{moco_release.name}" in text
    assert f"left out {sela.name}: its license (cc-by-nc-4.0) forbids redistribution: the authors ask not to" in text
    assert sorted(p.name for p in out.iterdir()) == [moco_release.name]

    folder = out / moco_release.name
    zoo_weights = load_file(weights.zoo_folder("moco_v2_r50", "in1k_ep800") / "model.safetensors")
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert model.num_classes == 0
    state = model.state_dict()
    assert set(state) == set(zoo_weights) and all(torch.equal(state[k], zoo_weights[k]) for k in zoo_weights)

    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "cc-by-nc-4.0"
    for fact in (moco_release.url, moco_release.source, moco_release.checksum.split(":")[1], "published md5"):
        assert fact in card.text, fact
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == moco_release.name
    rows = published_moco_v2_800()
    assert len(results) == len(rows) > 60
    expected = sorted((r["benchmark"], r["metric"], r["protocol"], float(r["value"])) for r in rows)
    assert sorted((e.task_name, e.metric_type, e.metric_config, e.metric_value) for e in results) == expected
    assert {"ssl-transfer-linear", "ssl-transfer-quoted", "moco-lincls"} <= {e.metric_config for e in results}


def test_without_published_numbers_the_card_holds_the_release_top1(zoo_with_two_releases, tmp_path):
    from huggingface_hub import ModelCard

    moco_release, _ = zoo_with_two_releases
    assert cli.main(["zoo", "mirror", "--org", "my-org", "--out", str(tmp_path)]) == 0
    results = ModelCard.load(tmp_path / moco_release.name / "README.md").data.eval_results
    assert [(e.task_name, e.metric_value) for e in results] == [("imagenet_linear", moco_release.top1)]


def test_push_offline_fails_at_once_and_writes_nothing(zoo_with_two_releases, tmp_path):
    with pytest.raises(OfflineError) as err:
        cli_main_raising(["zoo", "mirror", "--org", "my-org", "--out", str(tmp_path / "hub"), "--push"])
    assert "offline" in str(err.value) and "without --push" in str(err.value)
    assert not (tmp_path / "hub").exists()


def cli_main_raising(argv):
    from hexa_zoo import zoo_cli

    return zoo_cli.main(argv[1:])
