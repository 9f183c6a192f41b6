"""The paper's data pinned by content: every LLM-Adapters file is checked against the git blob id of the
pinned commit (kdgrid/resources/llm_adapters.json), on the ten real test sets where they are present."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from kdgrid import realdata
from kdgrid.cli import main
from kdgrid.errors import KdgridError
from kdgrid.family_data import prepare_family, read_data_verified
from kdgrid.grid import expand_grid, load_config
from kdgrid.tasks import tasks_of

ROOT = Path(__file__).resolve().parents[1]
# where CI puts the shared data: shared/ beside the repository root (or $KDGRID_PAPER_TESTSETS)
REAL_TESTSETS = Path(os.environ.get("KDGRID_PAPER_TESTSETS")
                     or Path(__file__).resolve().parents[1].parent / "shared/paper/testsets")
TASKS = sorted(p.name for p in REAL_TESTSETS.iterdir()) if REAL_TESTSETS.is_dir() else []
needs_real = pytest.mark.skipif(not TASKS, reason=f"the paper's real test sets are not in {REAL_TESTSETS}")


def test_git_blob_id_is_what_git_hash_object_gives():
    # `printf "hello\n" | git hash-object --stdin`, and `printf "" | git hash-object --stdin`
    assert realdata.git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert realdata.git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


def test_the_streamed_id_of_a_file_is_the_id_of_its_bytes(tmp_path):
    data = bytes(range(256)) * 5000  # over one read block
    (tmp_path / "f").write_bytes(data)
    assert realdata.git_blob_id_file(tmp_path / "f") == realdata.git_blob_id(data)


def test_the_table_pins_every_file_the_adapter_reads():
    paths = [realdata.train_path(f) for f in ("math", "commonsense")]
    paths += [realdata.test_path(t.name) for f in ("math", "commonsense") for t in tasks_of(f, synthetic=False)]
    files = realdata.source_pin()["files"]
    assert sorted(paths) == sorted(files)
    for path, entry in files.items():
        assert re.fullmatch(r"[0-9a-f]{40}", entry["git_blob"]), path
        assert entry["size"] is None or entry["size"] > 0


@needs_real
@pytest.mark.parametrize("task", TASKS)
def test_the_real_test_sets_verify_against_the_table(task):
    found = realdata.find_local(realdata.test_path(task), REAL_TESTSETS)
    pinned = realdata.pinned_blob(realdata.test_path(task))
    assert found.verification == realdata.VERIFIED
    assert found.git_blob == pinned["git_blob"] and found.file.stat().st_size == pinned["size"]


def tampered_copy(task: str, root: Path, how: str) -> Path:
    data = (REAL_TESTSETS / task / "test.json").read_bytes()
    if how == "one byte":
        i = len(data) // 2
        data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
    else:
        data = data[: len(data) - 100]  # truncated
    (root / task).mkdir(parents=True, exist_ok=True)
    (root / task / "test.json").write_bytes(data)
    return root / task / "test.json"


@needs_real
@pytest.mark.parametrize("how", ["one byte", "truncation"])
@pytest.mark.parametrize("task", TASKS)
def test_a_changed_byte_and_a_truncation_are_refused(tmp_path, task, how):
    file = tampered_copy(task, tmp_path, how)
    expected = realdata.pinned_blob(realdata.test_path(task))["git_blob"]
    found = realdata.git_blob_id(file.read_bytes())
    assert found != expected
    with pytest.raises(KdgridError, match=re.escape(f"{file}: git blob id {found} does not match {expected}, "
                                                    f"the id of dataset/{task}/test.json")):
        realdata.find_local(realdata.test_path(task), tmp_path)
    # declared unverified, the same copy is read and marked so
    assert realdata.find_local(realdata.test_path(task), tmp_path, verify=False).verification == realdata.UNVERIFIED


@pytest.fixture
def math_folder(tmp_path, monkeypatch):
    """A local folder with the real math test sets and a stand-in Math10K (the real one is not stored
    here), which the table is made to pin to its own id."""
    if not TASKS:
        pytest.skip(f"the paper's real test sets are not in {REAL_TESTSETS}")
    local = tmp_path / "llm-adapters"
    math = [t for t in TASKS if t in ("gsm8k", "SVAMP", "AQuA")]
    for task in math:
        (local / "dataset" / task).mkdir(parents=True)
        shutil.copy(REAL_TESTSETS / task / "test.json", local / "dataset" / task / "test.json")
    stand_in = json.loads((REAL_TESTSETS / "gsm8k" / "test.json").read_text())[:20]
    train = local / realdata.train_path("math")
    train.parent.mkdir(parents=True)
    train.write_text(json.dumps(stand_in))
    pin = json.loads(json.dumps(realdata.source_pin()))
    pin["files"][realdata.train_path("math")] = {"git_blob": realdata.git_blob_id(train.read_bytes()), "size": None}
    monkeypatch.setattr(realdata, "source_pin", lambda: pin)
    return local, math


def prepare_cli(local, out, tasks, *extra):
    return main(["data", "prepare", "--family", "math", "--source", "llm-adapters", "--local", str(local),
                 "--tasks", ",".join(tasks), "--out", str(out), *extra])


def test_a_first_prepare_of_a_tampered_local_copy_fails_and_leaves_no_output(tmp_path, math_folder, capsys):
    local, tasks = math_folder
    file = local / "dataset" / tasks[-1] / "test.json"
    file.write_bytes(file.read_bytes()[:-1])
    out = tmp_path / "data" / "math"
    assert prepare_cli(local, out, tasks) == 2
    err = capsys.readouterr().err
    expected = realdata.pinned_blob(realdata.test_path(tasks[-1]))["git_blob"]
    assert f"{file}: git blob id {realdata.git_blob_id(file.read_bytes())} does not match {expected}" in err
    assert not out.exists() and not (tmp_path / "data").exists()


def test_a_verified_local_copy_records_its_ids_and_says_verified(tmp_path, math_folder, capsys):
    local, tasks = math_folder
    out = tmp_path / "math"
    assert prepare_cli(local, out, tasks) == 0
    printed = capsys.readouterr().out
    assert "data verified against the pinned commit's git blob ids" in printed
    source = json.loads((out / "source.json").read_text())
    assert source["data_verified"] is True and read_data_verified(out) is True
    for task in tasks:
        path = realdata.test_path(task)
        assert source["details"]["git_blob"][path] == realdata.pinned_blob(path)["git_blob"]
        assert source["details"]["verification"][path] == realdata.VERIFIED


def test_a_folder_declared_unverified_is_read_and_marked_unverified(tmp_path, math_folder, capsys):
    local, tasks = math_folder
    file = local / "dataset" / tasks[0] / "test.json"
    file.write_text(json.dumps(json.loads(file.read_text())[:5]))  # e.g. a user's excerpt
    out = tmp_path / "math"
    assert prepare_cli(local, out, tasks, "--no-verify") == 0
    captured = capsys.readouterr()
    assert "UNVERIFIED data" in captured.out and "not verified (data.verify: false)" in captured.err
    source = json.loads((out / "source.json").read_text())
    assert source["data_verified"] is False and read_data_verified(out) is False
    assert source["details"]["git_blob"][realdata.test_path(tasks[0])] == realdata.git_blob_id(file.read_bytes())


def test_downloads_cannot_be_declared_unverified(tmp_path):
    with pytest.raises(KdgridError, match="applies only with --source llm-adapters and --local"):
        prepare_family("math", "llm-adapters", tmp_path / "out", verify=False)


# --- the config: data.verify and the ids in the re-run decision -----------------------------------

def paper_with_data(**data):
    config = load_config(ROOT / "config.yaml")
    config["families"]["math"]["data"] = {**config["families"]["math"].get("data", {}), **data}
    return config


def test_verify_false_needs_a_local_folder():
    with pytest.raises(KdgridError, match=r"families\.math\.data\.verify: false .* needs .*data\.local"):
        expand_grid(paper_with_data(verify=False))


def test_the_pinned_ids_decide_re_runs_of_prepare_data(tmp_path, paper):
    grid = paper
    ids = grid.data_source_ids("math")
    assert ids[realdata.train_path("math")] == realdata.pinned_blob(realdata.train_path("math"))["git_blob"]
    assert set(ids) == {realdata.train_path("math")} | {realdata.test_path(t) for t in grid.families["math"].tasks}
    assert "--no-verify" not in grid.data_args("math")


def test_an_unverified_folder_is_identified_by_its_files_ids(tmp_path):
    local = tmp_path / "mine"
    (local / "gsm8k").mkdir(parents=True)
    (local / "gsm8k" / "test.json").write_text("[]")
    grid = expand_grid(paper_with_data(verify=False, local=str(local)))
    assert grid.data_args("math")[-1] == "--no-verify"
    before = grid.data_source_ids("math")
    assert before[realdata.test_path("gsm8k")] == realdata.git_blob_id(b"[]")
    assert before[realdata.test_path("SVAMP")] is None  # missing: preparing will say so
    (local / "gsm8k" / "test.json").write_text("[ ]")  # an edit re-runs prepare_data
    assert grid.data_source_ids("math")[realdata.test_path("gsm8k")] == realdata.git_blob_id(b"[ ]")


def test_the_results_table_carries_data_verified(tmp_path):
    from kdgrid.analysis.table import build_table

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"meta": {"cell": "math/base/m", "family": "math", "role": "base", "model": "m",
                                           "data_verified": False}, "accuracy": {"gsm8k": 10.0}, "n": {"gsm8k": 4}}))
    table = build_table([scores], [], {"m": 0.5})
    assert list(table["data_verified"]) == [False, False]  # gsm8k and the Average
