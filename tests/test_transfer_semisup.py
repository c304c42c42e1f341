"""Semi-supervised fine-tuning: lr groups and schedule, top-k against an independent count, tiny end-to-end runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from transfer.readers import imagenet_subsets
from transfer.protocols import semisup
from transfer.common import resolve_config

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "white": (240, 240, 240), "black": (15, 15, 15)}


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory) -> Path:
    """An ImageNet-style train/ and val/ tree: six classes told apart by colour (32 px PNGs)."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{split}{i}.png")
    return root



def _net(classes: int = 6) -> semisup.FineTuneClassifier:
    torch.manual_seed(0)
    return semisup.FineTuneClassifier(timm.create_model("resnet18", num_classes=0), classes)


@pytest.mark.parametrize("labels, lrs", [("1percent", (0.02, 5.0)), ("10percent", (0.01, 0.2))])
def test_optimizer_has_trunk_and_head_groups_with_swav_learning_rates(labels, lrs):
    net = _net()
    cfg = resolve_config(semisup.SemisupConfig, semisup.PRESETS, "paper", [f"labels={labels}"])
    optimizer, scheduler = semisup.build_optimizer(net, cfg)
    trunk, head = optimizer.param_groups
    assert (trunk["lr"], head["lr"]) == lrs
    assert {id(p) for p in trunk["params"]} == {id(p) for p in net.trunk.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in net.head.parameters()}
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 0 for g in optimizer.param_groups)
    for epoch in range(20):  # x0.2 at epochs 12 and 16
        expected = lrs[0] * 0.2 ** ((epoch >= 12) + (epoch >= 16))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected), epoch
        optimizer.step()
        scheduler.step()
    over = resolve_config(semisup.SemisupConfig, semisup.PRESETS, "paper", ["lr_head=1.5"])
    assert semisup.build_optimizer(net, over)[0].param_groups[1]["lr"] == 1.5


def test_topk_accuracy_matches_an_independent_count(colour_folders):
    from hexa_zoo.data import ImageFolderDataset

    cfg = resolve_config(semisup.SemisupConfig, semisup.PRESETS, "embedded",
                                 ["image_size=32", "resize_size=32", "batch_size=5"])
    net = _net()
    _, val_tf = semisup.transforms(cfg, (0.5,) * 3, (0.25,) * 3)
    val = ImageFolderDataset(colour_folders / "val", transform=val_tf)
    got = semisup.evaluate(net, semisup._loader(val, cfg, shuffle=False), torch.device("cpu"), cfg, [])
    net.eval()
    with torch.no_grad():
        logits = np.concatenate([net(val[i][0][None]).numpy() for i in range(len(val))])
    targets = np.array(val.targets)
    ranks = np.argsort(-logits, axis=1)
    top1 = 100 * np.mean(ranks[:, 0] == targets)
    top5 = 100 * np.mean([t in r[:5] for t, r in zip(targets, ranks)])
    assert got["top1"] == pytest.approx(top1, abs=1e-4) and got["top5"] == pytest.approx(top5, abs=1e-4)
    assert top5 < 100  # six classes: top-5 is not trivially right


def test_finetuning_on_a_verified_subset_list_beats_chance(colour_folders, r18_file, tmp_path, monkeypatch):
    names = sorted(p.name for p in (colour_folders / "train").rglob("*.png"))[::2]  # half of the training set
    listing = tmp_path / "10percent.txt"
    listing.write_text("\n".join(names) + "\n")
    # Stand-in for SimCLR's recorded line count and checksum, so the verification path runs on a tiny list.
    monkeypatch.setitem(imagenet_subsets.SUBSET_LISTS, "10percent",
                        {"lines": len(names), "sha256": hashlib.sha256(listing.read_bytes()).hexdigest()})
    rec = semisup.run(str(r18_file), str(colour_folders), tmp_path / "out", preset="embedded", seed=0,
                      overrides=[f"subset_list={listing}", "epochs=6", "batch_size=8", "decay_epochs=[5]",
                                 "image_size=32", "resize_size=32"])
    assert rec["dataset"]["subset"]["which"] == "simclr_list" and rec["dataset"]["subset"]["size"] == 24
    assert rec["benchmark"] == "imagenet_semisup_10pct"  # a verified SimCLR list is an ImageNet subset
    assert rec["config"]["lr_trunk"] == 0.01 and rec["config"]["lr_head"] == 0.2
    assert rec["metrics"]["top1"]["mean"] > 100 / 6 + 25  # chance is 16.7%
    assert rec["metrics"]["top5"]["mean"] >= rec["metrics"]["top1"]["mean"]


def test_semisup_on_the_embedded_dataset_writes_a_record(r18_file, tmp_path):
    rec = semisup.run(str(r18_file), "embedded", tmp_path, preset="embedded", seed=0,
                      overrides=["epochs=1", "image_size=32", "resize_size=32", "batch_size=50"])
    assert rec["protocol"] == "semisup" and rec["benchmark"] == "embedded_semisup_10pct"
    subset = rec["dataset"]["subset"]
    assert subset["which"] == "balanced_sampler" and subset["fraction"] == 0.1
    assert any("NOT the SimCLR list" in n for n in rec["notes"])
    assert subset["size"] == rec["dataset"]["train_images_total"] // 10
    top1, top5 = rec["metrics"]["top1"]["mean"], rec["metrics"]["top5"]["mean"]
    assert 0 <= top1 <= top5 <= 100 and rec["metrics"]["top1"]["n"] == 1
