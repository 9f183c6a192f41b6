"""`kdgrid analyze --import-paper`: the paper's published tables through our statistics, checked against
figures computed here with plain pandas/scipy and against what the paper reports."""

from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from kdgrid.analysis.captions import FIGURES
from kdgrid.analysis.paper_import import import_paper, size_from_name
from kdgrid.cli import main
from kdgrid.errors import KdgridError

PAPER = Path(__file__).parent / "fixtures" / "paper_results"
MATH = ["math_results_main.csv", "llama_math_results.csv"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper") / "out"
    assert main(["analyze", "--import-paper", str(PAPER), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def hypotheses(out):
    return pd.read_csv(out / "hypotheses.csv")


def by_hand_math(task):
    """Math improvement per (teacher, student, method): best over temperatures minus the student's SFT."""
    data = pd.concat([pd.read_csv(PAPER / name) for name in MATH])
    sft = data[data["Method"] == "SFT"].set_index("Student")[task]
    kd = data[data["Method"].str.startswith("student_") & ~data["Method"].str.contains("base_teacher")].copy()
    kd["Teacher"] = kd["Teacher"].str.split("_").str[0]
    kd["kind"] = kd["Method"].str.extract(r"student_(KD|RevKD|GKD)_temp")[0]
    best = kd.groupby(["Teacher", "Student", "kind"])[task].max().reset_index()
    best["improvement"] = best[task] - best["Student"].map(sft)
    best["size"] = best["Student"].str.extract(r"-([0-9.]+)B$")[0].astype(float)
    agreement = pd.read_csv(PAPER / "EM1.csv")
    agreement = agreement[agreement["Method"] == "KD"].set_index(["Teacher", "Student"])
    if task in agreement.columns:
        best["agreement"] = [agreement.loc[(t, s), task] for t, s in zip(best["Teacher"], best["Student"])]
    return best


def row(hypotheses, family, hypothesis, method, task):
    found = hypotheses[(hypotheses["family"] == family) & (hypotheses["hypothesis"] == hypothesis)
                       & (hypotheses["method"] == method) & (hypotheses["task"] == task)]
    assert len(found) == 1
    return found.iloc[0]


def test_math_h1_matches_a_by_hand_t_test_and_the_paper(hypotheses):
    cells = by_hand_math("Average")
    expected = stats.ttest_1samp(cells["improvement"], 0, alternative="greater")
    h1 = row(hypotheses, "math", "H1_ttest", "all", "Average")
    assert h1["n"] == len(cells) == 33  # 9 Qwen pairs + 2 Llama pairs, 3 methods each
    assert h1["statistic"] == pytest.approx(expected.statistic)
    assert h1["p_value"] == pytest.approx(expected.pvalue)
    assert h1["mean_improvement"] > 0 and h1["significant"]
    # the value in the authors' analysis notebook (statistical_tests_math.ipynb): t = 8.465, df = 32
    assert h1["statistic"] == pytest.approx(8.465, abs=1e-3) and h1["dof"] == 32
    rkl = by_hand_math("gsm8k").query("kind == 'RevKD'")["improvement"]
    assert row(hypotheses, "math", "H1_ttest", "rkl", "gsm8k")["statistic"] == pytest.approx(
        stats.ttest_1samp(rkl, 0, alternative="greater").statistic)


def test_math_improvement_falls_with_student_size(hypotheses):
    cells = by_hand_math("Average")
    expected = stats.spearmanr(cells["improvement"], cells["size"])
    h3 = row(hypotheses, "math", "H3_student_size", "all", "Average")
    assert h3["statistic"] < 0 and h3["significant"]
    assert h3["statistic"] == pytest.approx(expected.statistic)
    assert h3["p_value"] == pytest.approx(expected.pvalue)
    assert h3["statistic"] == pytest.approx(-0.656, abs=1e-3)  # authors' notebook


def test_agreement_applies_to_every_method_of_a_pair(hypotheses):
    cells = by_hand_math("MultiArith")
    expected = stats.spearmanr(cells["improvement"], cells["agreement"])
    h4 = row(hypotheses, "math", "H4_agreement", "all", "MultiArith")
    assert h4["n"] == 33 and h4["statistic"] == pytest.approx(expected.statistic)
    assert not ((hypotheses["hypothesis"] == "H4_agreement") & (hypotheses["task"] == "Average")).any()
    # there is no BLEU for commonsense: reported, not dropped
    h5 = hypotheses[(hypotheses["family"] == "commonsense") & (hypotheses["hypothesis"] == "H5_fidelity")]
    assert len(h5) and h5["statistic"].isna().all() and h5["reason"].str.contains("fidelity").all()


def test_results_table_from_the_paper(out):
    table = pd.read_csv(out / "results.csv")
    assert set(table["family"]) == {"math", "commonsense"}
    kd = table[table["role"] == "kd"]
    assert "Qwen2.5-3B_ckpt2400" not in set(kd["teacher"])
    assert set(kd["method"]) == {"fkl", "rkl", "gkd"}
    ablation = kd[kd["teacher_kind"] == "base"]
    assert len(ablation["cell"].unique()) == 10 and set(ablation["method"]) == {"fkl"}
    assert ablation["agreement"].isna().all()  # the pair's KD agreement is for the SFT teacher
    one = kd[(kd["teacher"] == "Qwen2.5-7B") & (kd["student"] == "Qwen2.5-0.5B") & (kd["task"] == "gsm8k")
             & (kd["teacher_kind"] == "sft")]
    assert len(one) == 7  # fkl and rkl at 1, 2, 5 and gkd at 1
    assert (one["agreement"].round(4) == 33.4344).all() and (one["sft_agreement"].round(4) == 22.8203).all()
    assert (one["bleu"].round(4) == 87.6406).all() and (one["student_size_b"] == 0.5).all()
    assert (one["teacher_size_b"] == 7).all()
    sft = table[(table["role"] == "sft") & (table["model"] == "Llama-3.2-1B") & (table["family"] == "math")]
    assert sft.set_index("task").loc["Average", "accuracy"] == 41.98


def test_analyze_writes_stats_summary_and_figures(out):
    summary = (out / "summary.md").read_text()
    assert "## math" in summary and "| H1_ttest | all | Average: t = 8.47" in summary
    for name in FIGURES:
        assert (out / "plots" / f"{name}.png").stat().st_size > 0 and (out / "plots" / f"{name}.pdf").stat().st_size > 0
    assert (out / "results.parquet").stat().st_size > 0


def test_size_from_name():
    assert size_from_name("Qwen2.5-0.5B") == 0.5
    assert size_from_name("Llama-3.2-1B") == 1.0
    with pytest.raises(KdgridError, match="tiny"):
        size_from_name("tiny")


def test_bad_paper_directory(tmp_path):
    with pytest.raises(KdgridError, match="none of the paper's result files"):
        import_paper(tmp_path)
    (tmp_path / "math_results_main.csv").write_text(
        "Teacher,Student,Method,gsm8k,Average\n-,Qwen2.5-0.5B,SFT,20,20\nQwen2.5-3B,Qwen2.5-0.5B,student_Magic_temp_1.0,1,1\n")
    with pytest.raises(KdgridError, match=r"math_results_main.csv, line 3: unknown Method 'student_Magic_temp_1.0'"):
        import_paper(tmp_path)
