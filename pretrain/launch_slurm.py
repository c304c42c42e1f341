"""Submit `hexa pretrain` to a SLURM cluster with submitit (`pip install 'hexa-zoo[submitit]'`).

    python -m pretrain.launch_slurm --nodes 4 --gpus-per-node 8 --partition gpu --hours 72 -- \\
        --config dcluster_v2_r50_800ep --data /datasets/imagenet/train --out /shared/runs/dc2_r50

Everything after `--` is passed to `hexa pretrain` unchanged. One SLURM task runs per GPU; each task
sets the variables torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from
submitit's job environment, so the trainer joins the process group exactly as under torchrun.
On preemption or time-out the job requeues itself with `--resume auto` and continues from the newest
checkpoint (`--out` must be on a filesystem every node sees). submitit is imported only here.
"""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
example:
  python -m pretrain.launch_slurm --nodes 2 --gpus-per-node 8 --partition gpu --hours 48 -- \\
      --config hexa_moco_r50_200ep --data /datasets/imagenet/train --out /shared/runs/hexa_moco_r50
"""


class PretrainJob:
    """A picklable callable that submitit runs in every task; `checkpoint` makes it requeue with resume."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        os.environ.update({
            "RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
            "MASTER_ADDR": env.hostnames[0], "MASTER_PORT": os.environ.get("MASTER_PORT", "29500"),
        })
        from hexa_zoo.cli import main

        return main(["pretrain", *self.argv])

    def checkpoint(self):
        import submitit

        argv = list(self.argv)
        if "--resume" not in argv:
            argv += ["--resume", "auto"]
        return submitit.helpers.DelayedSubmission(PretrainJob(argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch_slurm", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Run `hexa pretrain ARGS` on SLURM (arguments after --).")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
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
    executor = submitit.AutoExecutor(folder=args.logs)
    extra = {"slurm_partition": args.partition} if args.partition else {}
    if args.mem_gb:
        extra["mem_gb"] = args.mem_gb
    executor.update_parameters(name=args.name, nodes=args.nodes, tasks_per_node=args.gpus_per_node,
                               gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                               timeout_min=int(args.hours * 60), **extra)
    job = executor.submit(PretrainJob(rest))
    print(f"submitted job {job.job_id}: logs in {args.logs}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
