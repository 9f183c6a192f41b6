"""`kdgrid aggregate`: the results table from small synthetic scores.json / compare.json files."""

import json
import math

import pandas as pd
import pytest

from kdgrid.analysis.table import TABLE_COLUMNS, build_table, parse_sizes, read_table
from kdgrid.cli import main
from kdgrid.errors import KdgridError

TASKS = ["syn_arith", "syn_twostep"]
SIZES = ["tiny-s=0.01", "tiny-t=0.05"]
PROVENANCE = {"kdgrid": "0.1.0", "kdgrid_commit": "abc123", "torch": "2.13.0", "transformers": "5.0",
              "peft": "0.21", "deepspeed": "0.19", "lm_eval": "0.4.13"}


def scores(tmp_path, name, meta, accuracy, family="math"):
    path = tmp_path / name / "scores.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    acc = dict(zip(TASKS, accuracy))
    acc["Average"] = 999.0  # the table recomputes the Average from the tasks
    meta = {"provenance": PROVENANCE, **meta}
    path.write_text(json.dumps({"meta": {"family": family, **meta}, "family": family, "accuracy": acc,
                                "n": {t: 20 for t in TASKS}}))
    return path


def compare(tmp_path, name, meta, agreement, bleu, embedding=None):
    path = tmp_path / name / "compare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": {"family": "math", **meta}, "agreement": dict(zip(TASKS, agreement)),
                                "bleu": dict(zip(TASKS, bleu)),
                                "embedding_similarity": dict(zip(TASKS, embedding or [None, None]))}))
    return path


@pytest.fixture
def grid(tmp_path):
    kd_meta = {"cell": "math/tiny-t__tiny-s/fkl/t2.0/sft-teacher/seed1", "role": "kd", "model": "tiny-s",
               "teacher": "tiny-t", "student": "tiny-s", "method": "fkl", "temperature": 2.0, "noise_sigma": 0,
               "teacher_kind": "sft", "seed": 1}
    score_files = [
        scores(tmp_path, "base_s", {"cell": "math/base/tiny-s", "role": "base", "model": "tiny-s"}, [10.0, 20.0]),
        scores(tmp_path, "sft_s", {"cell": "math/sft/tiny-s/seed1", "role": "sft", "model": "tiny-s", "seed": 1}, [30.0, 41.0]),
        scores(tmp_path, "sft_t", {"cell": "math/sft/tiny-t/seed1", "role": "sft", "model": "tiny-t", "seed": 1}, [60.0, 70.0]),
        scores(tmp_path, "kd", kd_meta, [35.0, 50.0]),
    ]
    compare_files = [
        compare(tmp_path, "kd", {k: kd_meta[k] for k in ("cell", "role", "teacher", "student", "method", "seed")},
                [80.0, 60.0], [40.0, 30.0], [0.9, 0.7]),
        compare(tmp_path, "sft_s", {"cell": "math/sft/tiny-s/seed1", "role": "sft", "teacher": "tiny-t",
                                    "student": "tiny-s", "seed": 1}, [50.0, 40.0], [20.0, 10.0]),
    ]
    return tmp_path, score_files, compare_files


