"""The SLURM launcher (pretrain/launch_slurm.py), run through submitit's local executor: two tasks on
this machine join one gloo process group exactly as SLURM tasks would, train and publish."""

import socket

import pytest
import torch

from hexa_zoo.weights import zoo_home
from pretrain import launch_slurm
from test_pretrain_trainer import make_images

submitit = pytest.importorskip("submitit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_cluster_runs_two_tasks_in_one_process_group(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = make_images(tmp_path / "imgs", 16)
    out, logs = tmp_path / "run", tmp_path / "logs"
    code = launch_slurm.main([
        "--cluster", "local", "--gpus-per-node", "0", "--tasks-per-node", "2", "--master-port", str(free_port()),
        "--hours", "0.2", "--logs", str(logs), "--wait", "--",
        "--method", "moco_v2", "--arch", "resnet10t", "--data", str(data), "--out", str(out), "--epochs", "1",
        "--batch-size", "8", "--set", "workers=0", "threads=1", "augment.image_size=32", "moco.queue_size=8",
        "moco.hidden_dim=32", "log_every_steps=1", "tensorboard=false", "progress=false", "tag=launched"])
    assert code == 0, capsys.readouterr().err
    task_logs = {p.name: p.read_text() for p in logs.glob("*_log.err")}
    assert len(task_logs) == 2  # one per task
    assert any("2 process(es) (gloo DDP) x batch 4" in text for text in task_logs.values()), task_logs
    steps = [line for line in (out / "log.csv").read_text().splitlines()[1:] if line]
    assert len(steps) == 2  # 16 images / global batch 8
    checkpoint = sorted((out / "checkpoints").glob("checkpoint_*.pt"))[-1]
    assert torch.load(checkpoint, weights_only=True)["world_size"] == 2
    assert (zoo_home() / "moco_v2_resnet10t.launched" / "model.safetensors").is_file()


def test_requeue_resumes_from_the_newest_checkpoint():
    job = launch_slurm.PretrainJob(["--config", "moco_v2_r50_200ep", "--out", "/shared/run"], master_port=1234)
    again = job.checkpoint()
    assert again.function.argv[-2:] == ["--resume", "auto"] and again.function.master_port == 1234
    assert again.function.checkpoint().function.argv.count("--resume") == 1  # never twice


def test_local_cluster_is_one_node(capsys):
    with pytest.raises(SystemExit):
        launch_slurm.main(["--cluster", "local", "--nodes", "2", "--", "--method", "moco_v2"])
    assert "one node" in capsys.readouterr().err
