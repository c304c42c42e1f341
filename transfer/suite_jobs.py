"""`hexa transfer suite --executor local|slurm`: each protocol of the suite as its own job.

A job is `hexa transfer PROTOCOL --model ... --preset ...` (`cluster.jobs.HexaCommand`: one GPU, requeued on
preemption; the protocols that checkpoint run with `--resume auto` and continue), reporting to `<out>/jobs/`. `local` runs them here `--parallel N` at a time and
waits; `slurm` queues them and returns. Run again, the same command submits only the protocols whose job
neither reported done nor is still queued or running; `--status` lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cluster.jobs import Board, HexaCommand, Resources, run_local, submit_slurm
from cluster.jobs import status_lines as job_status_lines

from .suite import no_dataset


def protocol_jobs(model: str, out: str, runs, routed: dict, seed: int,
                  resumable: Sequence[str] = ()) -> tuple[list[HexaCommand], dict[str, str]]:
    """(one job per run of `suite.suite_runs` with a dataset, {label: why} for those without); the `resumable`
    protocols checkpoint as they train (`--resume auto`), so a requeued or re-run job continues where it stopped."""
    board = Path(out) / "jobs"
    jobs, missing = [], {}
    for label, name, preset, dataset in runs:
        if dataset is None:
            missing[label] = no_dataset(name)
            continue
        argv = ["transfer", name, "--model", model, "--data", dataset, "--out", str(out), "--preset", preset,
                "--seed", str(seed)]
        argv += ["--set", *routed[name]] if routed.get(name) else []
        argv += ["--resume", "auto"] if name in resumable else []
        jobs.append(HexaCommand(argv, name=label.replace(":", "__"), board=board, resumable=name in resumable))
    return jobs, missing


def status_lines(jobs: Sequence[HexaCommand]) -> list[str]:
    rows = [(job.name.replace("__", ":"), s.state, "", s) for job, s in ((j, Board(j.board).status(j.name)) for j in jobs)]
    return job_status_lines(rows, "protocols", width=28)


def submit_suite(jobs: Sequence[HexaCommand], executor: str, res: Resources, parallel: int = 1) -> list[str]:
    """Run (local) or queue (slurm) the protocols that are neither done nor in flight; returns their names."""
    todo = [job for job in jobs if Board(job.board).status(job.name).state in ("missing", "failed")]
    if not todo:
        return []
    logs = Path(todo[0].board) / "logs"
    if executor == "local":
        run_local([[job] for job in todo], logs, parallel=parallel, hours=res.hours)
    else:
        one_gpu = res.one_gpu()
        for job, ids in zip(todo, submit_slurm([[(job, one_gpu)] for job in todo], logs)):
            print(f"queued {job.name.replace('__', ':')}: job {ids[0]}")
    return [job.name for job in todo]