def test_aggregate_writes_one_tidy_table_as_csv_and_parquet(grid):
    tmp_path, score_files, compare_files = grid
    out_csv, out_parquet = tmp_path / "tables" / "results.csv", tmp_path / "tables" / "results.parquet"
    code = main(["aggregate", "--scores", *map(str, score_files), "--compare", *map(str, compare_files),
                 "--sizes", *SIZES, "--out-csv", str(out_csv), "--out-parquet", str(out_parquet)])
    assert code == 0
    table = read_table(out_csv)
    from_parquet = read_table(out_parquet)
    assert list(table.columns) == TABLE_COLUMNS
    pd.testing.assert_frame_equal(table, from_parquet, check_dtype=False)
    assert len(table) == 4 * 3  # 4 checkpoints x (2 tasks + Average)
    assert not list(tmp_path.glob("tables/.*"))  # no temporary file left behind

    kd = table[table["role"] == "kd"].set_index("task")
    assert kd.loc["syn_arith", "accuracy"] == 35.0
    assert kd.loc["Average", "accuracy"] == pytest.approx(42.5)  # mean of the tasks, not the 999 in the file
    assert kd.loc["syn_twostep", "agreement"] == 60.0 and kd.loc["Average", "agreement"] == pytest.approx(70.0)
    assert kd.loc["Average", "bleu"] == pytest.approx(35.0)
    assert kd.loc["Average", "embedding_similarity"] == pytest.approx(0.8)
    # the SFT student's agreement with the same teacher rides on the KD row
    assert kd.loc["syn_arith", "sft_agreement"] == 50.0 and kd.loc["Average", "sft_bleu"] == pytest.approx(15.0)
    assert math.isnan(kd.loc["Average", "sft_embedding_similarity"])
    assert kd.loc["Average", "student_size_b"] == 0.01 and kd.loc["Average", "teacher_size_b"] == 0.05
    assert kd.loc["syn_arith", ["method", "teacher_kind", "temperature", "noise_sigma"]].tolist() == ["fkl", "sft", 2.0, 0.0]
    assert kd.loc["syn_arith", "seed"] == 1 and kd.loc["syn_arith", "n_items"] == 20
    # which code scored each row (kdgrid.provenance)
    assert kd.loc["Average", ["kdgrid_commit", "torch_version", "lm_eval_version"]].tolist() == \
        ["abc123", "2.13.0", "0.4.13"]

    sft = table[table["role"] == "sft"]
    assert sft["teacher"].isna().all() and sft["agreement"].isna().all()
    assert set(sft["model"]) == {"tiny-s", "tiny-t"}
    teacher_avg = sft[(sft["model"] == "tiny-t") & (sft["task"] == "Average")]
    assert teacher_avg["accuracy"].item() == 65.0 and teacher_avg["student_size_b"].item() == 0.05
    base = table[table["role"] == "base"]
    assert base["seed"].isna().all() and list(base["task"]) == [*TASKS, "Average"]


def test_sft_comparison_with_another_seed_is_averaged(grid, tmp_path):
    _, score_files, compare_files = grid
    other = compare(tmp_path, "sft_s2", {"cell": "math/sft/tiny-s/seed2", "role": "sft", "teacher": "tiny-t",
                                         "student": "tiny-s", "seed": 2}, [70.0, 60.0], [0.0, 0.0])
    same_seed = build_table(score_files, [*compare_files, other], parse_sizes(SIZES))
    kd = same_seed[(same_seed["role"] == "kd") & (same_seed["task"] == "syn_arith")]
    assert kd["sft_agreement"].item() == 50.0  # the seed-1 comparison matches the seed-1 KD cell
    only_seed2 = build_table(score_files, [compare_files[0], other], parse_sizes(SIZES))
    kd = only_seed2[(only_seed2["role"] == "kd") & (only_seed2["task"] == "syn_arith")]
    assert kd["sft_agreement"].item() == 70.0


def test_a_checkpoint_missing_a_task_gets_no_average(grid, tmp_path, capsys):
    _, score_files, _ = grid
    path = tmp_path / "partial" / "scores.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"meta": {"cell": "math/sft/tiny-s/seed2", "role": "sft", "family": "math",
                                         "model": "tiny-s", "seed": 2}, "accuracy": {"syn_arith": 33.0}}))
    table = build_table([*score_files, path], [], parse_sizes(SIZES))
    partial = table[table["cell"] == "math/sft/tiny-s/seed2"].set_index("task")
    assert partial.loc["syn_arith", "accuracy"] == 33.0
    assert math.isnan(partial.loc["Average", "accuracy"])
    assert "syn_twostep" in capsys.readouterr().err


