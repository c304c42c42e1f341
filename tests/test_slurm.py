"""The cluster paths against a real SLURM (ci/slurm_up.sh: one node, this machine's CPUs, no GPUs, no
accounting): real sbatch, squeue, scontrol and scancel, nothing mocked. Skipped, with the reason, where
`sinfo` does not answer.

- `hexa study --executor slurm`: each cell's pre-training and suite job, the suite after its pre-training,
  `--status` from the board and the queue, a re-run that collects every cell and submits nothing.
- `pretrain/launch_slurm.py`, two tasks: gloo DDP across SLURM's tasks; `scancel --signal=USR2` mid-run
  stops both ranks after the same step with a checkpoint there, the job requeues and resumes at that step,
  publishes once; one task preempted ends with the weights of an uninterrupted run.
- `hexa transfer suite --executor slurm`: a protocol job preempted mid-run continues with `--resume auto`;
  a job on bad data is reported failed by `--status` with its log's tail, and is not requeued.

Every job runs this interpreter on this checkout (cluster.jobs.code_setup); each test cancels what it left.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cluster.slurm_queue import ALIVE_SLURM_STATES, queue_state


def _cluster_missing() -> str:
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found): start one with sudo ci/slurm_up.sh"
    found = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if found.returncode or not set(found.stdout.split()) & {"idle", "mixed", "allocated"}:
        return f"sinfo answers no usable node ({(found.stderr or found.stdout).strip()!r}): run sudo ci/slurm_up.sh"
    return ""


pytest.importorskip("submitit")
_MISSING = _cluster_missing()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(bool(_MISSING), reason=_MISSING)]

REPO = Path(__file__).resolve().parents[1]
ON_THE_NODE = ["--gpus-per-node", "0", "--cpus-per-task", "1", "--hours", "0.5"]
PRETRAIN = ["--method", "moco_v2", "--arch", "resnet10t", "--batch-size", "8", "--set", "workers=0", "threads=1",
            "augment.image_size=32", "moco.queue_size=8", "moco.hidden_dim=32", "log_every_steps=1",
            "tensorboard=false", "progress=false", "checkpoint_every_steps=0"]


@pytest.fixture(autouse=True)
def _one_thread_and_no_leftovers(tmp_path, monkeypatch):
    """Jobs inherit this environment (sbatch exports it): one thread a task on the shared cores. Whatever a
    test queued is cancelled after it, so a later run (CI's second suite) finds the node free."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    ids = {json.loads(p.read_text())["job_id"] for p in tmp_path.rglob("*.submitted.json")}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True)


def wait_until(check, what: str, timeout_s: float = 300, poll_s: float = 0.1):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s} s; queue: {squeue()}")


def squeue() -> str:
    return subprocess.run(["squeue", "--states=all", "-o", "%i %j %T %r"], capture_output=True, text=True).stdout


def ended(job_id: str, timeout_s: float = 300) -> str:
    return wait_until(lambda: (s := queue_state(job_id)) not in ALIVE_SLURM_STATES and s, f"job {job_id} ending",
                      timeout_s, poll_s=1.0)


def job_field(job_id: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return re.search(rf"\b{field}=(\S*)", shown).group(1)


def submitted(board: Path, name: str) -> str:
    return wait_until(lambda: (board / f"{name}.submitted.json").is_file()
                      and json.loads((board / f"{name}.submitted.json").read_text())["job_id"], f"{name} submitted")


def steps_logged(out: Path) -> int:
    log = out / "log.csv"
    return len([line for line in log.read_text().splitlines()[1:] if line]) if log.is_file() else 0


def preempt_mid_run(out: Path, job_id: str, after_steps: int = 3) -> None:
    wait_until(lambda: steps_logged(out) >= after_steps, f"{out.name} training", poll_s=0.02)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)


def stopped_and_resumed_steps(log: str) -> tuple[list[int], list[int]]:
    stopped = [int(s) for s in re.findall(r"preempted: saved the checkpoint at step (\d+)", log)]
    resumed = [int(s) for s in re.findall(r"resumed from \S+ \(epoch \d+, step (\d+)\)", log)]
    return stopped, resumed


