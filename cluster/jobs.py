"""Jobs on a SLURM cluster or as processes on this machine, through submitit: the mechanics that
`hexa study`, `hexa transfer suite` and `python -m pretrain.launch_slurm` share.

- `Resources`: what one job asks for; `slurm_parameters` turns it into sbatch's parameters.
- `Job`: a picklable callable that submitit runs in every task of a job. It sets the variables torchrun
  would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from submitit's job environment, reports
  its state to a `Board` from rank 0, and on preemption or time-out requeues itself (`checkpoint`; a training
  loop first saves its checkpoint at the step boundary: `cluster.preemption`).
  `HexaCommand` runs a `hexa` command line and requeues with `--resume auto`.
- `Board`: a folder holding, per named job, what was submitted (executor, job id, logs) and the state the job
  reported; `status(name)` reads them as queued, running, done, failed (with the log's tail) or missing.
- `run_local`: chains of jobs (a study cell's pre-training, then its suite) as processes on this machine,
  `parallel` chains at a time, one GPU each where several are visible, the CPU threads split between them.
- `submit_slurm`: the same chains as SLURM jobs, each after the one before it (`--dependency afterok`).

submitit is imported only when a job is built or submitted (`pip install 'hexa-zoo[submitit]'`).
"""

from __future__ import annotations

import copy
import os
import shlex
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from hexa_zoo.errors import ConfigError
from hexa_zoo.fileio import atomic_write_json

from .preemption import take_over
from .slurm_queue import ALIVE_SLURM_STATES, queue_state

EXECUTORS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class Resources:
    """What one job asks for. `tasks_per_node` 0: one task per GPU (one on a machine without GPUs)."""
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int = 0
    cpus_per_task: int = 10
    hours: float = 24.0
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    mem_gb: int = 0

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def one_gpu(self, hours: float | None = None) -> "Resources":
        """The same request cut to one task on one GPU (none where none is asked) of one node: a job that
        evaluates (a suite protocol, a cell's suite) rather than pre-trains."""
        return replace(self, nodes=1, gpus_per_node=min(1, self.gpus_per_node), tasks_per_node=1,
                       hours=self.hours if hours is None else hours)


