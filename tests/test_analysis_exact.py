"""Statistics that hold at any number of cells and seeds: permutation p-values beside the asymptotic
ones, the smallest n that can reach significance, signed effect sizes, seeds as repeated measures,
held-out temperature selection, on hand-made tables and on a real CI-grid table (tests/fixtures)."""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdgrid.analysis.hypotheses import min_n, run_hypotheses, smallest_p
from kdgrid.analysis.improvement import kd_cells
from kdgrid.analysis.splits import split_accuracies, split_of
from kdgrid.analysis.summary import summary_markdown
from kdgrid.analysis.table import TABLE_COLUMNS, read_table, write_table
from kdgrid.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "results_ci_3seeds" / "results.csv"
SIZES = {"s1": 0.5, "s2": 1.5, "s3": 3.0, "s4": 4.0, "T": 7.0}


def rows(role, model, accuracy, seed=1, teacher=None, method=None, temperature=None, splits=None):
    """One checkpoint on a single task `A` plus its Average (the same value)."""
    out = []
    for task in ("A", "Average"):
        out.append({
            "family": "math", "task": task, "role": role, "cell": f"{role}/{teacher}/{model}/{method}/{temperature}/{seed}",
            "model": model, "teacher": teacher, "student": model if role == "kd" else None, "method": method,
            "temperature": temperature, "noise_sigma": 0.0 if role == "kd" else None,
            "teacher_kind": "sft" if role == "kd" else None, "seed": seed, "accuracy": accuracy, "n_items": 10,
            "accuracy_split1": splits[0] if splits else None, "accuracy_split2": splits[1] if splits else None,
            "n_items_split1": 5 if splits else None, "n_items_split2": 5 if splits else None,
            "student_size_b": SIZES[model], "teacher_size_b": SIZES[teacher] if teacher else None,
        })
    return out


def table_of(records):
    table = pd.DataFrame(records).reindex(columns=TABLE_COLUMNS)
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    return table


def pick(results, hypothesis, method="all", task="Average"):
    row = results[(results["hypothesis"] == hypothesis) & (results["method"] == method) & (results["task"] == task)]
    assert len(row) == 1, (hypothesis, method, task)
    return row.iloc[0]


def test_smallest_p_and_min_n_match_enumeration():
    assert smallest_p("spearman", 3) == pytest.approx(1 / 3)  # 6 orderings, the observed one and its reverse
    assert smallest_p("signflip", 4) == 1 / 16
    assert (min_n("spearman"), min_n("signflip")) == (5, 5)
    # the ANOVA: all assignments of 4 values to two methods of two cells, F of the most extreme one
    values = np.array([1.0, 2.0, 10.0, 11.0])
    fs = [stats.f_oneway(values[list(g)], values[[i for i in range(4) if i not in g]]).statistic
          for g in itertools.combinations(range(4), 2)]
    assert smallest_p("anova", 4, [2, 2]) == pytest.approx(np.mean(np.array(fs) >= max(fs) - 1e-9))
    assert min_n("anova", 2) == 7 and smallest_p("anova", 7, [3, 4]) < 0.05 < smallest_p("anova", 6, [3, 3])


def test_h3_like_perfect_rank_correlation_of_three_cells_is_not_supported(tmp_path):
    # three students, improvement falling with size: rho = -1, n = 3 (the demo's H3_student_size fkl row)
    records = []
    for student, sft, kd in (("s1", 20.0, 30.0), ("s2", 40.0, 45.0), ("s3", 60.0, 61.0)):
        records += rows("sft", student, sft) + rows("kd", student, kd, teacher="T", method="fkl", temperature=1.0)
    records += rows("sft", "T", 80.0)
    path = tmp_path / "results.csv"
    write_table(table_of(records), path)
    assert main(["stats", "--table", str(path), "--out-csv", str(tmp_path / "h.csv"), "--out-md", str(tmp_path / "s.md")]) == 0
    results = pd.read_csv(tmp_path / "h.csv")
    h3 = pick(results, "H3_student_size", "fkl")
    assert h3["n"] == 3 and h3["statistic"] == pytest.approx(-1.0)
    assert h3["p_value"] == 0.0  # the asymptotic p the paper's method gives for |rho| = 1
    assert h3["p_perm"] == pytest.approx(1 / 3) and "exact, all" in h3["perm_test"]
    assert h3["p_min"] == pytest.approx(1 / 3) and h3["min_n"] == 5
    assert not h3["significant"] and h3["verdict_p"] == "p_perm_holm"
    summary = (tmp_path / "s.md").read_text()
    line = next(x for x in summary.splitlines() if x.startswith("| H3_student_size | fkl |"))
    assert "p_perm = 0.33" in line
    assert "not supported (n = 3: the permutation test cannot give p < 0.05 below n = 5)" in line
    # three positive improvements: the asymptotic t-test may be significant, the sign-flip test cannot (1/8)
    h1 = pick(results, "H1_ttest", "fkl")
    assert h1["p_perm"] == pytest.approx(1 / 8) and not h1["significant"]


