"""The `kdgrid` command. Each subcommand lives in `kdgrid.commands.<module>` and exposes
`HELP`, `add_arguments(parser)` and `run(args)`; heavy libraries are imported inside `run` so that
`kdgrid --help` and the Snakemake rules' start-up stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def _log_header(command: str) -> None:
    """One line at the top of each attempt in a job's log (the rules append to it), so that two runs or
    retries of one job can be told apart."""
    import datetime
    import os
    import socket

    if sys.stderr.isatty():
        return
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    slurm = f", SLURM job {os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else ""
    print(f"==== kdgrid {command}: started {started} on {socket.gethostname()}, pid {os.getpid()}{slurm}",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_header(args.command)
    try:
        code = args._run(args)
    except KdgridError as e:
        print(f"kdgrid {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
