"""Trust at the edges (issue 20): data that cannot train fails before training, the zoo never overwrites
or mislabels, every weights file gets one clear answer, and what the help says runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hexa_zoo.cli import run_command
from hexa_zoo.errors import DataError, HexaError

TINY_PRETRAIN = ["--arch", "resnet10t", "--batch-size", "4", "--epochs", "1",
                 "--set", "workers=0", "threads=1", "augment.image_size=32", "moco.queue_size=16",
                 "moco.hidden_dim=32", "tensorboard=false", "progress=false", "monitor.every=0"]


def random_bytes_images(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"broken{i}.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    return folder


def good_images(folder: Path, n: int, seed: int = 0, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    return folder


def zoo_entries() -> list[str]:
    zoo = Path(os.environ["HEXA_ZOO_HOME"])
    return sorted(p.name for p in zoo.iterdir()) if zoo.is_dir() else []


# ----------------------------------------------------------------------- 1. a run that trains on nothing
def test_a_folder_of_unreadable_images_fails_before_training_and_publishes_nothing(tmp_path, capsys):
    from pretrain.cli import main

    data = random_bytes_images(tmp_path / "data", 3)
    code = run_command("hexa pretrain", main, ["--method", "moco_v2", "--data", str(data), "--out",
                                                str(tmp_path / "run"), *TINY_PRETRAIN])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{data}: 3 image file(s), 0 readable and 3 unreadable" in err and "broken0.jpg" in err
    assert zoo_entries() == []
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "log.csv").exists()


def test_fewer_readable_images_than_a_batch_is_an_error_naming_the_count(tmp_path):
    from pretrain.config import load_recipe
    from pretrain.trainer import train

    data = good_images(random_bytes_images(tmp_path / "data", 4), 2)
    cfg = load_recipe("moco_v2_r18_embedded", [f"data={data}", f"out={tmp_path / 'run'}", "arch=resnet10t",
                                               "batch_size=4", "epochs=1", "workers=0", "progress=false"])
    with pytest.raises(DataError, match=r"6 image file\(s\), 2 readable and 4 unreadable.*needs 4 readable") as err:
        train(cfg)
    assert "lower --batch-size to at most 2" in err.value.fix
    assert zoo_entries() == []


def test_a_run_that_completed_no_step_never_publishes(tmp_path, monkeypatch):
    """The second guard: should every batch still be skipped (the first check let it through), nothing is published."""
    from pretrain import trainer
    from pretrain.config import load_recipe

    monkeypatch.setattr(trainer, "require_a_batch", lambda *a, **k: None)
    data = random_bytes_images(tmp_path / "data", 4)
    cfg = load_recipe("moco_v2_r18_embedded", [f"data={data}", f"out={tmp_path / 'run'}", "arch=resnet10t",
                                               "batch_size=4", "epochs=1", "workers=0", "progress=false",
                                               "augment.image_size=32", "tensorboard=false"])
    with pytest.raises(HexaError, match="completed no training step"):
        trainer.train(cfg)
    assert zoo_entries() == []