def test_permutation_p_values_are_those_of_full_enumeration():
    rng = np.random.default_rng(3)
    improvements = rng.normal(1.0, 2.0, 6)
    sizes = [0.5, 1.5, 3.0, 4.0, 0.5, 1.5]
    records = rows("sft", "T", 80.0)
    for i, (x, size) in enumerate(zip(improvements, sizes)):
        student = f"x{i}"
        SIZES[student] = size + i / 100  # distinct sizes
        records += rows("sft", student, 50.0) + rows("kd", student, 50.0 + x, teacher="T", method="fkl" if i < 3 else "rkl",
                                                    temperature=1.0)
    results, _ = run_hypotheses(table_of(records))
    # sign-flip: every one of the 2^6 sign patterns
    means = [np.mean(improvements * signs) for signs in itertools.product([1, -1], repeat=6)]
    expected = np.mean(np.array(means) >= improvements.mean() - 1e-12)
    assert pick(results, "H1_ttest")["p_perm"] == pytest.approx(expected)
    # Spearman: every one of the 6! orderings, two-sided as twice the smaller tail
    rho = stats.spearmanr(improvements, [SIZES[f"x{i}"] for i in range(6)]).statistic
    null = [stats.spearmanr(improvements, p).statistic for p in itertools.permutations([SIZES[f"x{i}"] for i in range(6)])]
    tail = min(np.mean(np.array(null) >= rho - 1e-12), np.mean(np.array(null) <= rho + 1e-12))
    row = pick(results, "H3_student_size")
    assert row["statistic"] == pytest.approx(rho) and row["p_perm"] == pytest.approx(min(1.0, 2 * tail))
    # ANOVA: every split of the 6 cells into two methods of 3 (20 of them)
    fs = [stats.f_oneway(improvements[list(g)], improvements[[i for i in range(6) if i not in g]]).statistic
          for g in itertools.combinations(range(6), 3)]
    observed = stats.f_oneway(improvements[:3], improvements[3:]).statistic
    assert pick(results, "H1_anova")["p_perm"] == pytest.approx(np.mean(np.array(fs) >= observed - 1e-9))


def test_effect_sizes_carry_their_sign():
    records = rows("sft", "T", 80.0)
    for student, loss in (("s1", -12.0), ("s2", -8.0), ("s3", -10.0), ("s4", -7.0)):
        records += rows("sft", student, 50.0) + rows("kd", student, 50.0 + loss, teacher="T", method="fkl", temperature=1.0)
    results, cells = run_hypotheses(table_of(records))
    h1 = pick(results, "H1_ttest")
    x = np.array([-12.0, -8.0, -10.0, -7.0])
    assert h1["effect_size"] == pytest.approx(x.mean() / x.std(ddof=1)) and h1["effect_size"] < 0
    assert h1["effect_ci_low"] < h1["effect_size"] < h1["effect_ci_high"]
    assert h1["effect_ci_low"] + h1["effect_ci_high"] == pytest.approx(2 * h1["effect_size"])  # around the signed d
    h3 = pick(results, "H3_student_size")
    assert h3["effect_size"] == pytest.approx(stats.spearmanr(x, [0.5, 1.5, 3.0, 4.0]).statistic)
    assert h3["effect_size"] > 0 and h3["effect_ci_low"] < h3["effect_size"] < h3["effect_ci_high"]
    summary = summary_markdown(results, cells, "t.csv")
    assert "mean -9.25 points, d = -" in summary


