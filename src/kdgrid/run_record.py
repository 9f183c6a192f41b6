"""Which Snakemake run holds the working directory's locks, so that the locks of a killed run can be
told from those of a live one.

Snakemake locks its working directory (`.snakemake/locks/`) for the length of a run and removes the
locks when it ends; a run killed outright (SIGKILL, a node lost) leaves them, and the next run stops
with a LockException until `snakemake --unlock`, which is safe only if no run is active. The workflow
records its run here when it starts (host, process id and that process's start time); the next run,
on the same host, removes the locks only if that process no longer exists.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from .io import process_alive

RUN_FILE = Path(".snakemake") / "kdgrid-run.json"
LOCKS = Path(".snakemake") / "locks"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start_time: str | None) -> bool:
    """Running, and the same process (a reused pid has another start time)."""
    return process_alive(pid) and (start_time is None or _start_time(pid) in (None, start_time))


def record_run(workdir: str | os.PathLike = ".") -> None:
    from .io import write_json

    pid = os.getpid()
    write_json(Path(workdir) / RUN_FILE, {"host": socket.gethostname(), "pid": pid, "start_time": _start_time(pid)})


def forget_run(workdir: str | os.PathLike = ".") -> None:
    (Path(workdir) / RUN_FILE).unlink(missing_ok=True)


def clear_stale_locks(workdir: str | os.PathLike = ".") -> str | None:
    """Remove the locks of a recorded run that is gone (same host, process ended); say what was done."""
    workdir = Path(workdir)
    locks = sorted((workdir / LOCKS).glob("*.lock")) if (workdir / LOCKS).is_dir() else []
    record_file = workdir / RUN_FILE
    if not locks or not record_file.is_file():
        return None
    try:
        run = json.loads(record_file.read_text(encoding="utf-8"))
        host, pid, start_time = run["host"], int(run["pid"]), run.get("start_time")
    except (ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or _alive(pid, start_time):
        return None
    for lock in locks:
        lock.unlink(missing_ok=True)
    record_file.unlink(missing_ok=True)
    return (f"removed the locks of the Snakemake run (pid {pid} on {host}) that was killed before it could "
            "remove them; its unfinished jobs are re-run (rerun-incomplete)")