def test_bad_input_names_the_file_and_key(grid, tmp_path):
    _, score_files, compare_files = grid
    sizes = parse_sizes(SIZES)
    with pytest.raises(KdgridError, match=r"already read from"):
        build_table([*score_files, score_files[0]], [], sizes)
    with pytest.raises(KdgridError, match=r"no scores.json"):
        build_table(score_files[:3], compare_files[:1], sizes)
    with pytest.raises(KdgridError, match=r"no size for model 'tiny-t'.*--sizes tiny-t="):
        build_table(score_files, [], parse_sizes(["tiny-s=0.01"]))
    with pytest.raises(KdgridError, match=r"--sizes 'tiny-s'"):
        parse_sizes(["tiny-s"])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"meta": {"cell": "x", "family": "math"}, "accuracy": {"a": 1}}))
    with pytest.raises(KdgridError, match=r"broken.json: missing meta.role"):
        build_table([broken], [], sizes)
    broken.write_text(json.dumps({"meta": {"cell": "x", "family": "math", "role": "kd", "model": "tiny-s"},
                                  "accuracy": {"a": 1}}))
    with pytest.raises(KdgridError, match=r"broken.json: a KD checkpoint needs meta.teacher"):
        build_table([broken], [], sizes)
    broken.write_text(json.dumps({"meta": {"cell": "x", "family": "math", "role": "sft", "model": "tiny-s"},
                                  "accuracy": {"a": "high"}}))
    with pytest.raises(KdgridError, match=r"accuracy.a = 'high' is not a number"):
        build_table([broken], [], sizes)


def test_cli_reports_bad_input_without_traceback(grid, tmp_path, capsys):
    _, score_files, _ = grid
    code = main(["aggregate", "--scores", str(score_files[0]), str(tmp_path / "nope.json"),
                 "--out-csv", str(tmp_path / "r.csv"), "--out-parquet", str(tmp_path / "r.parquet"), "--sizes", *SIZES])
    assert code == 2
    assert "nope.json: file not found" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_aggregate_adds_the_split_half_accuracies_from_records(grid, capsys):
    from kdgrid.analysis.splits import split_of

    tmp_path, score_files, compare_files = grid
    records = []
    for path in score_files:
        items = [{"task": t, "doc_id": i, "correct": (i + k) % 2 == 0} for k, t in enumerate(TASKS) for i in range(20)]
        (path.parent / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
        records.append(str(path.parent / "records.jsonl"))
    out_csv, out_parquet = tmp_path / "results.csv", tmp_path / "results.parquet"
    args = ["aggregate", "--scores", *map(str, score_files), "--compare", *map(str, compare_files), "--sizes", *SIZES,
            "--out-csv", str(out_csv), "--out-parquet", str(out_parquet)]
    assert main(args + ["--records", *records]) == 0
    kd = read_table(out_csv).query("role == 'kd'").set_index("task")
    halves = {}
    for k, task in enumerate(TASKS):
        for half in (1, 2):
            mine = [(i + k) % 2 == 0 for i in range(20) if split_of(task, i) == half]
            halves[(task, half)] = 100 * sum(mine) / len(mine)
            assert kd.loc[task, f"accuracy_split{half}"] == pytest.approx(halves[(task, half)])
            assert kd.loc[task, f"n_items_split{half}"] == len(mine)
        assert kd.loc[task, "n_items_split1"] + kd.loc[task, "n_items_split2"] == kd.loc[task, "n_items"]
    assert kd.loc["Average", "accuracy_split1"] == pytest.approx((halves[(TASKS[0], 1)] + halves[(TASKS[1], 1)]) / 2)
    assert kd.loc["Average", ["n_items_split1", "n_items_split2"]].isna().all()  # as its n_items
    assert main(args + ["--records", *records[1:]]) != 0
    assert f"{score_files[0]}: no records.jsonl among --records" in capsys.readouterr().err
