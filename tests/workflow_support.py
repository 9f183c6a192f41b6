"""Running the Snakemake workflow from tests: a private copy of it, and the jobs a dry run schedules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "config.yaml", "config", "profiles", "envs")
JOINS = {"aggregate": 1, "stats": 1, "plots": 1, "all": 1}  # the jobs every change to a result re-runs


def copy_workflow(dest: Path) -> Path:
    """The workflow's files (not its results) in `dest`, where runs cannot disturb the checkout."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_table(output: str) -> Counter:
    """The counts of Snakemake's "Job stats" table (empty when there is nothing to do)."""
    counts: Counter = Counter()
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            break
    return counts


def scheduled_jobs(output: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run lists."""
    jobs = []
    rule = None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, []))
        elif rule and line.strip().startswith("output:"):
            jobs[-1][1].extend(p.strip() for p in line.strip()[len("output:"):].split(","))
    return jobs


def planned_jobs(workdir: Path, configfile: str | Path) -> tuple[Counter, list[tuple[str, list[str]]]]:
    """The job table and the scheduled jobs of `snakemake -n --configfile CONFIGFILE` in `workdir`."""
    run = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert run.returncode == 0, run.stderr[-5000:]
    out = run.stdout + run.stderr
    return job_table(out), scheduled_jobs(out)
