"""Submit `hexa pretrain` to a SLURM cluster with submitit (`pip install 'hexa-zoo[submitit]'`).

    python -m pretrain.launch_slurm --nodes 4 --gpus-per-node 8 --partition gpu --hours 72 -- \\
        --config dcluster_v2_r50_800ep --data /datasets/imagenet/train --out /shared/runs/dc2_r50

Everything after `--` is passed to `hexa pretrain` unchanged. One SLURM task runs per GPU; each task
sets the variables torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from
submitit's job environment, so the trainer joins the process group exactly as under torchrun.
On preemption or time-out the job requeues itself with `--resume auto` and continues from the newest
checkpoint (`--out` must be on a filesystem every node sees). The job itself is `cluster.jobs.HexaCommand`,
the one `hexa study` and `hexa transfer suite` submit too; submitit is imported only when a job is submitted.

`--cluster local` runs the same job on this machine through submitit's local executor (one node,
`--tasks-per-node` processes; on CPU they train with gloo): a dry run of a cluster job before it
queues. `--wait` blocks until the job ends and returns its exit status; on SLURM it follows the job
with `squeue` (no accounting needed), printing each change of its state and its log as it grows.
"""

from __future__ import annotations

import argparse
import sys

from cluster.jobs import Board, HexaCommand, code_setup
from cluster.slurm_queue import follow

EPILOG = """\
example:
  python -m pretrain.launch_slurm --nodes 2 --gpus-per-node 8 --partition gpu --hours 48 -- \\
      --config hexa_moco_r50_200ep --data /datasets/imagenet/train --out /shared/runs/hexa_moco_r50
"""


class PretrainJob(HexaCommand):
    """`hexa pretrain ARGV` in every task (cluster.jobs: torchrun's variables from submitit's environment,
    requeued with `--resume auto`), reporting to the board in `board` (the logs folder)."""

    def __init__(self, argv: list[str], master_port: int = 29500, board: str = "slurm_logs"):
        super().__init__(["pretrain", *argv], name="pretrain", board=board, master_port=master_port)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch_slurm", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Run `hexa pretrain ARGS` on SLURM (arguments after --).")
    parser.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                        help="slurm, or local: this machine through submitit's local executor (one node)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--tasks-per-node", type=int, default=0,
                        help="processes per node (0: one per GPU, or one on a machine without GPUs)")
    parser.add_argument("--master-port", type=int, default=29500, help="the rendezvous port on the first node")
    parser.add_argument("--wait", action="store_true",
                        help="wait for the job to end, showing its state and log, and return its exit status")
    parser.add_argument("--poll-s", type=float, default=10.0, help="--wait on slurm: seconds between looks at squeue")
    parser.add_argument("--cpus-per-task", type=int, default=10)
    parser.add_argument("--mem-gb", type=int, default=0, help="memory per node (0: the cluster's default)")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--hours", type=float, default=72)
    parser.add_argument("--logs", default="slurm_logs", help="folder for submitit's logs")
    parser.add_argument("--name", default="hexa-pretrain")
    args = parser.parse_args(ours)
    if not rest:
        parser.error("give the `hexa pretrain` arguments after --, e.g. -- --config moco_v2_r50_200ep --data DIR --out DIR")
    try:
        import submitit
    except ImportError:
        print("submitit is not installed: pip install 'hexa-zoo[submitit]' (or pip install submitit)", file=sys.stderr)
        return 1
    if args.cluster == "local" and args.nodes != 1:
        parser.error("--cluster local runs on one node: use --nodes 1 (and --tasks-per-node for more processes)")
    tasks = args.tasks_per_node or max(1, args.gpus_per_node)
    executor = submitit.AutoExecutor(folder=args.logs, cluster=args.cluster)
    extra = {"slurm_partition": args.partition} if args.partition and args.cluster == "slurm" else {}
    if args.mem_gb:
        extra["mem_gb"] = args.mem_gb
    if args.cluster == "slurm":
        extra.update(slurm_setup=code_setup(), slurm_signal_delay_s=120)  # as cluster.jobs.slurm_parameters
    executor.update_parameters(name=args.name, nodes=args.nodes, tasks_per_node=tasks,
                               gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                               timeout_min=int(args.hours * 60), **extra)
    board = Board(args.logs)
    board.forget("pretrain")  # an earlier job's report in the same folder is not this one's
    job = executor.submit(PretrainJob(rest, args.master_port, board=args.logs))
    board.submitted("pretrain", job, args.cluster)
    print(f"submitted job {job.job_id}: logs in {args.logs}/", flush=True)
    if not args.wait:
        return 0
    if args.cluster == "slurm":  # squeue, not submitit's sacct polling: quiet where accounting is off
        follow(str(job.job_id), job.paths.stderr, poll_s=args.poll_s)
        status = board.status("pretrain", alive=lambda submitted: False)
        if status.state != "done":
            print("\n".join([f"job {job.job_id} {status.state}"] + status.failure_lines() + [f"logs: {args.logs}/"]),
                  file=sys.stderr)
        return 0 if status.state == "done" else 1
    try:
        job.results()  # one per task; a task that failed raises here
    except Exception as err:  # submitit re-raises the task's failure with its log excerpt
        print(f"job {job.job_id} failed: {err}\nlogs: {args.logs}/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