def seeded_table(cells=(("s1", 4.0), ("s2", 1.0), ("s3", 2.5), ("s4", -1.0)), seeds=(1, 2, 3), noise=1.5):
    """SFT and KD per seed; a KD cell's true improvement plus seed noise."""
    rng = np.random.default_rng(11)
    records = rows("sft", "T", 80.0)
    for student, effect in cells:
        for seed in seeds:
            sft = 50.0 + rng.normal(0, noise)
            records += rows("sft", student, sft, seed=seed)
            records += rows("kd", student, sft + effect + rng.normal(0, noise), seed=seed, teacher="T", method="fkl",
                            temperature=1.0)
    return table_of(records)


def per_seed(table, student):
    kd = table[(table["role"] == "kd") & (table["student"] == student) & (table["task"] == "Average")].set_index("seed")
    sft = table[(table["role"] == "sft") & (table["model"] == student) & (table["task"] == "Average")].set_index("seed")
    return (kd["accuracy"] - sft["accuracy"]).sort_index()


def test_one_cell_over_seeds_is_a_paired_t_test():
    table = seeded_table(cells=(("s1", 3.0),))
    results, cells = run_hypotheses(table)
    row = pick(results, "H1_seeds")
    kd = table[(table["role"] == "kd") & (table["task"] == "Average")].sort_values("seed")["accuracy"].to_numpy()
    sft = table[(table["role"] == "sft") & (table["model"] == "s1") & (table["task"] == "Average")].sort_values("seed")["accuracy"].to_numpy()
    expected = stats.ttest_rel(kd, sft, alternative="greater")
    assert row["statistic"] == pytest.approx(expected.statistic) and row["p_value"] == pytest.approx(expected.pvalue)
    assert row["p_perm"] == pytest.approx(1 / 8) and not row["significant"]  # 3 seeds: 2^3 sign patterns
    cell = cells[cells["task"] == "Average"].iloc[0]
    interval = stats.ttest_1samp(kd - sft, 0).confidence_interval(0.95)
    assert (cell["improvement_ci_low"], cell["improvement_ci_high"]) == pytest.approx((interval.low, interval.high))


def test_several_cells_over_seeds_use_a_mixed_model():
    table = seeded_table()
    results, cells = run_hypotheses(table)
    row = pick(results, "H1_seeds")
    assert row["n"] == 12 and row["n_seeds"] == 3 and "mixed model" in row["test"] and row["dof"] == 3
    # balanced design with a clear cell effect: REML's intercept test is the t-test on the cell means
    means = [per_seed(table, s).mean() for s in ("s1", "s2", "s3", "s4")]
    expected = stats.ttest_1samp(means, 0, alternative="greater")
    assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-3)
    assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-2)
    assert row["p_perm"] == pytest.approx(smallest_p("signflip", 4) * sum(  # sign-flip of whole cells
        np.mean(np.array(means) * np.array(s)) >= np.mean(means) - 1e-12 for s in itertools.product([1, -1], repeat=4)))
    for student in ("s1", "s2", "s3", "s4"):
        cell = cells[(cells["student"] == student) & (cells["task"] == "Average")].iloc[0]
        interval = stats.ttest_1samp(per_seed(table, student), 0).confidence_interval(0.95)
        assert (cell["improvement_ci_low"], cell["improvement_ci_high"]) == pytest.approx((interval.low, interval.high))


def test_held_out_temperature_selection():
    # temperature 2 wins on half 1 by chance and loses on half 2; temperature 1 is the better one
    records = rows("sft", "T", 80.0) + rows("sft", "s1", 50.0, splits=(50.0, 50.0))
    records += rows("kd", "s1", 60.0, teacher="T", method="fkl", temperature=1.0, splits=(58.0, 62.0))
    records += rows("kd", "s1", 61.0, teacher="T", method="fkl", temperature=2.0, splits=(70.0, 52.0))
    cell = kd_cells(table_of(records)).query("task == 'Average'").iloc[0]
    assert cell["improvement"] == pytest.approx(11.0) and cell["best_temperature"] == 2.0  # the paper's selection
    # chosen on half 1 (t2) scored on half 2: 52; chosen on half 2 (t1) scored on half 1: 58
    assert cell["heldout_temperatures"] == "2/1"
    assert cell["improvement_heldout"] == pytest.approx((52.0 + 58.0) / 2 - 50.0)


