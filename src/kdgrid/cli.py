"""The `kdgrid` command. Each subcommand lives in `kdgrid.commands.<module>` and exposes
`HELP`, `add_arguments(parser)` and `run(args)`; heavy libraries are imported inside `run` so that
`kdgrid --help` and the Snakemake rules' start-up stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .errors import KdgridError

COMMANDS = {
    "models": "models",
    "data": "data",
    "train": "train",
    "teacher-outputs": "teacher_outputs",
    "teacher-responses": "teacher_responses",
    "evaluate": "evaluate",
    "compare": "compare",
    "aggregate": "aggregate",
    "stats": "stats",
    "plots": "plots",
    "analyze": "analyze",
    "grid": "grid",
    "cluster": "cluster",
    "fingerprint": "fingerprint",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdgrid", description="kdgrid: run a knowledge-distillation experiment grid, from data to statistics and plots.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"kdgrid.commands.{module_name}")
        except ModuleNotFoundError as e:
            if e.name != f"kdgrid.commands.{module_name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _keep_attempt_log(command: str) -> None:
    """Give this attempt's log a name of its own, and head it with a line naming the attempt.

    Snakemake deletes a job's log before it runs the job: a retry, or a second run doing the same job
    (after a forced --unlock), would otherwise take the log of the first attempt with it, and the cause
    of a failure with it. When stderr is a log file, it is hard-linked to
    `<log folder>/attempts/<log name>.<UTC time>-<host>-<pid>.log`, which keeps receiving this attempt's
    output whatever happens to the job's log."""
    import datetime
    import os
    import socket
    import stat

    try:
        if not stat.S_ISREG(os.fstat(sys.stderr.fileno()).st_mode):
            return
        log = Path(os.readlink(f"/proc/self/fd/{sys.stderr.fileno()}"))
    except (OSError, ValueError, AttributeError):
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    host = socket.gethostname().split(".")[0]
    slurm = f", SLURM job {os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else ""
    print(f"==== kdgrid {command}: started {now:%Y-%m-%dT%H:%M:%SZ} on {host}, pid {os.getpid()}{slurm}",
          file=sys.stderr, flush=True)
    if not log.name.endswith(".log") or not log.is_file():
        return
    attempt = log.parent / "attempts" / f"{log.name.removesuffix('.log')}.{now:%Y%m%dT%H%M%SZ}-{host}-{os.getpid()}.log"
    try:
        attempt.parent.mkdir(exist_ok=True)
        os.link(log, attempt)  # the job's log is this attempt's file: the shell has just opened it
    except OSError:
        pass  # another file system, or no /proc: the job's log is all there is


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _keep_attempt_log(args.command)
    try:
        code = args._run(args)
    except KdgridError as e:
        print(f"kdgrid {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