def test_a_study_queues_its_cells_and_collects_them(tmp_path, capsys):
    from orchestration import study

    out = tmp_path / "study"
    command = ["--methods", "moco_v2", "hexa_moco", "--seeds", "0", "--epochs", "1", "--pretrain-set",
               "limit_images=32", "batch_size=16", "arch=resnet10t", "moco.hidden_dim=32", "monitor.every=0",
               "--only", "knn", "--set", "knn.max_per_class=5", "--out", str(out), "--executor", "slurm",
               "--suite-hours", "0.5", *ON_THE_NODE]
    assert study.main(command) == 0
    queued = capsys.readouterr().out
    chains = dict(re.findall(r"queued (\S+): jobs (\d+ -> \d+)", queued))
    assert set(chains) == {"moco_v2_s0", "hexa_moco_s0"}, queued
    pretrain_id, suite_id = chains["hexa_moco_s0"].split(" -> ")
    assert job_field(suite_id, "Dependency") == f"afterok:{pretrain_id}(unfulfilled)"  # waits for its pre-training
    assert study.main(["--status", "--out", str(out)]) == 0
    status = capsys.readouterr().out
    assert re.search(rf"hexa_moco_s0 +(queued|running) \(pretrain\) job {pretrain_id}", status), status
    for chain in chains.values():
        for job_id in chain.split(" -> "):
            assert ended(job_id) == "COMPLETED", squeue()
    assert study.main(["--status", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 of 2 cells done"
    before = squeue()
    assert study.main(command + ["--resume", "auto"]) == 0
    again = capsys.readouterr().out
    assert "queued" not in again and "summary over 2 of 2 cells" in again and squeue() == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cells_done"] == 2 and summary["cells"]["hexa_moco_s0"]["pretrain_wall_s"] > 0


def test_two_tasks_train_as_one_ddp_run_and_resume_at_the_step_they_were_stopped_at(tmp_path, capsys):
    from hexa_zoo.weights import zoo_home
    from pretrain import launch_slurm
    from test_pretrain_trainer import make_images

    data, out, logs = make_images(tmp_path / "imgs", 64), tmp_path / "run", tmp_path / "logs"
    argv = ["--gpus-per-node", "0", "--tasks-per-node", "2", "--cpus-per-task", "1", "--hours", "0.5",
            "--logs", str(logs), "--poll-s", "1", "--"] + PRETRAIN + ["tag=ddp"]
    assert launch_slurm.main(argv + ["--data", str(data), "--out", str(out), "--epochs", "4"]) == 0  # queued
    job_id = submitted(logs, "pretrain")
    preempt_mid_run(out, job_id)
    assert ended(job_id) == "COMPLETED"
    assert job_field(job_id, "Restarts") == "1"
    script = (logs / f"{job_id}_submission.sh").read_text()  # this interpreter, on this checkout's code
    assert f"{shlex.quote(sys.executable)} -u -m submitit.core._submit" in script and f"export PYTHONPATH={REPO}" in script
    rank0, rank1 = (logs / f"{job_id}_{task}_log.err" for task in (0, 1))
    log = rank0.read_text()
    assert "2 process(es) (gloo DDP) x batch 4" in log
    stopped, resumed = stopped_and_resumed_steps(log)
    assert len(stopped) == 1 and resumed == stopped and 0 < stopped[0] % 8, log  # mid-epoch: 8 steps an epoch
    assert stopped_and_resumed_steps(rank1.read_text())[0] == stopped  # both ranks stopped after that step
    assert steps_logged(out) == 32 and log.count("published moco_v2_resnet10t.ddp") == 1
    assert len(list(zoo_home().glob("moco_v2_resnet10t.ddp*"))) == 1


def test_a_preempted_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    from hexa_zoo.weights import zoo_home
    from pretrain import launch_slurm
    from test_pretrain_trainer import make_images

    data = make_images(tmp_path / "imgs", 32)
    ids = {}
    for name in ("whole", "preempted"):
        logs = tmp_path / f"logs_{name}"
        argv = [*ON_THE_NODE, "--logs", str(logs), "--", *PRETRAIN, f"tag={name}"]
        assert launch_slurm.main(argv + ["--data", str(data), "--out", str(tmp_path / name), "--epochs", "8"]) == 0
        ids[name] = submitted(logs, "pretrain")
    preempt_mid_run(tmp_path / "preempted", ids["preempted"])
    assert [ended(job_id) for job_id in ids.values()] == ["COMPLETED", "COMPLETED"]
    log = (tmp_path / "logs_preempted" / f"{ids['preempted']}_0_log.err").read_text()
    stopped, resumed = stopped_and_resumed_steps(log)
    assert len(stopped) == 1 and resumed == stopped, log
    whole, preempted = (load_file(zoo_home() / f"moco_v2_resnet10t.{n}" / "model.safetensors") for n in ids)
    assert whole.keys() == preempted.keys()
    assert all(torch.equal(whole[k], preempted[k]) for k in whole)


def test_a_suite_job_resumes_after_preemption_and_a_failing_one_is_not_requeued(tmp_path, r18_file, capsys):
    from transfer.cli import main as transfer_main

    bad = tmp_path / "bad"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (bad / split / cls).mkdir(parents=True)
            for i in range(3):
                (bad / split / cls / f"{i}.png").write_bytes(b"not an image")
    good, failing = tmp_path / "good", tmp_path / "failing"
    sets = ["linear.resize=32", "linear.crop=32", "linear.train_crop=32", "linear.max_per_class=4",
            "linear.epochs=8", "linear.milestones=[6]", "linear.batch_size=8"]
    assert transfer_main(["suite", "--model", str(r18_file), "--only", "linear:embedded", "--set", *sets,
                          "--out", str(good), "--executor", "slurm", *ON_THE_NODE]) == 0
    assert transfer_main(["suite", "--model", str(r18_file), "--data", str(bad), "--only", "knn", "--out",
                          str(failing), "--executor", "slurm", *ON_THE_NODE]) == 0
    linear_id, knn_id = submitted(good / "jobs", "linear__embedded"), submitted(failing / "jobs", "knn")
    wait_until(lambda: list(good.rglob("checkpoints/*.pt")), "the linear protocol's first checkpoint", poll_s=0.05)
    subprocess.run(["scancel", "--signal=USR2", linear_id], check=True)
    assert ended(linear_id) == "COMPLETED" and job_field(linear_id, "Restarts") == "1"
    record = json.loads(next(good.glob("linear-*.json")).read_text())
    assert any("resumed after epoch" in note for note in record["notes"]), record["notes"]

    assert ended(knn_id) == "FAILED"
    time.sleep(2)  # a job that requeued itself would be pending again by now
    assert queue_state(knn_id) == "FAILED" and job_field(knn_id, "Restarts") == "0"
    capsys.readouterr()
    assert transfer_main(["suite", "--model", str(r18_file), "--data", str(bad), "--only", "knn", "--out",
                          str(failing), "--status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0].split() == ["knn", "failed", "job", knn_id], status
    assert status[1].startswith("    RuntimeError") and status[2].startswith("    | "), status