def code_setup() -> list[str]:
    """sbatch script lines that put this code first on the job's path, whatever environment the cluster exports
    (submitit runs the job with this interpreter, sys.executable)."""
    root = Path(__file__).resolve().parents[1]
    return [f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def slurm_parameters(res: Resources, name: str, after: str | None = None) -> dict:
    """submitit's SlurmExecutor parameters (sbatch's, one to one) for a job named `name`, run after job `after`."""
    params = dict(job_name=name, nodes=res.nodes, ntasks_per_node=res.tasks, gpus_per_node=res.gpus_per_node,
                  cpus_per_task=res.cpus_per_task, time=max(1, int(res.hours * 60)), signal_delay_s=120,
                  setup=code_setup())
    params.update({k: v for k, v in (("partition", res.partition), ("account", res.account),
                                     ("constraint", res.constraint)) if v})
    if res.mem_gb:
        params["mem"] = f"{res.mem_gb}GB"
    if after is not None:  # a failed predecessor removes its dependants from the queue instead of stranding them
        params.update(dependency=f"afterok:{after}", additional_parameters={"kill-on-invalid-dep": "yes"})
    return params


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("the local and slurm executors need submitit, which is not installed",
                          "pip install 'hexa-zoo[submitit]' (or pip install submitit), or use --executor inline") from None
    return submitit


class Job:
    """Run in every task of a job; a subclass implements `run()`. Rank 0 reports to the board."""

    def __init__(self, name: str, board: str | os.PathLike, master_port: int = 29500):
        self.name, self.board, self.master_port = name, str(board), master_port
        self.threads = 0  # CPU threads per task (0: torch's default); run_local splits the cores

    def run(self) -> None:
        raise NotImplementedError

    def __call__(self) -> None:
        submitit = require_submitit()
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # the trainer joins the process group from these, exactly as under torchrun
            os.environ.update({"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks),
                               "LOCAL_RANK": str(env.local_rank), "MASTER_ADDR": env.hostnames[0],
                               "MASTER_PORT": str(self.master_port)})
        if self.threads:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(self.threads)  # the trainer then leaves torch's threads alone
            torch.set_num_threads(self.threads)
        take_over(getattr(signal, "SIG" + env.USR_SIG))  # a training loop stops at a step boundary first
        board = Board(self.board) if env.global_rank == 0 else None
        start, executor = time.perf_counter(), os.environ.get("SUBMITIT_EXECUTOR", "")
        if board:
            board.report(self.name, "running", job_id=str(env.job_id), executor=executor)
        try:
            self.run()
        except Exception as err:  # preemption (SystemExit, a signal) is no failure: the job requeues
            if board:
                board.report(self.name, "failed", job_id=str(env.job_id), error=f"{type(err).__name__}: {err}")
            raise
        if board:
            board.report(self.name, "done", job_id=str(env.job_id), executor=executor,
                         wall_s=round(time.perf_counter() - start, 1))

    def requeued(self) -> "Job":
        """The job to run again after preemption (itself, unless it must be told to resume)."""
        return self

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(self.requeued())


class HexaCommand(Job):
    """`hexa ARGV` in every task (`argv[0]` the subcommand); requeued with `--resume auto` where the command
    takes it (`resumable`) and it is not given yet, else as it was."""

    def __init__(self, argv: Sequence[str], name: str = "hexa", board: str | os.PathLike = "jobs",
                 master_port: int = 29500, resumable: bool = True):
        super().__init__(name, board, master_port)
        self.argv, self.resumable = list(argv), resumable

    def run(self) -> None:
        from hexa_zoo.cli import main

        code = main(self.argv)
        if code:
            raise RuntimeError(f"`hexa {' '.join(self.argv)}` exited with status {code} (its error is in the log)")

    def requeued(self) -> "HexaCommand":
        again = copy.copy(self)
        again.argv = self.argv + ([] if "--resume" in self.argv or not self.resumable else ["--resume", "auto"])
        return again


class Board:
    """`<folder>/<name>.submitted.json` (what was submitted where) and `<name>.state.json` (what the job said)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _read(self, name: str, kind: str) -> dict | None:
        import json

        path = self.folder / f"{name}.{kind}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def submitted(self, name: str, job, executor: str) -> None:
        atomic_write_json(self.folder / f"{name}.submitted.json", {
            "executor": executor, "job_id": str(job.job_id), "host": socket.gethostname(),
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "folder": str(job.paths.folder),
            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})

    def report(self, name: str, state: str, **extra) -> None:
        atomic_write_json(self.folder / f"{name}.state.json",
                          {"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
                           "pid": os.getpid(), **extra})

    def forget(self, name: str) -> None:
        """Drop what an earlier run of this job left (a resubmitted job must not read as its last failure)."""
        for kind in ("submitted", "state"):
            (self.folder / f"{name}.{kind}.json").unlink(missing_ok=True)

    def reported(self, name: str) -> dict | None:
        """What the job last reported: state, time, host, pid and, once done, its wall time."""
        return self._read(name, "state")

    def state(self, name: str) -> str | None:
        reported = self.reported(name)
        return reported["state"] if reported else None

    def status(self, name: str, alive: Callable[[dict], bool | None] | None = None) -> "JobStatus":
        """queued / running / done / failed / missing, with the job id and, for a failure, why and the log's tail."""
        submitted, reported = self._read(name, "submitted"), self._read(name, "state")
        job_id = (submitted or reported or {}).get("job_id", "")
        if reported and reported["state"] == "done":
            return JobStatus(name, "done", job_id)
        if reported and reported["state"] == "failed":
            return JobStatus(name, "failed", job_id, reported.get("error", ""), log_tail(submitted))
        if submitted is None:
            return JobStatus(name, "running" if reported else "missing", job_id)
        living = (alive or job_alive)(submitted)
        if living is False:
            return JobStatus(name, "failed", job_id, "the job ended without reporting an end (killed, or out of time)",
                             log_tail(submitted))
        state = "running" if reported else "queued"
        return JobStatus(name, state, job_id, "" if living else "the scheduler's state is unknown")


@dataclass(frozen=True)
class JobStatus:
    name: str
    state: str             # queued, running, done, failed, missing
    job_id: str = ""
    why: str = ""
    log: str = ""          # the last lines of the job's stderr, for a failure

    def failure_lines(self) -> list[str]:
        """Why a failed job failed and the tail of its log, indented under its status line (none otherwise)."""
        if self.state != "failed":
            return []
        return [f"    {self.why}"] + [f"    | {line}" for line in self.log.splitlines()]


def status_lines(rows: Sequence[tuple[str, str, str, JobStatus | None]], noun: str, width: int = 24) -> list[str]:
    """`--status`: one line per (name, state, stage, the job the state is about), a failure with its error and
    log tail under it, then `k of n <noun> done`."""
    lines = []
    for name, state, stage, job in rows:
        where = f" ({stage})" if stage and state != "done" else ""
        lines.append(f"{name:{width}s} {state}{where}{f' job {job.job_id}' if job and job.job_id else ''}")
        lines += job.failure_lines() if job and state == "failed" else []
    return lines + [f"{sum(state == 'done' for _, state, _, _ in rows)} of {len(rows)} {noun} done"]


def log_tail(submitted: dict | None, lines: int = 5) -> str:
    if not submitted:
        return ""
    path = Path(submitted.get("stderr", ""))
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def job_alive(submitted: dict) -> bool | None:
    """Whether a submitted job is queued or running: a local job's process, a SLURM job's state (None: unknown)."""
    if submitted["executor"] == "local":
        if submitted["host"] != socket.gethostname():
            return None
        try:
            os.kill(int(submitted["job_id"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = queue_state(submitted["job_id"])  # squeue: sacct answers nothing where accounting is off
    return None if state is None else state in ALIVE_SLURM_STATES


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def run_local(chains: Sequence[Sequence[Job]], folder: str | os.PathLike, parallel: int = 1, hours: float = 24.0,
              poll_s: float = 0.5, on_submit: Callable[[Job, object], None] | None = None) -> None:
    """Run each chain's jobs in order through submitit's local executor, `parallel` chains at a time.

    Each running chain holds a slot: one of the visible GPUs (where there are several) and a share of the
    CPU cores. A job that does not report done ends its chain; the others go on. Returns when all have ended.
    """
    submitit = require_submitit()
    parallel = max(1, parallel)
    gpus = local_gpus()
    threads = max(1, (os.cpu_count() or 1) // parallel)
    pending = deque(deque(chain) for chain in chains if chain)
    for job in (job for chain in pending for job in chain):
        Board(job.board).forget(job.name)
    running: dict[int, tuple[deque, Job, object]] = {}

    def submit(slot: int, chain: deque) -> None:
        job = copy.copy(chain.popleft())
        job.threads = threads
        executor = submitit.LocalExecutor(folder=folder)
        visible = (slot % gpus,) if gpus > 1 else tuple(range(gpus))
        executor.update_parameters(timeout_min=max(1, int(hours * 60)), tasks_per_node=1,
                                   gpus_per_node=len(visible), visible_gpus=visible)
        handle = executor.submit(job)
        Board(job.board).submitted(job.name, handle, "local")
        if on_submit:
            on_submit(job, handle)
        running[slot] = (chain, job, handle)

    while pending or running:
        for slot in range(parallel):
            if slot not in running and pending:
                submit(slot, pending.popleft())
        time.sleep(poll_s)
        for slot, (chain, job, handle) in list(running.items()):
            if not handle.done():
                continue
            del running[slot]
            if chain and Board(job.board).state(job.name) == "done":
                submit(slot, chain)


def submit_slurm(chains: Sequence[Sequence[tuple[Job, Resources]]], folder: str | os.PathLike,
                 make_executor: Callable | None = None) -> list[list[str]]:
    """Queue every chain on SLURM, each job after the one before it; returns the job ids per chain."""
    if make_executor is None:
        submitit = require_submitit()

        def make_executor(params: dict):
            executor = submitit.SlurmExecutor(folder=folder)
            executor.update_parameters(**params)
            return executor
    ids = []
    for chain in chains:
        after, chain_ids = None, []
        for job, res in chain:
            Board(job.board).forget(job.name)
            handle = make_executor(slurm_parameters(res, job.name, after)).submit(job)
            Board(job.board).submitted(job.name, handle, "slurm")
            after = str(handle.job_id)
            chain_ids.append(after)
        ids.append(chain_ids)
    return ids


def add_cluster_arguments(parser) -> None:
    """The executor's flags, the same for every command that submits jobs."""
    group = parser.add_argument_group("cluster (--executor local or slurm)")
    group.add_argument("--parallel", type=int, default=1, help="local: jobs at a time (one GPU each where several)")
    group.add_argument("--nodes", type=int, default=1, help="slurm: nodes of each pre-training job")
    group.add_argument("--gpus-per-node", type=int, default=8, help="slurm: GPUs per node (one task each)")
    group.add_argument("--tasks-per-node", type=int, default=0, help="slurm: tasks per node (0: one per GPU)")
    group.add_argument("--cpus-per-task", type=int, default=10)
    group.add_argument("--mem-gb", type=int, default=0, help="slurm: memory per node (0: the cluster's default)")
    group.add_argument("--hours", type=float, default=72, help="slurm: time limit of a job (requeued past it)")
    group.add_argument("--partition", help="slurm: partition")
    group.add_argument("--account", help="slurm: account to charge")
    group.add_argument("--constraint", help="slurm: node feature constraint, e.g. h100")


def resources(args) -> Resources:
    if args.parallel < 1 or args.nodes < 1:
        raise ConfigError(f"--parallel and --nodes must be at least 1 (got {args.parallel}, {args.nodes})",
                          "e.g. --parallel 2 --nodes 1")
    return Resources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                     cpus_per_task=args.cpus_per_task, hours=args.hours, partition=args.partition,
                     account=args.account, constraint=args.constraint, mem_gb=args.mem_gb)
