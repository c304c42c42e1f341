"""The online kNN monitor: its accuracy against a brute-force vote, no draw from the global RNG, and a run
that logs it."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import timm
import torch

from hexa_zoo.errors import ConfigError
from pretrain.loop import trainer
from pretrain.loop.monitor import KnnMonitor, MonitorConfig, monitor_splits

from test_pretrain_trainer import make_images, tiny_cfg


def brute_force_knn_top1(mem, mem_y, qry, qry_y, k, temperature, classes):
    mem = mem / np.linalg.norm(mem, axis=1, keepdims=True)
    qry = qry / np.linalg.norm(qry, axis=1, keepdims=True)
    right = 0
    for q, y in zip(qry, qry_y):
        sim = mem @ q
        top = np.argsort(-sim)[:k]
        votes = np.zeros(classes)
        for j in top:
            votes[mem_y[j]] += np.exp(sim[j] / temperature)
        right += votes.argmax() == y
    return 100 * right / len(qry)


def test_monitor_accuracy_against_a_brute_force_vote_without_touching_the_global_rng(tmp_path):
    make_images(tmp_path / "data" / "train", 24, classes=3)
    make_images(tmp_path / "data" / "val", 9, seed=1, classes=3)
    cfg = MonitorConfig(every=1, data=str(tmp_path / "data"), k=5, temperature=0.1)
    monitor = KnnMonitor(*monitor_splits("ignored", cfg), cfg, image_size=32)
    torch.manual_seed(0)
    trunk = timm.create_model("resnet10t", num_classes=0).train()
    state = torch.get_rng_state()
    got = monitor.evaluate(trunk, lambda x: x, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state) and trunk.training  # no draw, mode restored
    mem, mem_y = monitor._features(monitor.memory, monitor.picked["memory"], trunk.eval(), lambda x: x, "cpu")
    qry, qry_y = monitor._features(monitor.query, monitor.picked["query"], trunk, lambda x: x, "cpu")
    expected = brute_force_knn_top1(mem.numpy(), mem_y.numpy(), qry.numpy(), qry_y.numpy(), 5, 0.1, 3)
    assert got["knn_top1"] == pytest.approx(expected)


def test_monitor_splits_and_their_errors(tmp_path):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    assert monitor_splits(str(tmp_path / "imagenet" / "train"), MonitorConfig(every=1)) is None
    (tmp_path / "imagenet" / "val").mkdir()
    assert monitor_splits(str(tmp_path / "imagenet" / "train"), MonitorConfig(every=1))[1] == tmp_path / "imagenet" / "val"
    with pytest.raises(ConfigError, match="train/ and val/"):
        monitor_splits("embedded", MonitorConfig(every=1, data=str(tmp_path / "nowhere")))


def test_a_run_logs_knn_top1_every_n_epochs(tmp_path):
    make_images(tmp_path / "set" / "train", 16)
    make_images(tmp_path / "set" / "val", 8, seed=1)
    cfg = tiny_cfg(tmp_path / "set" / "train", tmp_path / "run", epochs=3)
    cfg = dataclasses.replace(cfg, monitor=MonitorConfig(every=2, max_images=0))
    trainer.train(cfg)
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["knn_top1"]]
    assert [r["epoch"] for r in rows] == ["2", "3"]  # every 2 epochs, and after the last
    assert all(0 <= float(r["knn_top1"]) <= 100 for r in rows)
