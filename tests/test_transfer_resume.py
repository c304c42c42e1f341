"""`--resume auto`: a run killed with SIGKILL and resumed gives the final metrics of an uninterrupted run
(linear, semi-supervised fine-tuning, torchvision detection, many-shot fine-tuning; one CPU process)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_image_folders
from transfer.protocols import detection, finetune, linear, semisup

REPO = Path(__file__).resolve().parents[1]


def _killed_then_resumed(protocol: str, model: Path, data: str, out: Path, sets: list[str], module) -> dict:
    """Start `hexa transfer PROTOCOL --resume auto` in a subprocess, SIGKILL it once its first checkpoint is
    written, then resume here with the same arguments; returns the resumed run's record."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "hexa_zoo", "transfer", protocol, "--model", str(model), "--data", data,
           "--out", str(out), "--resume", "auto", "--preset", "embedded", "--set", *sets]  # as run()'s default
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list((out / "checkpoints").glob("*.pt")):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 240 s")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(out.glob(f"{protocol}-*.json"))  # killed before it could write a record
    record = module.run(str(model), data, out, preset="embedded", overrides=sets + ["resume=auto"])
    assert any("resumed" in n for n in record["notes"]), record["notes"]
    assert not list((out / "checkpoints").glob("*.pt"))  # a finished run leaves no checkpoint
    return record


def _values(record):
    return {name: m["values"] for name, m in record["metrics"].items()}


def test_linear_resumes_exactly(r18_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HEXA_FEATURE_CACHE", str(tmp_path / "cache"))
    sets = ["resize=32", "crop=32", "train_crop=32", "max_per_class=4", "epochs=4", "milestones=[3]", "batch_size=8"]
    whole = linear.run(str(r18_file), "embedded", tmp_path / "whole", overrides=sets)
    resumed = _killed_then_resumed("linear", r18_file, "embedded", tmp_path / "killed", sets, linear)
    assert _values(resumed) == _values(whole)


def test_semisup_resumes_exactly(r18_file, tmp_path):
    write_image_folders(tmp_path / "data", 3, {"train": 10, "val": 2})
    sets = ["labels=10percent", "epochs=3", "decay_epochs=[2]", "image_size=32", "resize_size=36", "batch_size=3",
            "report=best"]
    data = str(tmp_path / "data")
    whole = semisup.run(str(r18_file), data, tmp_path / "whole", overrides=sets)
    resumed = _killed_then_resumed("semisup", r18_file, data, tmp_path / "killed", sets, semisup)
    assert _values(resumed) == _values(whole)


def test_detection_resumes_exactly(r18_file, tmp_path):
    from test_transfer_detection import make_tiny_voc  # 6 images of the embedded scenes in a VOCdevkit

    data = str(make_tiny_voc(tmp_path / "voc"))
    sets = ["max_iter=4", "checkpoint_every=1", "batch_size=2", "min_size_train=[64]", "min_size_test=64",
            "max_size=128", "rpn_post_nms_top_n_train=32", "rpn_post_nms_top_n_test=8", "box_batch_size_per_image=4",
            "precise_bn_iters=1", "steps=[3]", "warmup_iters=1"]
    whole = detection.run(str(r18_file), data, tmp_path / "whole", overrides=sets)
    resumed = _killed_then_resumed("detection", r18_file, data, tmp_path / "killed", sets, detection)
    assert _values(resumed) == _values(whole)


def test_finetune_resumes_exactly(r18_file, tmp_path):
    from test_transfer_manyshot import make_dtd  # 18 / 9 / 9 images of 3 classes in DTD's layout

    data = str(make_dtd(tmp_path / "dtd"))
    sets = ["dataset=dtd", "steps=4", "checkpoint_every=1", "batch_size=6", "lrs=[0.01]", "ws=[0.0]",
            "image_size=32"]
    whole = finetune.run(str(r18_file), data, tmp_path / "whole", overrides=sets)
    assert whole["metrics"]["top1"]["weight_decay"] == 0.0 and whole["metrics"]["top1"]["lr"] == 0.01
    resumed = _killed_then_resumed("finetune", r18_file, data, tmp_path / "killed", sets, finetune)
    assert _values(resumed) == _values(whole)
