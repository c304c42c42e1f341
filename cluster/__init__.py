"""The job runner: a command as a job on a SLURM cluster or as a process here, through submitit.

It stands on hexa_zoo and under the two floors whose commands it runs: `pretrain` (launch_slurm, the
trainer's stop at a step boundary on preemption) and `transfer` (the suite's protocol jobs); `hexa study`
(orchestration) queues its cells with it. submitit is imported only when a job is built or submitted.
"""
