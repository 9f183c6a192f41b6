"""Synthetic tasks, record validation, the real-data adapters and `prepare_family`."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from kdgrid import realdata
from kdgrid.answers import is_correct
from kdgrid.errors import KdgridError
from kdgrid.family_data import prepare_family
from kdgrid.records import load_records
from kdgrid.synthetic import FAMILY_TASKS, generate_family
from kdgrid.tasks import get_task, tasks_of

FIXTURES = Path(__file__).parent / "fixtures" / "paper_testsets"
FIELDS = ["instruction", "input", "output", "answer"]


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- synthetic ----------------------------------------------------------------------------------

def test_synthetic_tasks_match_the_registry():
    for family, tasks in FAMILY_TASKS.items():
        assert list(tasks) == [t.name for t in tasks_of(family, synthetic=True)]


@pytest.mark.parametrize("family", sorted(FAMILY_TASKS))
def test_synthetic_records_format_and_gold_outputs_score_100(family):
    train, tests = generate_family(family, seed=7, n_train=90, n_test=60)
    assert len(train) == 90 and set(tests) == set(FAMILY_TASKS[family])
    for task, records in tests.items():
        assert len(records) == 60
        for r in records:
            assert list(r) == FIELDS and all(isinstance(v, str) for v in r.values())
            assert is_correct(task, r["output"], r["answer"]), (task, r)
            if get_task(task).kind == "keyword":
                assert r["answer"] in get_task(task).keywords
    test_keys = {(r["instruction"], r["input"]) for rs in tests.values() for r in rs}
    assert not test_keys & {(r["instruction"], r["input"]) for r in train}
    assert len({r["instruction"] for r in train}) == 90


def test_syn_choice_rationale_has_no_capital_a_to_e_before_the_letter():
    _, tests = generate_family("math", seed=3, n_train=0, n_test=200, tasks=["syn_choice"])
    for r in tests["syn_choice"]:
        before = r["output"][: r["output"].index(f"({r['answer']})")]
        assert not any(c in "ABCDE" for c in before), r


def _thing_named(instruction: str) -> str:
    from kdgrid.synthetic import CATEGORY

    named = [t for t in CATEGORY if f" has a {t}" in instruction]
    assert len(named) == 1, instruction
    return named[0]


def test_commonsense_answers_are_a_lookup_of_the_one_thing_named():
    """The design the tiny models can learn in the demo's budget (docs/tiny_world.md): the rationale
    and, for syn_bool and syn_pick, the keyword follow from the thing alone."""
    from kdgrid.synthetic import CATEGORY

    train, tests = generate_family("commonsense", seed=5, n_train=300, n_test=100)
    by_thing: dict = {}
    for task, records in [("train", train)] + list(tests.items()):
        for r in records:
            thing = _thing_named(r["instruction"])
            assert r["output"].startswith(f"it is a kind of {CATEGORY[thing]}, so the correct answer is "), r
            if task in ("syn_bool", "syn_pick"):
                assert by_thing.setdefault((task, thing), r["answer"]) == r["answer"], r
    assert {a for (task, _), a in by_thing.items() if task == "syn_pick"} == {f"answer{i}" for i in range(1, 5)}
    bools = [r["answer"] for r in tests["syn_bool"]]
    assert 0.3 < bools.count("true") / len(bools) < 0.7


def test_math_rationales_use_a_small_table_of_one_digit_facts():
    import re

    train, _ = generate_family("math", seed=5, n_train=900, n_test=0)
    facts = set()
    for r in train:
        for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", r["output"]):
            assert int(c) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op], r
            assert int(c) >= 1, r
            facts.add((a, op, b))
    assert 60 <= len(facts) <= 130  # 36 sums, 9 products, the differences of both tasks (100 here)
    sums = {(int(a), int(b)) for a, op, b in facts if op == "+"}
    products = {(int(a), int(b)) for a, op, b in facts if op == "*"}
    differences = {(int(a), int(b)) for a, op, b in facts if op == "-"}
    assert sums == {(a, b) for a in range(1, 7) for b in range(1, 7)}
    assert products == {(a, b) for a in range(2, 5) for b in range(2, 5)}
    assert all(1 <= b < a <= 12 for a, b in differences)  # the second step of syn_twostep starts from a sum


def test_synthetic_is_deterministic_and_seeded():
    a = generate_family("commonsense", seed=1, n_train=30, n_test=10)
    b = generate_family("commonsense", seed=1, n_train=30, n_test=10)
    c = generate_family("commonsense", seed=2, n_train=30, n_test=10)
    assert a == b and a != c


def test_synthetic_task_subset_keeps_the_same_test_sets():
    _, full = generate_family("math", seed=0, n_train=12, n_test=5)
    _, some = generate_family("math", seed=0, n_train=12, n_test=5, tasks=["syn_twostep"])
    assert some == {"syn_twostep": full["syn_twostep"]}


def test_synthetic_unknown_family_and_task():
    with pytest.raises(KdgridError, match="unknown family 'physics'.*commonsense, math"):
        generate_family("physics", 0, 1, 1)
    with pytest.raises(KdgridError, match="syn_arith"):
        generate_family("math", 0, 1, 1, tasks=["syn_bool"])


# --- records ------------------------------------------------------------------------------------

def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_load_records_normalises_missing_input_and_numeric_answer(tmp_path):
    f = write(tmp_path / "a.json", [{"instruction": "q", "output": "o", "answer": 576.0},
                                    {"instruction": "q", "input": "i", "output": "o", "answer": "B"}])
    assert load_records(f) == [{"instruction": "q", "input": "", "output": "o", "answer": "576.0"},
                               {"instruction": "q", "input": "i", "output": "o", "answer": "B"}]


@pytest.mark.parametrize("bad, message", [
    ({"instruction": "q", "input": "", "output": "o"}, "missing field 'answer'"),
    ({"instruction": "q", "input": "", "output": "o", "answer": None}, "field 'answer' is null"),
    ({"instruction": ["q"], "input": "", "output": "o", "answer": "1"}, "'instruction' must be a string"),
    ({"instruction": "q", "input": "", "output": "o", "answer": True}, "'answer' must be a string"),
    ({"instruction": " ", "input": "", "output": "o", "answer": "1"}, "'instruction' is empty"),
    ("just text", "must be a JSON object"),
])
def test_malformed_record_names_file_and_index(tmp_path, bad, message):
    good = {"instruction": "q", "input": "", "output": "o", "answer": "1"}
    f = write(tmp_path / "set.json", [good, good, bad])
    with pytest.raises(KdgridError, match=rf"set\.json, record 2 \(counting from 0\): .*{message}"):
        load_records(f)


def test_empty_or_non_list_file(tmp_path):
    with pytest.raises(KdgridError, match=r"empty\.json: no records"):
        load_records(write(tmp_path / "empty.json", []))
    assert load_records(tmp_path / "empty.json", allow_empty=True) == []
    with pytest.raises(KdgridError, match=r"obj\.json: expected a JSON list"):
        load_records(write(tmp_path / "obj.json", {"instruction": "q"}))


@pytest.mark.parametrize("task", sorted(p.name for p in FIXTURES.iterdir()))
def test_paper_test_set_fixtures_load(task):
    records = load_records(FIXTURES / task / "test.json")
    assert records and all(list(r) == FIELDS for r in records)
    assert get_task(task).family in ("math", "commonsense")


# --- real data: local mode ----------------------------------------------------------------------
# The fixtures are excerpts, knowingly not the pinned files: these tests read them with verify=False
# (tests/test_data_pinned.py checks the verification itself).

def fixture_train(family: str) -> list:
    """A stand-in training set built from the fixture test records (shape only, not the real set)."""
    tasks = [t.name for t in tasks_of(family, synthetic=False) if (FIXTURES / t.name).is_dir()]
    return [r for t in tasks for r in json.loads((FIXTURES / t / "test.json").read_text())]


def llm_adapters_folder(root: Path, flat: bool = False) -> Path:
    for family in ("math", "commonsense"):
        name = realdata.train_path(family)
        write(root / (Path(name).name if flat else name), fixture_train(family))
    for task_dir in FIXTURES.iterdir():
        target = root / task_dir.name if flat else root / "dataset" / task_dir.name
        target.mkdir(parents=True)
        shutil.copy(task_dir / "test.json", target / "test.json")
    return root


PRESENT = {"math": ["gsm8k", "SVAMP", "AQuA"], "commonsense": ["boolq", "piqa", "ARC-Easy"]}


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("family", ["math", "commonsense"])
def test_prepare_from_local_folder(tmp_path, family, flat):
    local = llm_adapters_folder(tmp_path / "src", flat)
    out = prepare_family(family, "llm-adapters", tmp_path / "out", tasks=PRESENT[family], local=local, limit_test=3,
                         verify=False)
    train = realdata.find_local(realdata.train_path(family), local, verify=False)
    assert load_records(out / "train.json") == load_records(train.file)
    for task in PRESENT[family]:
        expected = load_records(FIXTURES / task / "test.json")[:3]
        assert load_records(out / "test" / f"{task}.json") == expected
    source = json.loads((out / "source.json").read_text())
    assert source["details"]["commit"] == realdata.source_pin()["commit"]
    paths = {realdata.train_path(family)} | {realdata.test_path(t) for t in PRESENT[family]}
    assert set(source["details"]["sha256"]) == paths
    assert source["data_verified"] is False and source["details"]["verify"] is False
    assert source["details"]["git_blob"][train.path] == train.git_blob == realdata.git_blob_id(train.file.read_bytes())
    assert set(source["details"]["verification"].values()) == {realdata.UNVERIFIED}


def test_local_missing_file_names_what_was_looked_for(tmp_path):
    local = llm_adapters_folder(tmp_path / "src")
    with pytest.raises(KdgridError, match=r"dataset/SingleEq/test\.json not found in local folder"):
        prepare_family("math", "llm-adapters", tmp_path / "out", local=local, verify=False)
    assert not (tmp_path / "out").exists()


def test_local_n_train_is_a_seeded_subset_in_order(tmp_path):
    local = llm_adapters_folder(tmp_path / "src")
    full = load_records(realdata.find_local(realdata.train_path("math"), local, verify=False).file)
    a = prepare_family("math", "llm-adapters", tmp_path / "a", tasks=["AQuA"], local=local, n_train=5, seed=1,
                       verify=False)
    b = prepare_family("math", "llm-adapters", tmp_path / "b", tasks=["AQuA"], local=local, n_train=5, seed=1,
                       verify=False)
    sub = load_records(a / "train.json")
    assert tree_digest(a) == tree_digest(b)
    positions = [full.index(r) for r in sub]
    assert len(sub) == 5 and positions == sorted(positions)


# --- real data: downloads (no network: the HTTP call is replaced) ----------------------------

@pytest.fixture
def fake_http(monkeypatch):
    """Serve the fixture folder as if it were raw.githubusercontent.com at the pinned commit."""
    served = {}
    calls = []

    def http_get(url, timeout=realdata.DOWNLOAD_TIMEOUT_S):
        calls.append(url)
        path = url.split(realdata.source_pin()["commit"] + "/", 1)[1]
        return served[path]

    monkeypatch.setattr(realdata, "http_get", http_get)
    # the fixtures are excerpts: pin them (by default) to their own ids, as if they were the pinned files
    pin = dict(realdata.source_pin(), files={})
    monkeypatch.setattr(realdata, "source_pin", lambda: pin)
    for family in ("math", "commonsense"):
        served[realdata.train_path(family)] = json.dumps(fixture_train(family)).encode()
    for task_dir in FIXTURES.iterdir():
        served[realdata.test_path(task_dir.name)] = (task_dir / "test.json").read_bytes()
    pin["files"].update({path: {"git_blob": realdata.git_blob_id(data), "size": len(data)} for path, data in served.items()})
    return served, calls, pin["files"]


def test_download_of_a_pinned_file_is_checked_against_its_git_blob_id(tmp_path, fake_http):
    served, _, _ = fake_http
    cache = tmp_path / "cache"
    out = prepare_family("math", "llm-adapters", tmp_path / "out", tasks=["gsm8k"], download_dir=cache)
    path = realdata.test_path("gsm8k")
    assert (cache / path).read_bytes() == served[path] and not (cache / realdata.LOCK_NAME).exists()
    source = json.loads((out / "source.json").read_text())
    assert source["data_verified"] is True
    assert source["details"]["git_blob"][path] == realdata.git_blob_id(served[path])
    assert source["details"]["verification"][path] == realdata.VERIFIED

    (cache / path).unlink()
    served[path] = served[path].replace(b"Boarden", b"Smith")  # upstream changed under the same commit
    with pytest.raises(KdgridError, match=rf"git blob id {realdata.git_blob_id(served[path])} does not match "
                                          rf"{realdata.git_blob_id((FIXTURES / 'gsm8k' / 'test.json').read_bytes())}"
                                          r", the id of dataset/gsm8k/test\.json .*nothing was written"):
        realdata.fetch(path, cache)
    assert not [p for p in (cache / "dataset" / "gsm8k").iterdir()]  # no partial or temporary file


def test_download_records_sha256_on_first_use_and_checks_it_later(tmp_path, fake_http, capsys):
    served, calls, pinned = fake_http
    pinned.clear()  # files the table does not list (a task a user added): trust-on-first-use
    cache = tmp_path / "cache"
    out = prepare_family("math", "llm-adapters", tmp_path / "out", tasks=["gsm8k"], download_dir=cache)
    lock = json.loads((cache / realdata.LOCK_NAME).read_text())
    path = realdata.test_path("gsm8k")
    assert lock["commit"] == realdata.source_pin()["commit"]
    assert lock["sha256"][path] == hashlib.sha256(served[path]).hexdigest()
    assert (cache / path).read_bytes() == served[path]
    assert load_records(out / "test" / "gsm8k.json") == load_records(FIXTURES / "gsm8k" / "test.json")
    assert calls[0].startswith("https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/")
    err = capsys.readouterr().err
    assert "dataset/gsm8k/test.json is not in the pinned table" in err and "trust-on-first-use" in err
    assert json.loads((out / "source.json").read_text())["data_verified"] is False

    n_calls = len(calls)
    prepare_family("math", "llm-adapters", tmp_path / "out", tasks=["gsm8k"], download_dir=cache)
    assert len(calls) == n_calls  # verified local copies are reused

    (cache / path).unlink()
    served[path] = served[path].replace(b"Boarden", b"Smith")  # upstream changed under the same commit
    with pytest.raises(KdgridError, match=r"sha256 .* does not match .* lock file.*nothing was written"):
        realdata.fetch(path, cache)
    assert not (cache / path).exists()
    assert not [p for p in (cache / "dataset" / "gsm8k").iterdir()]  # no partial or temporary file


def test_download_mismatch_with_pinned_table(tmp_path, fake_http):
    served, _, pinned = fake_http
    path = realdata.test_path("AQuA")
    pinned[path] = {"git_blob": "0" * 40, "size": None}
    with pytest.raises(KdgridError, match=rf"git blob id {realdata.git_blob_id(served[path])} does not match 0{{40}}"):
        realdata.fetch(path, tmp_path / "cache")
    assert not (tmp_path / "cache" / path).exists()
    pinned[path] = {"git_blob": realdata.git_blob_id(served[path]), "size": len(served[path])}
    assert realdata.fetch(path, tmp_path / "cache").file.read_bytes() == served[path]


def test_tampered_downloaded_copy_is_refused(tmp_path, fake_http):
    cache = tmp_path / "cache"
    path = realdata.test_path("boolq")
    realdata.fetch(path, cache)
    (cache / path).write_text("[]")
    with pytest.raises(KdgridError, match="delete the file to download it again"):
        realdata.fetch(path, cache)


def test_offline_download_fails_at_once_and_explains_local_mode(tmp_path, monkeypatch):
    import time
    import urllib.error
    import urllib.request

    def no_network(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    start = time.monotonic()
    with pytest.raises(KdgridError, match=r"cannot download https://raw\.githubusercontent\.com/.*--local DIR"):
        prepare_family("math", "llm-adapters", tmp_path / "out", download_dir=tmp_path / "cache")
    assert time.monotonic() - start < 5
    assert not (tmp_path / "out").exists() and not list((tmp_path).rglob("*.json"))
    monkeypatch.setenv("KDGRID_OFFLINE", "1")
    with pytest.raises(KdgridError, match="KDGRID_OFFLINE=1.*local mode"):
        realdata.http_get("https://example.invalid/x.json")


# --- prepare_family -----------------------------------------------------------------------------

def test_prepare_synthetic_same_seed_same_bytes(tmp_path):
    a = prepare_family("math", "synthetic", tmp_path / "a", seed=5, n_train=40, n_test=8)
    b = prepare_family("math", "synthetic", tmp_path / "b", seed=5, n_train=40, n_test=8)
    c = prepare_family("math", "synthetic", tmp_path / "c", seed=6, n_train=40, n_test=8)
    assert set(tree_digest(a)) == {"train.json", "source.json"} | {f"test/{t}.json" for t in FAMILY_TASKS["math"]}
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a)["train.json"] != tree_digest(c)["train.json"]
    assert len(load_records(a / "train.json")) == 40
    assert all(len(load_records(a / "test" / f"{t}.json")) == 8 for t in FAMILY_TASKS["math"])


def test_prepare_limit_test_and_task_subset(tmp_path):
    out = prepare_family("commonsense", "synthetic", tmp_path / "d", n_train=10, n_test=9,
                         tasks=["syn_pick"], limit_test=4)
    assert sorted(p.name for p in (out / "test").iterdir()) == ["syn_pick.json"]
    assert len(load_records(out / "test" / "syn_pick.json")) == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "physics", "source": "synthetic"}, "unknown family 'physics'; known familys: commonsense, math"),
    ({"family": "math", "source": "hub"}, "unknown data source 'hub'; known data sources: llm-adapters, synthetic"),
    ({"family": "math", "source": "synthetic", "tasks": ["gsm8k"]}, "unknown synthetic math task 'gsm8k'.*syn_arith"),
    ({"family": "math", "source": "llm-adapters", "tasks": ["boolq"]}, "unknown llm-adapters math task 'boolq'.*gsm8k"),
    ({"family": "math", "source": "synthetic", "n_test": 0}, "test set of syn_arith is empty"),
    ({"family": "math", "source": "synthetic", "n_train": -1}, "n_train must be a non-negative integer"),
    ({"family": "math", "source": "synthetic", "local": "x"}, "--local reads the LLM-Adapters files"),
])
def test_prepare_errors(tmp_path, kwargs, message):
    with pytest.raises(KdgridError, match=message):
        prepare_family(out_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(KdgridError, match="not a kdgrid data directory"):
        prepare_family("math", "synthetic", tmp_path / "mine", n_train=3, n_test=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    out = prepare_family("math", "synthetic", tmp_path / "ok", n_train=3, n_test=1)
    prepare_family("math", "synthetic", out, n_train=3, n_test=2, tasks=["syn_arith"])  # replaces its own
    assert sorted(p.name for p in (out / "test").iterdir()) == ["syn_arith.json"]


def test_commonsense_training_set_beyond_the_world_is_refused_with_advice():
    # syn_bool and syn_pick have 400 distinct prompts each (20 names x 20 things)
    with pytest.raises(KdgridError, match="syn_bool: cannot draw 400 distinct items .*ask for fewer"):
        generate_family("commonsense", seed=0, n_train=1200, n_test=30)
