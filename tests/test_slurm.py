"""The CI grid through profiles/slurm on a real SLURM cluster (`make test-slurm`: tests/slurm/cluster.sh
starts a throwaway single-node one and exports KDGRID_SLURM_PARTITION/ACCOUNT).

While the grid runs, three training jobs are interrupted the ways a cluster interrupts them:
- `scancel --signal=TERM` (what the profile's `--signal=TERM@300` does before a time limit): training saves
  a checkpoint at that step and exits non-zero, the job fails, Snakemake's retry resumes from that step;
- `scontrol requeue` (preemption with PreemptMode=REQUEUE): SLURM kills and reruns the same job, which
  resumes from the checkpoint the kill's SIGTERM made it save;
- `scancel` (a user cancelling it): the job ends CANCELLED, Snakemake must see it as failed (not wait
  forever) and retry it.
The run must finish (no hang) and its results table and statistics must equal a local run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from workflow_support import copy_workflow

PARTITION = os.environ.get("KDGRID_SLURM_PARTITION")
ACCOUNT = os.environ.get("KDGRID_SLURM_ACCOUNT")
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not (PARTITION and ACCOUNT and shutil.which("sbatch")),
                       reason="needs a SLURM cluster: make test-slurm starts one (tests/slurm/cluster.sh)"),
]

GRID = "config/tiny-ci.yaml"
COMPARED = ("results/tables/results.csv", "results/stats/hypotheses.csv")
SUMMARY = "results/stats/summary.md"
RUN_TIMEOUT_S = 900
STEP_DELAY_S = "2"  # each optimizer step of the SLURM run's training jobs lasts >= 2 s: time to signal it


def env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", GRID, *args]


def set_partition_and_account(workdir: Path, partition: str, account: str) -> None:
    """What the README tells a user to do: edit the two lines of profiles/slurm/config.yaml."""
    profile = workdir / "profiles/slurm/config.yaml"
    text = profile.read_text()
    edited = (text.replace('slurm_partition: "gpu"', f'slurm_partition: "{partition}"')
              .replace('slurm_account: "my-account"', f'slurm_account: "{account}"'))
    assert edited.count(partition) >= 1 and edited.count(account) >= 1 and edited != text
    profile.write_text(edited)


def slurm_job_ids() -> set[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-o", "JobIDRaw"], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def slurm_state(job_id: str) -> str:
    return subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_shipped_placeholders_stop_the_run_before_anything_is_submitted(tmp_path):
    workdir = copy_workflow(tmp_path / "placeholders")
    before = slurm_job_ids()
    run = subprocess.run(snakemake_cmd("--profile", "profiles/slurm"), cwd=workdir, env=env(), text=True,
                         capture_output=True, timeout=300, check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "slurm_partition 'gpu'" in out and f"one of: {PARTITION}" in out, out[-3000:]
    assert "slurm_account 'my-account' is not an account of user" in out, out[-3000:]
    assert slurm_job_ids() == before  # nothing submitted
    assert not (workdir / "resources").exists()  # not even the local rules ran


class Interrupter(threading.Thread):
    """Watches the training processes of the SLURM run (`kdgrid train` in its folder, with SLURM_JOB_ID in
    their environment) and interrupts one job per action once its training loop is about to start."""

    ACTIONS: ClassVar[dict[str, list[str]]] = {"signal": ["scancel", "--signal=TERM"], "requeue": ["scontrol", "requeue"], "cancel": ["scancel"]}

    def __init__(self, workdir: Path):
        super().__init__(daemon=True)
        self.workdir = workdir
        self.todo = list(self.ACTIONS)
        self.done: dict[str, dict] = {}  # action -> {job, out, steps_logged}
        self.stop = threading.Event()

    def training_jobs(self):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if len(argv) < 3 or not argv[1].endswith(b"/kdgrid") or argv[2] != b"train" \
                        or Path(os.readlink(proc / "cwd")) != self.workdir:
                    continue
                environ = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0")
                               if b"=" in item)
            except OSError:
                continue
            job = environ.get(b"SLURM_JOB_ID")
            args = [a.decode() for a in argv]
            if job and "--out" in args:
                yield job.decode(), self.workdir / args[args.index("--out") + 1]

    def run(self):
        used: set[Path] = set()
        while self.todo and not self.stop.is_set():
            for job, out in self.training_jobs():
                progress = out / "checkpoints" / "train_log.jsonl"
                if out in used or not progress.is_file():
                    continue
                action = self.todo.pop(0)
                steps = progress.read_text().count('"step":')
                subprocess.run([*self.ACTIONS[action], job], check=True)
                used.add(out)
                self.done[action] = {"job": job, "out": out, "steps_logged": steps}
                break
            time.sleep(0.1)


def run_rows(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "train_log.jsonl").read_text().splitlines()]


def test_the_ci_grid_on_slurm_survives_cancel_and_preemption_and_equals_a_local_run(tmp_path):
    local_dir, slurm_dir = copy_workflow(tmp_path / "local"), copy_workflow(tmp_path / "slurm")
    local = subprocess.Popen(snakemake_cmd("--cores", "4"), cwd=local_dir, env=env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    set_partition_and_account(slurm_dir, PARTITION, ACCOUNT)
    check = subprocess.run([sys.executable, "-m", "kdgrid", "cluster", "check", "--config", GRID], cwd=slurm_dir,
                           env=env(), text=True, capture_output=True, check=False)
    assert check.returncode == 0 and "jobs fit partition(s)" in check.stdout, check.stderr

    interrupter = Interrupter(slurm_dir)
    interrupter.start()
    started = time.time()
    slurm = subprocess.Popen(snakemake_cmd("--profile", "profiles/slurm"), cwd=slurm_dir,
                             env={**env(), "KDGRID_TEST_STEP_DELAY_S": STEP_DELAY_S}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        log, _ = slurm.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        slurm.terminate()
        log, _ = slurm.communicate(timeout=120)
        pytest.fail(f"the SLURM run hung: not done after {RUN_TIMEOUT_S} s\n{log[-5000:]}")
    finally:
        interrupter.stop.set()
    wall = time.time() - started
    (tmp_path / "slurm.log").write_text(log)
    assert slurm.returncode == 0, log[-5000:]
    assert set(interrupter.done) == set(Interrupter.ACTIONS), f"interrupted: {interrupter.done}\n{log[-3000:]}"
    print(f"SLURM run: {wall:.0f} s; interrupted: "
          + ", ".join(f"{a} job {d['job']} ({d['out'].relative_to(slurm_dir)})" for a, d in interrupter.done.items()))

    signalled, requeued, cancelled = (interrupter.done[a] for a in ("signal", "requeue", "cancel"))
    assert slurm_state(signalled["job"]) == "FAILED"  # exited non-zero after saving; Snakemake retried it
    assert slurm_state(cancelled["job"]).startswith("CANCELLED")  # "CANCELLED by 0", which sacct-polling misses
    assert slurm_state(requeued["job"]) == "COMPLETED"  # the same job id, run again by SLURM
    assert re.search(rf"SLURM-job '{cancelled['job']}' failed, SLURM status is: 'CANCELLED'", log), log[-3000:]
    for action in ("signal", "requeue"):
        done = interrupter.done[action]
        resumed = [r for r in run_rows(done["out"]) if r.get("event") == "resume"]
        # the checkpoint is the one the signal asked for (save_steps is 50, training 2 steps)
        assert len(resumed) == 1 and resumed[0]["from_step"] in (done["steps_logged"], done["steps_logged"] + 1) \
            and resumed[0]["from_step"] >= 1, (action, run_rows(done["out"]))
        assert [r["step"] for r in run_rows(done["out"]) if "step" in r] == [1, 2]

    # SLURM's log of every job, successful ones included (slurm-keep-successful-logs)
    slurm_logs = list((slurm_dir / ".snakemake/slurm_logs").glob("rule_*/*/*.log"))
    assert len(slurm_logs) >= 25 + 2, sorted(str(p) for p in slurm_logs)  # 25 SLURM jobs, 2 of them retried

    local_log, _ = local.communicate(timeout=RUN_TIMEOUT_S)
    assert local.returncode == 0, local_log[-5000:]
    for name in COMPARED:
        assert (slurm_dir / name).read_bytes() == (local_dir / name).read_bytes(), name
    # summary.md ends with the cost ledger's section (measured times): its statistics must be equal
    from kdgrid.analysis.cost import without_cost_section

    summaries = [without_cost_section((d / SUMMARY).read_text()) for d in (slurm_dir, local_dir)]
    assert "## math" in summaries[0] and "## Cost" not in summaries[0]
    assert summaries[0] == summaries[1], SUMMARY

    again = subprocess.run(snakemake_cmd("--profile", "profiles/slurm", "-n"), cwd=slurm_dir, env=env(),
                           text=True, capture_output=True, timeout=300, check=False)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
