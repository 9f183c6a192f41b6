"""Which code made a result: kdgrid's version and commit, and the versions of the libraries that decide
the numbers. Recorded in every training log, scores.json and comparison, and as columns of the results
table, so that a table mixing results of two code versions shows it."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# distribution name -> key in the record
LIBRARIES = {"torch": "torch", "transformers": "transformers", "peft": "peft", "deepspeed": "deepspeed",
             "lm_eval": "lm-eval"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(folder: Path) -> str | None:
    """The commit checked out where kdgrid is imported from, or None outside a git checkout."""
    try:
        run = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 and run.stdout.strip() else None


@lru_cache(maxsize=1)
def provenance() -> dict:
    """{"kdgrid": version, "kdgrid_commit": sha or None, "torch": version, ...} (None: not installed)."""
    from . import __version__

    record = {"kdgrid": __version__, "kdgrid_commit": _git_commit(Path(__file__).resolve().parent)}
    for key, distribution in LIBRARIES.items():
        record[key] = _version(distribution)
    return record


def table_columns() -> list[str]:
    """The results table's provenance columns, in order."""
    return [f"{key}_version" if key != "kdgrid_commit" else key for key in ("kdgrid", "kdgrid_commit", *LIBRARIES)]


def as_columns(record: dict | None) -> dict:
    record = record or {}
    return {column: record.get(key) or "" for column, key in zip(table_columns(), ("kdgrid", "kdgrid_commit", *LIBRARIES))}
