"""Fault injection on the CI grid (config/tiny-ci.yaml): the workflow is killed whole (SIGKILL to its
process group) and single training processes are killed, at seeded points; it is then run again until
it finishes, never with `--unlock`. The final results table and statistics must equal those of an
uninterrupted run, byte for byte.

Heavy (two complete runs of the grid and the interrupted ones): `make test-faults`, not the default suite;
7 min 37 s here on 2026-12-01 (2 shared CPU cores; 21 min under a load of 14). The table records the
checkout's commit (kdgrid.provenance): a commit made while the test runs makes the two tables differ.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow_support import copy_workflow, snakemake

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEED = 13
COMPARED = ("results/tables/results.csv", "results/stats/hypotheses.csv")
RUN = ("--configfile", "config/tiny-ci.yaml", "--cores", "2", "--rerun-incomplete")


def _start(workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.Popen([sys.executable, "-m", "snakemake", *RUN], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _training_processes(pgid: int) -> list[int]:
    """The `kdgrid train` processes of a run (its process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getpgid(int(entry.name)) == pgid and b"train" in argv and any(b"kdgrid" in a for a in argv):
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found


def _kill_workflow(workdir: Path, after_s: float) -> str:
    proc = _start(workdir)
    try:
        proc.wait(timeout=after_s)
        return f"finished before its kill at {after_s:.1f} s"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"workflow killed at {after_s:.1f} s"
    finally:
        proc.stdout.close()


def _kill_one_training(workdir: Path, delay_s: float) -> str:
    proc = _start(workdir)
    killed = None
    deadline = time.time() + 900
    while proc.poll() is None and killed is None and time.time() < deadline:
        pids = _training_processes(proc.pid)
        if pids:
            time.sleep(delay_s)
            for pid in _training_processes(proc.pid)[:1]:
                os.kill(pid, signal.SIGKILL)
                killed = pid
        time.sleep(0.2)
    proc.communicate(timeout=1200)
    return f"training process {killed} killed {delay_s:.1f} s into it" if killed else "no training left to kill"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("uninterrupted"))
    run = snakemake(workdir, *RUN, timeout=1500)
    assert run.returncode == 0, run.stderr[-5000:]
    return workdir


def test_kills_at_seeded_points_then_re_runs_give_the_uninterrupted_results(reference, tmp_path):
    rng = random.Random(SEED)
    workdir = copy_workflow(tmp_path / "interrupted")
    events = []
    for _ in range(3):
        events.append(_kill_workflow(workdir, rng.uniform(4.0, 40.0)))
        events.append(_kill_one_training(workdir, rng.uniform(0.5, 4.0)))
    for attempt in range(4):  # re-run until done, as a user would (no --unlock: stale locks are removed)
        run = snakemake(workdir, *RUN, timeout=1500)
        out = run.stdout + run.stderr
        assert "LockException" not in out, events
        if run.returncode == 0:
            break
    assert run.returncode == 0, (events, out[-5000:])
    for path in COMPARED:
        assert (workdir / path).read_bytes() == (reference / path).read_bytes(), (path, events)
    leftovers = [p for p in (workdir / "results").rglob("*.tmp")]
    assert leftovers == [], leftovers
