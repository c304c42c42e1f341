"""`hexa study` as jobs (orchestration/executor.py on cluster/jobs.py): the local executor end to end with a
cell killed mid-run and resumed to an inline run's numbers, `--status` on done, failed and missing cells, the
SLURM job parameters, and `--plan` against a hand computation."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from cluster.jobs import Board, HexaCommand, Resources
from orchestration import executor, plan, study
from orchestration.plan import Cell

submitit = pytest.importorskip("submitit")
REPO = Path(__file__).resolve().parents[1]

# The smallest study that trains, publishes and evaluates: 64 images, 2 epochs of 2 steps, a checkpoint a step.
TINY = ["--methods", "moco_v2", "hexa_moco", "--seeds", "0", "--epochs", "2", "--pretrain-set", "limit_images=64",
        "batch_size=32", "arch=resnet10t", "moco.hidden_dim=64", "monitor.every=0", "checkpoint_every_steps=1",
        "--only", "linear,knn", "--set", "linear.max_per_class=10", "knn.max_per_class=10"]


def cell_numbers(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {key: e["values"] for key, e in summary["comparisons"]["hexa_moco - moco_v2"].items()}


def kill_when_checkpointed(out: Path, cell: str, timeout_s: float = 300) -> str:
    """SIGKILL the cell's pre-training task once its first checkpoint is on disk; returns the state it was in."""
    state_file = out / "jobs" / f"{cell}.pretrain.state.json"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if list((out / "runs" / cell / "checkpoints").glob("checkpoint_*.pt")) and state_file.is_file():
            state = json.loads(state_file.read_text())
            if state["state"] == "running":
                os.kill(state["pid"], signal.SIGKILL)
            return state["state"]
        time.sleep(0.02)
    raise AssertionError(f"{cell} wrote no checkpoint in {timeout_s} s")


