"""The SLURM launcher (pretrain/launch_slurm.py), run through submitit's local executor: two tasks on
this machine join one gloo process group exactly as SLURM tasks would, train and publish. And the trainer's
stop on a preemption signal (cluster/preemption.py), in this process; tests/test_slurm.py runs both on SLURM."""

import os
import signal
import socket

import pytest
import torch

from cluster import preemption
from hexa_zoo.weights import zoo_home
from pretrain import launch_slurm
from pretrain.config import build_method
from pretrain.loop import trainer
from pretrain.loop.checkpoint import checkpoint_name, list_checkpoints
from test_pretrain_trainer import make_images, newest_model, tiny_cfg

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


def test_a_preemption_signal_saves_the_step_it_lands_in_then_requeues(tmp_path, monkeypatch):
    """The signal arrives inside the second step: the run saves a checkpoint after that step (none is due:
    checkpoint_every_steps=0), then calls submitit's handler; resumed, it ends where an unbroken run ends."""
    data = make_images(tmp_path / "imgs", 24)  # 3 steps an epoch, 2 epochs
    handed_over = []

    def submitits_handler(signum, frame):  # rank 0's: pickle the requeued job, scontrol requeue, exit
        handed_over.append(signum)
        raise SystemExit(-1)

    def signalled_in_step_2(cfg, size, steps_per_epoch):
        method, steps = build_method(cfg, size, steps_per_epoch), []
        step = method.training_step

        def training_step(*args, **kwargs):
            steps.append(1)
            if len(steps) == 2:
                os.kill(os.getpid(), signal.SIGUSR2)
            return step(*args, **kwargs)

        method.training_step = training_step
        return method

    for name in ("_requeue", "_signum", "_asked"):
        monkeypatch.setattr(preemption, name, getattr(preemption, name))  # restored after the test
    previous = signal.signal(signal.SIGUSR2, submitits_handler)
    try:
        preemption.take_over(signal.SIGUSR2)
        with pytest.raises(SystemExit):
            trainer.train(tiny_cfg(data, tmp_path / "cut", checkpoint_every_steps=0),
                          method_factory=signalled_in_step_2)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handed_over == [signal.SIGUSR2]
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == [checkpoint_name(0, 2)]
    monkeypatch.setattr(preemption, "_requeue", None)  # the requeued job: a new process
    monkeypatch.setattr(preemption, "_asked", False)
    trainer.train(tiny_cfg(data, tmp_path / "cut", checkpoint_every_steps=0, tag="cut"), resume="auto")
    trainer.train(tiny_cfg(data, tmp_path / "whole", checkpoint_every_steps=0, tag="whole"))
    cut, whole = newest_model(tmp_path / "cut"), newest_model(tmp_path / "whole")
    assert all(torch.equal(cut[k], whole[k]) for k in whole)
