"""`hexa study --executor local|slurm`: each cell as two jobs, its pre-training and then its transfer suite.

- The pre-training job is `hexa pretrain --config RECIPE --set ... --resume auto` (on SLURM: nodes x tasks,
  one task a GPU, requeued on preemption and resumed from its newest checkpoint).
- The suite job (one GPU) runs the cell's suite on the published trunk and writes the cell file: a cell is
  done when `cells/<cell>.json` exists, whatever ran it.
- `local` runs the chains as processes here, `--parallel N` at a time (`cluster.jobs.run_local`), and waits;
  `slurm` queues them, the suite job after its pre-training (`afterok`), and returns.

Every job reports to `<out>/jobs/` (`cluster.jobs.Board`); `cell_status` reads it back as queued,
running, done, failed (with the job id and the tail of its log) or missing, and a re-run submits only the
missing and failed cells (a failed cell whose pre-training finished submits its suite job alone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cluster.jobs import Board, HexaCommand, Job, JobStatus, Resources, run_local, submit_slurm
from cluster.jobs import status_lines as job_status_lines

from .plan import Cell


@dataclass(frozen=True)
class StudyJobs:
    """What every job of a study needs to know (picklable: it travels with the suite jobs)."""
    out: Path
    data: str
    suite: str
    mode: str
    budget: float
    overrides: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    data_for: tuple[str, ...] = ()
    pretrain_set: tuple[str, ...] = ()
    pretrain_resources: Resources = field(default_factory=Resources)
    suite_resources: Resources = field(default_factory=lambda: Resources(gpus_per_node=1, hours=48))

    @property
    def board(self) -> Path:
        return self.out / "jobs"


class CellSuite(Job):
    """The suite on one cell's published trunk, then its cell file."""

    def __init__(self, cell: Cell, study: StudyJobs):
        super().__init__(f"{cell.name}.suite", study.board)
        self.cell, self.study = cell, study

    def run(self) -> None:
        from .cells import finish_cell, published_dir

        s = self.study
        zoo_dir = published_dir(self.cell, s.data, s.out, s.pretrain_set)
        if not (zoo_dir / "model.safetensors").is_file():
            from hexa_zoo.errors import ConfigError

            raise ConfigError(f"{self.cell.name}'s pre-training did not publish {zoo_dir}",
                              f"see its job's log under {s.board}, then rerun the same hexa study command")
        pretrained = Board(s.board).reported(f"{self.cell.name}.pretrain") or {}
        finish_cell(self.cell, zoo_dir, s.out, data=s.data, suite=s.suite, mode=s.mode, budget=s.budget,
                    overrides=s.overrides, only=s.only, data_for=s.data_for, pretrain_wall_s=pretrained.get("wall_s", 0.0),
                    executor=pretrained.get("executor", ""))


def cell_chain(cell: Cell, index: int, study: StudyJobs) -> list[Job]:
    """The jobs still to run for a cell: its pre-training unless that reported done, then its suite."""
    from .cells import cell_recipe, pretrain_overrides

    jobs: list[Job] = []
    if Board(study.board).state(f"{cell.name}.pretrain") != "done":
        argv = ["pretrain", "--config", cell_recipe(cell), "--set",
                *pretrain_overrides(cell, study.data, study.out, study.pretrain_set), "--resume", "auto"]
        jobs.append(HexaCommand(argv, name=f"{cell.name}.pretrain", board=study.board,
                                master_port=29500 + index % 1000))  # cells sharing a node need their own port
    return jobs + [CellSuite(cell, study)]


@dataclass(frozen=True)
class CellStatus:
    cell: str
    state: str          # queued, running, done, failed, missing
    stage: str = ""     # pretrain or suite: the job the state is about
    job: JobStatus | None = None


def cell_status(cell: Cell, out: Path, alive: Callable | None = None) -> CellStatus:
    board = Board(Path(out) / "jobs")
    suite = board.status(f"{cell.name}.suite", alive)
    if (Path(out) / "cells" / f"{cell.name}.json").is_file():
        return CellStatus(cell.name, "done", "suite", suite)
    pretrain = board.status(f"{cell.name}.pretrain", alive)
    for stage, status in (("pretrain", pretrain), ("suite", suite)):
        if status.state == "failed":
            return CellStatus(cell.name, "failed", stage, status)
    for state in ("running", "queued"):  # the chain's first job not done: both queued reads as the pre-training
        for stage, status in (("pretrain", pretrain), ("suite", suite)):
            if status.state == state:
                return CellStatus(cell.name, state, stage, status)
    return CellStatus(cell.name, "missing", "suite" if pretrain.state == "done" else "", None)


def status_lines(cells: Sequence[Cell], out: Path, alive: Callable | None = None) -> list[str]:
    """One line per cell (the failed ones with their error and log tail), then `k of n cells done`."""
    rows = [(s.cell, s.state, s.stage, s.job) for s in (cell_status(cell, out, alive) for cell in cells)]
    return job_status_lines(rows, "cells")


def submit(cells: Sequence[Cell], study: StudyJobs, executor: str, parallel: int = 1,
           make_executor: Callable | None = None) -> list[str]:
    """Run (local) or queue (slurm) the cells that are neither done nor in flight; returns their names."""
    todo = [(i, c) for i, c in enumerate(cells) if cell_status(c, study.out).state in ("missing", "failed")]
    chains = [cell_chain(cell, i, study) for i, cell in todo]
    logs = study.board / "logs"
    if executor == "local":
        start = time.perf_counter()
        run_local(chains, logs, parallel=parallel, hours=study.pretrain_resources.hours,
                  on_submit=lambda job, handle: print(f"started {job.name} (job {handle.job_id}, "
                                                      f"{time.perf_counter() - start:.0f} s)", flush=True))
    else:
        res = {True: study.pretrain_resources, False: study.suite_resources}
        ids = submit_slurm([[(job, res[isinstance(job, HexaCommand)]) for job in chain] for chain in chains], logs,
                           make_executor=make_executor)
        for (_, cell), chain_ids in zip(todo, ids):
            print(f"queued {cell.name}: jobs {' -> '.join(chain_ids)}")
    return [c.name for _, c in todo]
