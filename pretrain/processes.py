"""Which process this is: torchrun's rank and world size, the device, and CPU threads per process.

One process by default; under torchrun or the SLURM launcher (WORLD_SIZE and MASTER_ADDR set) every
process joins the process group, NCCL on CUDA and gloo on CPU, with one GPU per local rank. As in MoCo's
own launcher, a launch of one process is distributed too (DDP over a group of one), so
`torchrun --nproc_per_node 1` runs the same code path as a multi-GPU job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool = False  # a process group is joined (possibly of one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_distributed() -> bool:
    """True under torchrun or the SLURM launcher, which set the env:// rendezvous variables."""
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def distributed() -> bool:
    """True once this process belongs to a process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def init_processes() -> tuple[Processes, bool]:
    """Join the launcher's process group (from RANK/WORLD_SIZE/LOCAL_RANK); returns (processes, we_created_it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    created = False
    if (world > 1 or launched_distributed()) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return Processes(rank, world, local, device, distributed()), created


def cpu_threads(threads: int, workers: int) -> int | None:
    """torch threads for a CPU process: `threads`, or the cores left per process after the loader workers.

    None (leave torch alone) when OMP_NUM_THREADS is set. Oversubscribed cores are ruinous here: on
    2 cores, 2 threads beside a loader worker train 3-4x slower than 1 thread.
    """
    if threads:
        return threads
    if "OMP_NUM_THREADS" in os.environ:
        return None
    from hexa_zoo.data import usable_cores

    per_process = usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, per_process - workers)