def test_split_halves_are_fixed_and_scored_from_records(tmp_path):
    assert [split_of("gsm8k", i) for i in range(8)] == [split_of("gsm8k", i) for i in range(8)]
    assert {split_of("gsm8k", i) for i in range(40)} == {1, 2}
    path = tmp_path / "records.jsonl"
    items = [{"task": "A", "doc_id": i, "correct": i % 3 == 0} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    halves = split_accuracies(path)["A"]
    for half in (1, 2):
        mine = [r["correct"] for r in items if split_of("A", r["doc_id"]) == half]
        assert halves[f"accuracy_split{half}"] == pytest.approx(100 * sum(mine) / len(mine))


@pytest.fixture(scope="module")
def ci_table():
    return read_table(FIXTURE)


@pytest.mark.parametrize("seeds", [[1], [1, 2, 3]])
def test_ci_grid_table_reports_nothing_a_permutation_test_could_not_reach(ci_table, seeds, tmp_path):
    table = ci_table[ci_table["seed"].isna() | ci_table["seed"].isin(seeds)]
    path = tmp_path / "results.parquet"
    write_table(table, out_parquet=path)
    out_csv, out_md, out_cells = tmp_path / "h.csv", tmp_path / "s.md", tmp_path / "cells.csv"
    assert main(["stats", "--table", str(path), "--out-csv", str(out_csv), "--out-md", str(out_md),
                 "--out-cells", str(out_cells)]) == 0
    results = pd.read_csv(out_csv)
    computed = results[results["statistic"].notna()]
    assert (computed["significant"] == (computed["p_perm_holm"] < 0.05)).all()
    assert not (results["significant"].fillna(False).astype(bool) & (results["p_min"] >= 0.05)).any()
    summary = out_md.read_text()
    assert "| H1_seeds | all |" in summary and "Power:" in summary
    cells = pd.read_csv(out_cells)
    assert cells["improvement_heldout"].notna().all()  # the table carries split accuracies from records.jsonl
    if len(seeds) == 3:
        assert "95% CI over seeds" in summary and "| tiny-m → tiny-xs | fkl | 1.0 | 0.00 | 0.00 | +0.00 | [+0.00, +0.00] | 3 |" in summary
        assert "every seed of a cell gives the same improvement" in summary
    else:
        assert "one seed per cell; a seed-aware test needs two or more seeds" in summary


def test_seed_aware_summary_on_a_three_seed_table(tmp_path):
    path = tmp_path / "results.csv"
    write_table(seeded_table(), path)
    assert main(["stats", "--table", str(path), "--out-csv", str(tmp_path / "h.csv"), "--out-md", str(tmp_path / "s.md")]) == 0
    summary = (tmp_path / "s.md").read_text()
    line = next(x for x in summary.splitlines() if x.startswith("| H1_seeds | all |"))
    assert "Average: t = " in line and "n = 12" in line
    cell_line = next(x for x in summary.splitlines() if x.startswith("| T → s1 | fkl |"))
    assert cell_line.count("[") == 1 and "| 3 |" in cell_line
    assert "Seeds: the per-seed improvement of a cell varies with sd" in summary


def test_accuracy_figure_shows_the_seed_intervals_of_each_cell():
    import matplotlib.pyplot as plt

    from kdgrid.analysis.figures import fig1_accuracy

    label = "KD cell: mean and 95% CI over seeds"
    for seeds, shown in (((1, 2, 3), True), ((1,), False)):
        table = seeded_table(seeds=seeds)
        fig = fig1_accuracy(table, kd_cells(table))
        assert (label in [t.get_text() for t in fig.legends[0].get_texts()]) == shown
        plt.close(fig)
