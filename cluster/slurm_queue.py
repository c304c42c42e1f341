"""What SLURM's queue says about a job, read with `squeue`: many small clusters keep no accounting, so
`sacct` (which submitit polls, warning on every call where it fails) answers nothing there.

- `queue_state(job_id)`: PENDING, RUNNING, COMPLETED, FAILED, ... as the controller has it; GONE once the
  job ended and left the controller's memory (MinJobAge); None where `squeue` does not answer.
- `follow(...)`: until a job ends, print each change of its state and the new lines of its log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

ALIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                      "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "PREEMPTED"}


def queue_state(job_id: str) -> str | None:
    try:
        found = subprocess.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = found.stdout.split()
    if found.returncode == 0:
        return words[0] if words else "GONE"
    return "GONE" if "Invalid job id" in found.stderr else None


def follow(job_id: str, log: Path, poll_s: float = 5.0, out: TextIO = sys.stdout) -> str:
    """Print `job ID: STATE` at each change and the log's new lines until the job leaves the alive states;
    returns the last state (None from squeue twice in a row reads as GONE: no scheduler to wait for)."""
    state, seen, unanswered = "", 0, 0
    while True:
        now = queue_state(job_id)
        unanswered = unanswered + 1 if now is None else 0
        now = now or ("GONE" if unanswered > 1 else state)
        if log.is_file():
            text = log.read_text(errors="replace")
            if len(text) < seen:  # a requeued job's log starts over where its folder was cleaned
                seen = 0
            out.write(text[seen:])
            seen = len(text)
        if now != state:
            print(f"job {job_id}: {now}", file=out, flush=True)
            state = now
        if state and state not in ALIVE_SLURM_STATES:
            return state
        out.flush()
        time.sleep(poll_s)
