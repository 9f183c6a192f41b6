"""Every atomic write survives a SIGKILL at any point of a replacement: the target is then the old
version or the new one, complete (never a partial folder or file), and the next write clears the litter."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdgrid.io import clean_stale_temporaries

FILES = 41  # as many as a data folder of the report

# A writer that replaces its target over and over, version after version, until it is killed.
WRITER = r"""
import json, sys, time
from pathlib import Path
import kdgrid.io as io
kind, target, exchange = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
if not exchange:
    io._renameat2 = False  # the rename-aside fallback (file systems without RENAME_EXCHANGE)
version = 0
print("ready", flush=True)
while True:
    version += 1
    if kind == "atomic_dir":
        with io.atomic_dir(target) as tmp:
            for i in range(FILES):
                (tmp / f"f{i:02d}.txt").write_text(str(version) * 200)
    elif kind == "write_json":
        io.write_json(target, {"version": version, "payload": [version] * 2000})
    elif kind == "write_jsonl":
        io.write_jsonl(target, [{"version": version, "i": i} for i in range(500)])
    else:
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(str(version).encode() * 50000)
""".replace("FILES", str(FILES))


def _versions(kind: str, target: Path) -> set:
    """The versions the target holds; raises if it is partial."""
    if kind == "atomic_dir":
        files = sorted(target.iterdir())
        assert len(files) == FILES, f"partial folder: {len(files)} of {FILES} files"
        versions = set()
        for f in files:
            text = f.read_text()
            assert len(text) >= 200 and len(set(text)) <= 10, f"partial file {f.name}"
            versions.add(text[: len(text) // 200])
        return versions
    if kind == "write_json":
        data = json.loads(target.read_text())
        assert data["payload"] == [data["version"]] * 2000
        return {data["version"]}
    if kind == "write_jsonl":
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        assert len(rows) == 500
        return {r["version"] for r in rows}
    data = target.read_bytes()
    assert data and len(data) % 50000 == 0, f"partial file: {len(data)} bytes"
    return {data[: len(data) // 50000]}


def _kill_during_replacements(tmp_path: Path, kind: str, exchange: bool, kills: int, seed: int) -> int:
    target = tmp_path / ("data" if kind == "atomic_dir" else "result.json")
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    missing = 0
    existed = False
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target), "1" if exchange else "0"],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if target.exists():
            assert len(_versions(kind, target)) == 1, f"{kind}: files of two versions mixed"
            existed = True
        elif existed:
            # only the rename-aside fallback, killed between its two renames, has no target for a moment;
            # the old version is then whole beside it (and the workflow re-runs the job: its output is missing)
            assert not exchange, f"{kind}: the target disappeared"
            aside = [p for p in tmp_path.iterdir() if p.name.endswith(".old.tmp")]
            assert len(aside) == 1 and len(_versions(kind, aside[0])) == 1
            missing += 1
    clean_stale_temporaries(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    return missing


@pytest.mark.parametrize("kind", ["atomic_dir", "write_json", "write_jsonl", "atomic_path"])
def test_a_kill_at_any_point_of_a_replacement_leaves_the_old_or_the_new_version_whole(tmp_path, kind):
    assert _kill_during_replacements(tmp_path, kind, exchange=True, kills=15, seed=13) == 0


def test_the_rename_aside_fallback_never_leaves_a_partial_folder(tmp_path):
    _kill_during_replacements(tmp_path, "atomic_dir", exchange=False, kills=15, seed=7)


def test_litter_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    from kdgrid.io import atomic_dir

    target = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    proc.wait()
    host = __import__("kdgrid.io", fromlist=["_HOST"])._HOST
    stale = tmp_path / f".data.{host}-{proc.pid}.abc123.tmp"
    stale.mkdir()
    (stale / "half.json").write_text("{")
    live = tmp_path / f".data.{host}-{os.getpid()}.live.tmp"  # ours: a writer still at work
    live.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "train.json").write_text("[]")
    assert not stale.exists() and live.exists()
    assert (target / "train.json").read_text() == "[]"


def test_files_a_library_writes_0600_into_a_folder_are_published_group_readable(tmp_path):
    """safetensors writes model.safetensors with mode 0600; a published folder follows the umask."""
    from kdgrid.io import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            weights = tmp / "model.safetensors"
            weights.write_bytes(b"x")
            os.chmod(weights, 0o600)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "model" / "model.safetensors").st_mode & 0o777 == 0o644


def test_the_locks_of_a_killed_run_are_removed_and_those_of_a_live_run_kept(tmp_path):
    import json as _json
    import socket

    from kdgrid.run_record import LOCKS, RUN_FILE, clear_stale_locks, record_run

    (tmp_path / LOCKS).mkdir(parents=True)
    lock = tmp_path / LOCKS / "0.output.lock"
    lock.write_text("results/x\n")
    record_run(tmp_path)  # this process: alive
    assert clear_stale_locks(tmp_path) is None and lock.exists()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / RUN_FILE).write_text(_json.dumps({"host": socket.gethostname(), "pid": proc.pid, "start_time": "1"}))
    assert "removed the locks" in clear_stale_locks(tmp_path)
    assert not lock.exists() and not (tmp_path / RUN_FILE).exists()


def test_each_attempt_of_a_job_keeps_its_own_log(tmp_path):
    """Snakemake deletes a job's log before running it again: every attempt's log survives that."""
    log = tmp_path / "logs" / "sft" / "seed1.log"
    log.parent.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for _ in range(2):
        log.unlink(missing_ok=True)  # what Snakemake does before each attempt
        with open(log, "w") as f:
            subprocess.run([sys.executable, "-m", "kdgrid", "grid", "summary", "--config",
                            str(Path(__file__).parents[1] / "config" / "tiny-ci.yaml")],
                           stdout=subprocess.DEVNULL, stderr=f, env=env, check=True)
    attempts = sorted((log.parent / "attempts").glob("seed1.*.log"))
    assert len(attempts) == 2
    assert all(a.read_text().startswith("==== kdgrid grid: started ") for a in attempts)
