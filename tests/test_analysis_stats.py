"""`kdgrid stats`: the hypothesis tests on a hand-made table, against scipy computed here."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kdgrid.analysis.hypotheses import run_hypotheses
from kdgrid.analysis.table import TABLE_COLUMNS, write_table
from kdgrid.cli import main

TASKS = ["A", "B"]
SIZES = {"s1": 0.5, "s2": 1.5, "s3": 3.0, "T1": 7.0, "T2": 14.0}
SFT = {"s1": {"A": 20.0, "B": 30.0}, "s2": {"A": 40.0, "B": 50.0}, "s3": {"A": 60.0, "B": 62.0},
       "T1": {"A": 70.0, "B": 75.0}, "T2": {"A": 80.0, "B": 85.0}}
PAIRS = [("T1", "s1"), ("T1", "s2"), ("T2", "s1"), ("T2", "s2"), ("T2", "s3")]
TEMPERATURES = {"fkl": [1.0, 2.0], "rkl": [1.0]}


def checkpoint(role, model, accuracy, seed=1, teacher=None, method=None, temperature=None, noise=None, kind=None,
               agreement=None, bleu=None):
    """Rows of one checkpoint: its tasks and their Average."""
    rows = []
    for task in [*TASKS, "Average"]:
        value = (lambda d: sum(d[t] for t in TASKS) / len(TASKS) if d else None)
        rows.append({
            "family": "math", "task": task, "role": role, "cell": f"{role}/{teacher}/{model}/{method}/{temperature}/{kind}/{noise}/{seed}",
            "model": model, "teacher": teacher, "student": model if role == "kd" else None, "method": method,
            "temperature": temperature, "noise_sigma": noise, "teacher_kind": kind, "seed": seed,
            "accuracy": value(accuracy) if task == "Average" else accuracy[task], "n_items": 10,
            "agreement": (value(agreement) if task == "Average" else agreement[task]) if agreement else None,
            "bleu": (value(bleu) if task == "Average" else bleu[task]) if bleu else None,
            "embedding_similarity": None, "sft_agreement": None, "sft_bleu": None, "sft_embedding_similarity": None,
            "student_size_b": SIZES[model], "teacher_size_b": SIZES[teacher] if teacher else None,
        })
    return rows


def make_table(pairs=PAIRS, sft_students=("s1", "s2", "s3")):
    rng = np.random.default_rng(7)
    rows = []
    for model in set(sft_students) | {"T1", "T2"}:
        rows += checkpoint("sft", model, SFT[model])
    rows += checkpoint("sft", "s1", {t: v + 2 for t, v in SFT["s1"].items()}, seed=2)  # s1's SFT has two seeds
    for teacher, student in pairs:
        for method, temperatures in TEMPERATURES.items():
            for temperature in temperatures:
                seeds = [1, 2] if (teacher, student, method) == ("T1", "s1", "fkl") else [1]
                for seed in seeds:
                    acc = {t: SFT[student][t] + float(rng.normal(3, 3)) for t in TASKS}
                    agreement = {t: float(rng.uniform(30, 90)) for t in TASKS}
                    bleu = {t: float(rng.uniform(10, 60)) for t in TASKS}
                    rows += checkpoint("kd", student, acc, seed, teacher, method, temperature, 0.0, "sft", agreement, bleu)
        # teacher-signal ablations: far better accuracies that must not count as "best over temperatures"
        rows += checkpoint("kd", student, {t: 99.0 for t in TASKS}, 1, teacher, "fkl", 1.0, 0.0, "base")
        rows += checkpoint("kd", student, {t: 98.0 for t in TASKS}, 1, teacher, "fkl", 1.0, 2.0, "sft")
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    return table


def expected_cells(table, task):
    """Improvement and predictors per (teacher, student, method), computed directly from the rows."""
    rows = table[(table["task"] == task)].to_dict("records")
    sft = {}
    for r in rows:
        if r["role"] == "sft":
            sft.setdefault(r["model"], []).append(r["accuracy"])
    sft = {m: sum(v) / len(v) for m, v in sft.items()}
    runs = {}
    for r in rows:
        if r["role"] == "kd" and r["teacher_kind"] == "sft" and r["noise_sigma"] == 0:
            runs.setdefault((r["teacher"], r["student"], r["method"], r["temperature"]), []).append(r)
    best = {}
    for (teacher, student, method, _), seeds in runs.items():
        accuracy = sum(r["accuracy"] for r in seeds) / len(seeds)
        agreement = sum(r["agreement"] for r in seeds) / len(seeds)
        bleu = sum(r["bleu"] for r in seeds) / len(seeds)
        key = (teacher, student, method)
        if key not in best or accuracy > best[key]["kd"]:
            best[key] = {"kd": accuracy, "agreement": agreement, "bleu": bleu}
    cells = []
    for (teacher, student, method), b in best.items():
        cells.append({"teacher": teacher, "student": student, "method": method, "improvement": b["kd"] - sft[student],
                      "teacher_sft": sft[teacher], "size": SIZES[student], "student_sft": sft[student],
                      "agreement": b["agreement"], "bleu": b["bleu"]})
    return pd.DataFrame(cells)


def pick(results, hypothesis, method, task):
    row = results[(results["hypothesis"] == hypothesis) & (results["method"] == method) & (results["task"] == task)]
    assert len(row) == 1, (hypothesis, method, task)
    return row.iloc[0]


@pytest.fixture(scope="module")
def table():
    return make_table()


@pytest.fixture(scope="module")
def results(table):
    return run_hypotheses(table)[0]


@pytest.mark.parametrize("task", ["A", "B", "Average"])
def test_h1_ttest_matches_scipy(results, table, task):
    cells = expected_cells(table, task)
    for method in ["all", "fkl", "rkl"]:
        x = cells["improvement"] if method == "all" else cells.loc[cells["method"] == method, "improvement"]
        expected = stats.ttest_1samp(x, 0, alternative="greater")
        row = pick(results, "H1_ttest", method, task)
        assert row["n"] == len(x) == (10 if method == "all" else 5)
        assert row["statistic"] == pytest.approx(expected.statistic)
        assert row["p_value"] == pytest.approx(expected.pvalue)
        assert row["effect_size"] == pytest.approx(x.mean() / x.std(ddof=1))
        assert row["mean_improvement"] == pytest.approx(x.mean())
        assert row["ci_low"] < x.mean() and row["ci_high"] == math.inf
        assert row["reason"] == "" or pd.isna(row["reason"])


def test_h1_anova_matches_scipy(results, table):
    cells = expected_cells(table, "A")
    expected = stats.f_oneway(*[cells.loc[cells["method"] == m, "improvement"] for m in ["fkl", "rkl"]])
    row = pick(results, "H1_anova", "all", "A")
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert set(results.loc[results["hypothesis"] == "H1_anova", "method"]) == {"all"}


@pytest.mark.parametrize("hypothesis, column", [("H2_teacher_score", "teacher_sft"), ("H3_student_size", "size"),
                                                 ("H3_student_sft", "student_sft"), ("H4_agreement", "agreement"),
                                                 ("H5_fidelity", "bleu")])
def test_correlations_match_scipy_spearman(results, table, hypothesis, column):
    for task in ["A", "B"]:
        cells = expected_cells(table, task)
        for method in ["all", "rkl"]:
            chosen = cells if method == "all" else cells[cells["method"] == method]
            expected = stats.spearmanr(chosen["improvement"], chosen[column])
            row = pick(results, hypothesis, method, task)
            assert row["n"] == len(chosen)
            assert row["statistic"] == pytest.approx(expected.statistic)
            assert row["p_value"] == pytest.approx(expected.pvalue)
            assert row["ci_low"] <= row["statistic"] <= row["ci_high"]
    has_average = ((results["hypothesis"] == hypothesis) & (results["task"] == "Average")).any()
    assert has_average == (hypothesis not in ("H4_agreement", "H5_fidelity"))


def test_holm_correction_across_tasks(results):
    group = results[(results["hypothesis"] == "H3_student_size") & (results["method"] == "all")]
    p = group["p_value"].to_numpy()
    order = np.argsort(p)
    holm = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        holm[i] = running
    assert group["p_holm"].to_numpy() == pytest.approx(holm)
    assert list(group["significant"]) == [bool(v < 0.05) for v in holm]


def test_seeds_are_averaged_and_their_spread_reported(results, table):
    row = pick(results, "H1_ttest", "fkl", "A")
    assert row["n_seeds"] == 2
    kd = table[(table["role"] == "kd") & (table["teacher"] == "T1") & (table["student"] == "s1") & (table["method"] == "fkl")
               & (table["teacher_kind"] == "sft") & (table["noise_sigma"] == 0) & (table["task"] == "A")]
    sds = kd.groupby("temperature")["accuracy"].std(ddof=1)
    assert row["seed_sd"] in [pytest.approx(v) for v in sds]  # the sd at the selected temperature


def test_missing_column_is_reported_not_crashed(table):
    results, _ = run_hypotheses(table.drop(columns=["accuracy"]), "t.csv")
    assert results["statistic"].isna().all()
    assert results["reason"].str.contains("t.csv has no column 'accuracy'").all()
    assert set(results["hypothesis"]) == {"H1_ttest", "H1_seeds", "H1_anova", "H2_teacher_score", "H3_student_size",
                                          "H3_student_sft", "H4_agreement", "H5_fidelity"}

    results, _ = run_hypotheses(table.drop(columns=["bleu"]), "t.csv")
    h5 = results[results["hypothesis"] == "H5_fidelity"]
    assert len(h5) == 1 and h5["statistic"].isna().all() and "no column 'bleu'" in h5["reason"].item()
    assert pick(results, "H1_ttest", "all", "A")["statistic"] > 0


def test_cell_without_sft_baseline_makes_its_tests_not_computable(capsys, tmp_path):
    table = make_table(sft_students=("s1", "s2"))
    path = tmp_path / "results.csv"
    write_table(table, path)
    assert main(["stats", "--table", str(path), "--out-csv", str(tmp_path / "h.csv"), "--out-md", str(tmp_path / "s.md")]) == 0
    assert "no SFT baseline for student s3" in capsys.readouterr().err
    results = pd.read_csv(tmp_path / "h.csv", keep_default_na=False, na_values=[""])
    for method in ["all", "fkl"]:
        row = pick(results, "H1_ttest", method, "Average")
        assert math.isnan(row["statistic"]) and "no SFT baseline for student s3" in row["reason"]
    assert "no SFT baseline for student s3" in (tmp_path / "s.md").read_text()


def test_fewer_than_three_values_for_a_correlation():
    results, _ = run_hypotheses(make_table(pairs=[("T1", "s1"), ("T1", "s2")]))
    row = pick(results, "H3_student_size", "fkl", "A")
    assert row["n"] == 2 and math.isnan(row["statistic"]) and "fewer than three" in row["reason"]
    row = pick(results, "H2_teacher_score", "all", "A")  # four cells, one teacher: rho undefined
    assert math.isnan(row["statistic"]) and "are equal" in row["reason"]
    assert pick(results, "H1_ttest", "fkl", "A")["n"] == 2
    assert not math.isnan(pick(results, "H1_ttest", "fkl", "A")["statistic"])


def test_stats_command_writes_csv_and_summary(table, tmp_path):
    path = tmp_path / "results.parquet"
    write_table(table, out_parquet=path)
    out_csv, out_md, out_cells = tmp_path / "stats" / "hypotheses.csv", tmp_path / "stats" / "summary.md", tmp_path / "cells.csv"
    assert main(["stats", "--table", str(path), "--out-csv", str(out_csv), "--out-md", str(out_md),
                 "--out-cells", str(out_cells)]) == 0
    results = pd.read_csv(out_csv)
    for column in ["family", "hypothesis", "method", "task", "n", "statistic", "p_value", "p_holm", "effect_size",
                   "ci_low", "ci_high", "n_seeds", "seed_sd", "reason"]:
        assert column in results.columns
    assert set(results["method"]) == {"all", "fkl", "rkl"}
    summary = out_md.read_text()
    expected = stats.ttest_1samp(expected_cells(table, "Average")["improvement"], 0, alternative="greater")
    assert f"t = {expected.statistic:.2f}" in summary
    assert "| H3_student_size | all |" in summary and "supported" in summary
    assert len(pd.read_csv(out_cells)) == 10 * 3


def test_anova_permutation_with_a_method_of_one_cell():
    """A method with a single cell is a valid one-way ANOVA group, which scipy's permutation test refuses
    (found by the tiny demo's stats job): the labelling test is enumerated by kdgrid, and equals both
    scipy where scipy can run and a brute force over every ordering."""
    import itertools

    import numpy as np
    import pandas as pd
    from scipy import stats

    from kdgrid.analysis import hypotheses

    def brute_force(groups):
        values, sizes = np.concatenate(groups), [len(g) for g in groups]
        bounds = np.cumsum(sizes)[:-1]
        observed = stats.f_oneway(*groups).statistic
        null = [stats.f_oneway(*np.split(values[list(order)], bounds)).statistic
                for order in itertools.permutations(range(len(values)))]
        return float(np.mean(np.array(null) >= observed * (1 - 1e-12)))

    two_each = [np.array([0.5, 1.5, 1.0]), np.array([3.0, 2.0]), np.array([-1.0, 0.0])]
    count = math.factorial(7) // (math.factorial(3) * 2 * 2)
    ours = hypotheses._f_permutation_p(two_each, count, hypotheses.PERM_RESAMPLES)
    scipys = stats.permutation_test(two_each, lambda *g, axis: stats.f_oneway(*g, axis=axis).statistic,
                                    permutation_type="independent", alternative="greater", vectorized=True,
                                    n_resamples=hypotheses.PERM_RESAMPLES, rng=0).pvalue
    assert ours == pytest.approx(scipys, abs=1e-12) == pytest.approx(brute_force(two_each), abs=1e-12)

    singleton = [np.array([0.5, 1.5, 1.0, 0.75]), np.array([4.0]), np.array([-1.0, 0.0])]
    cells = pd.DataFrame({"method": ["fkl"] * 4 + ["rkl"] + ["tvd"] * 2,
                          "improvement": np.concatenate(singleton), "improvement_heldout": np.nan, "n_seeds": 1,
                          "seed_sd": np.nan})
    row = hypotheses._anova(cells)
    assert row["perm_test"].startswith("permuted method labels, exact")
    assert row["p_perm"] == pytest.approx(brute_force(singleton), abs=1e-12)
    assert 0 < row["p_perm"] < 1 and row["p_value"] == pytest.approx(stats.f_oneway(*singleton).pvalue)