@pytest.mark.slow
def test_local_executor_resumes_a_killed_cell_to_the_numbers_of_an_inline_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the local jobs run one thread each on 2 cores: so does the reference
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert study.main(TINY + ["--out", str(tmp_path / "inline")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "local"
    command = TINY + ["--out", str(out), "--executor", "local", "--parallel", "2", "--resume", "auto"]
    first = threading.Thread(target=study.main, args=(command,))
    first.start()
    killed_in = kill_when_checkpointed(out, "hexa_moco_s0")
    first.join()
    assert killed_in == "running"
    capsys.readouterr()
    assert study.main(["--status", "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert "moco_v2_s0               done" in status and "hexa_moco_s0             failed (pretrain)" in status
    assert "ended without reporting" in status and "1 of 2 cells done" in status
    kept = (out / "cells" / "moco_v2_s0.json").stat().st_mtime_ns

    assert study.main(command) == 0  # the same command again: only the killed cell runs, from its checkpoint
    printed = capsys.readouterr().out
    assert "started hexa_moco_s0.pretrain" in printed and "moco_v2_s0" not in printed.split("hexa_moco - moco_v2")[0]
    assert (out / "cells" / "moco_v2_s0.json").stat().st_mtime_ns == kept
    log = "".join(p.read_text() for p in (out / "jobs" / "logs").glob("*_log.err"))
    assert "resumed from" in log  # the killed pre-training continued from its checkpoint
    assert "summary over 2 of 2 cells" in printed
    assert cell_numbers(out) == cell_numbers(tmp_path / "inline")
    assert {"embedded_linear_fast:top1", "embedded_knn:top1@20"} <= set(cell_numbers(out))  # the converged probe


def fake_handle(job_id: str, folder: Path):
    paths = type("Paths", (), {"folder": folder, "stdout": folder / f"{job_id}_0_log.out",
                               "stderr": folder / f"{job_id}_0_log.err"})
    return type("Handle", (), {"job_id": job_id, "paths": paths})


def test_slurm_jobs_ask_for_the_nodes_and_follow_their_pretraining(tmp_path, monkeypatch):
    from submitit.slurm.slurm import _make_sbatch_string

    sent = []

    class Recorder:  # what submitit's SlurmExecutor would be given, and the job it would pickle
        def __init__(self, params):
            self.params = params

        def submit(self, job):
            sent.append((self.params, job))
            return fake_handle(str(1000 + len(sent)), tmp_path / "logs")

    res = Resources(nodes=2, gpus_per_node=8, hours=48, partition="gpu", account="hexa", constraint="h200")
    jobs = study_jobs(tmp_path, pretrain_resources=res, suite_resources=Resources(gpus_per_node=1, hours=12))
    cells = plan.plan_cells(["moco_v2", "hexa_moco"], [0], "equal-epochs", 1, "/data/imagenet/train",
                            recipes="paper", epochs=200)
    assert executor.submit(cells, jobs, "slurm", make_executor=Recorder) == ["hexa_moco_s0", "moco_v2_s0"]
    (pre, pre_job), (suite, suite_job) = sent[:2]
    assert pre == dict(job_name="hexa_moco_s0.pretrain", nodes=2, ntasks_per_node=8, gpus_per_node=8, cpus_per_task=10,
                       time=2880, signal_delay_s=120, partition="gpu", account="hexa", constraint="h200",
                       setup=[f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"])
    assert suite["dependency"] == "afterok:1001" and suite["nodes"] == 1 and suite["ntasks_per_node"] == 1
    assert suite["additional_parameters"] == {"kill-on-invalid-dep": "yes"} and suite["time"] == 720
    sbatch = _make_sbatch_string(command="python -m submitit.core._submit logs", folder=tmp_path / "logs", **suite)
    assert "#SBATCH --dependency=afterok:1001" in sbatch and "#SBATCH --kill-on-invalid-dep=yes" in sbatch
    assert "#SBATCH --nodes=2" in _make_sbatch_string(command="x", folder=tmp_path / "logs", **pre)
    assert pre_job.argv[:3] == ["pretrain", "--config", "hexa_moco_r50_200ep"] and pre_job.argv[-2:] == ["--resume", "auto"]
    assert "epochs=200" in pre_job.argv and pre_job.requeued().argv.count("--resume") == 1  # preemption resumes
    assert isinstance(suite_job, executor.CellSuite) and suite_job.checkpoint().function is suite_job

    monkeypatch.setattr("cluster.jobs.job_alive", lambda submitted: True)  # both still queued on the cluster
    assert executor.submit(cells, jobs, "slurm", make_executor=Recorder) == [] and len(sent) == 4


def study_jobs(out: Path, **resources) -> executor.StudyJobs:
    return executor.StudyJobs(out, "/data/imagenet/train", "paper", "equal-epochs", 1.0, **resources)


def test_status_reads_done_failed_running_and_missing_cells(tmp_path, capsys):
    cells = [Cell(m, 0, 2, 1.0, f"{m}_r18_embedded") for m in ("hexa_moco", "moco_v2", "hexa_dcluster", "dcluster_v2")]
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "hexa_moco_s0.json").write_text("{}")
    board, logs = Board(tmp_path / "jobs"), tmp_path / "jobs" / "logs"
    logs.mkdir(parents=True)
    (logs / "77_0_log.err").write_text("epoch 1/2: loss 8.1\nTraceback (most recent call last):\nRuntimeError: out of memory\n")
    board.submitted("moco_v2_s0.pretrain", fake_handle("77", logs), "slurm")
    board.report("moco_v2_s0.pretrain", "failed", job_id="77", error="RuntimeError: out of memory")
    board.submitted("hexa_dcluster_s0.pretrain", fake_handle("78", logs), "slurm")
    board.report("hexa_dcluster_s0.pretrain", "running", job_id="78")
    lines = executor.status_lines(cells, tmp_path, alive=lambda submitted: True)
    assert lines[0].split() == ["hexa_moco_s0", "done"]
    assert lines[1].split() == ["moco_v2_s0", "failed", "(pretrain)", "job", "77"]
    assert lines[2] == "    RuntimeError: out of memory" and lines[5] == "    | RuntimeError: out of memory"
    assert lines[6].split() == ["hexa_dcluster_s0", "running", "(pretrain)", "job", "78"]
    assert lines[7].split() == ["dcluster_v2_s0", "missing"] and lines[-1] == "1 of 4 cells done"
    assert executor.cell_status(cells[2], tmp_path, alive=lambda s: False).state == "failed"  # died unreported


def test_plan_matches_a_hand_computation(tmp_path):
    rates = tmp_path / "rates.csv"
    rates.write_text("# a made-up GPU\ngpu,workload,recipe,img_per_s,vs_ideal,source\n"
                     "Test GPU,supervised,moco_v2_r50_200ep,1200,1.0,measured: x\n"
                     "Test GPU,moco_v2,moco_v2_r18_embedded,600,,measured: x\n"
                     "Test GPU,hexa_moco,hexa_moco_r50_200ep,400,1.5,derived: x\n"
                     "Test GPU,features,resnet50,1000,,measured: x\n")
    cells = plan.plan_cells(["moco_v2", "hexa_moco"], [0, 1], "equal-epochs", 1, "embedded", epochs=4)
    cost = plan.estimate(cells, 10**6, "embedded", rates)
    # hexa_moco_r18_embedded is not in the table: 1200 / (ideal 10/3 x (32 px / 224)^2 x 1.5) = 11760 img/s
    hexa_rate = 1200 / (10 / 3 * (32 / 224) ** 2 * 1.5)
    assert hexa_rate == pytest.approx(11760)
    by_name = {r["name"]: r for r in cost["cells"]}
    assert by_name["moco_v2_s0"]["pretrain_gpu_hours"] == round(4 * 10**6 / 600 / 3600, 2) == 1.85
    assert by_name["hexa_moco_s1"]["img_per_s"] == pytest.approx(11760, abs=0.1)
    assert by_name["hexa_moco_s1"]["rate_source"].startswith("estimated from hexa_moco's ratio")
    assert by_name["moco_v2_s0"]["step_ideal_cost"] == round(4 * 10**6 * 1.3333)  # epochs x images x cost
    assert cost["gpu_hours"] == round(2 * (1.85 + round(4 * 10**6 / 11760 / 3600, 2)), 1) == 3.9
    paper = plan.estimate(cells[:1], 1000, "paper", rates)
    forwards = 100 * 1_281_167 + 50_000 + 1_281_167 + 50_000 + 5_011 + 4_952 + 600 * 5 * 20
    assert paper["suite_gpu_hours"] == round(forwards / 1000 / 3600 + 20 * 12_812 / 1200 / 3600, 1)
    assert paper["unmeasured_protocols"] == ["detection"]


def test_recipes_per_family_and_epochs_beyond_the_embedded_budget():
    cells = plan.plan_cells(["swav", "hexa_swav", "moco_v2", "hexa_moco"], [0], "equal-compute", 1, "/data",
                            recipes="paper", scales=["swav=in1k_ep200_bs256"], epochs=200)
    got = {c.method: (c.recipe, c.epochs) for c in cells}
    assert got["hexa_swav"] == ("hexa_swav_r50_200ep_bs256", 200) and got["hexa_moco"] == ("hexa_moco_r50_200ep", 200)
    assert got["swav"] == ("swav_r50_200ep_bs256", round(200 * 6.102 / 3.102))
    assert got["moco_v2"] == ("moco_v2_r50_200ep", 500)  # 200 x (10/3) / (4/3)
    assert plan.plan_cells(["moco_v2", "hexa_moco"], [0], "equal-epochs", 0.5, "/data", recipes="paper")[0].epochs == 100
    with pytest.raises(study.ConfigError, match="no recipe at scale"):
        plan.recipe_for("moco_v2", "embedded", None, ["in1k_ep400"])
    with pytest.raises(study.ConfigError, match="unknown family"):
        plan.recipe_for("moco_v2", "embedded", None, ["mocov3=in1k_ep200"])


def test_the_committed_paper_plan_is_what_the_committed_rates_give():
    studies = Path(__file__).resolve().parent.parent / "board" / "studies"
    for mode in ("equal_epochs", "equal_compute"):
        committed = json.loads((studies / f"paper_r50_200ep_{mode}" / "plan.json").read_text())
        cells = [Cell(**{k: r[k] for k in ("method", "seed", "epochs", "cost_per_step", "recipe")})
                 for r in committed["cells"]]
        fresh = plan.estimate(cells, committed["images"], committed["suite"])
        assert fresh["gpu_hours"] == committed["gpu_hours"] and fresh["cells"] == committed["cells"]
        assert f"--mode {mode.replace('_', '-')} --epochs 200" in committed["command"]


def test_a_hexa_command_job_reports_to_its_board(tmp_path, monkeypatch):
    class Env:
        job_id, global_rank, local_rank, num_tasks, hostnames, USR_SIG = "5", 0, 0, 1, ["here"], "USR2"

    monkeypatch.setattr(submitit, "JobEnvironment", Env)
    job = HexaCommand(["zoo", "list"], name="zoo_list", board=tmp_path)
    job()
    assert Board(tmp_path).state("zoo_list") == "done"
    failing = HexaCommand(["transfer", "knn", "--model", "nowhere.safetensors", "--data", "embedded", "--out",
                           str(tmp_path)], name="bad", board=tmp_path)
    with pytest.raises(RuntimeError, match="exited with status 1"):
        failing()
    assert Board(tmp_path).status("bad").state == "failed"


def test_the_embedded_suite_headlines_the_converged_probe_and_runs_the_rest_by_name():
    from transfer.suite import suite_entries

    entries = suite_entries("embedded")
    assert entries[0] == ("linear", "linear", "embedded_fast")
    assert not {"semisup", "detection"} & {name for _, name, _ in entries}
    assert ("fewshot:cdfsl_embedded", "fewshot", "cdfsl_embedded") in entries
    assert suite_entries("embedded", only=["semisup", "linear:embedded", "knn"]) == [
        ("semisup", "semisup", "embedded"), ("linear:embedded", "linear", "embedded"), ("knn", "knn", "embedded")]


def test_a_suite_on_the_local_executor_runs_each_protocol_once(tmp_path, r18_file, capsys, monkeypatch):
    from transfer.cli import main as transfer_main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    command = ["suite", "--model", str(r18_file), "--only", "knn", "--set", "knn.max_per_class=5",
               "--out", str(tmp_path), "--executor", "local"]
    assert transfer_main(command) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [f"{'knn':28s} done job " + Board(tmp_path / "jobs")
                                                         .status("knn").job_id, "1 of 1 protocols done"]
    assert len(list(tmp_path.glob("*knn*.json"))) == 1
    assert transfer_main(command) == 0  # again: nothing to submit, the record is not written twice
    assert len(list(tmp_path.glob("*knn*.json"))) == 1


def test_a_requeued_protocol_resumes_only_where_it_can():
    from transfer.suite import RESUMABLE, suite_runs
    from transfer.suite_jobs import protocol_jobs

    runs = suite_runs("paper", None, {"linear": "/in", "knn": "/in"}, only=["linear", "knn"])
    jobs, missing = protocol_jobs("m", "out", runs, {}, 0, RESUMABLE)
    linear, knn = jobs
    assert not missing and linear.argv[-2:] == ["--resume", "auto"] and linear.requeued().argv == linear.argv
    assert "--resume" not in knn.argv and knn.requeued().argv == knn.argv  # knn takes no --resume
