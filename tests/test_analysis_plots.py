"""`kdgrid plots`: every figure is written as PNG and PDF with a caption, with or without its data."""

import numpy as np
import pandas as pd
import pytest

from kdgrid.analysis.captions import CAPTIONS, FIGURES
from kdgrid.analysis.figures import METHOD_COLORS, method_label, method_palette
from kdgrid.analysis.table import TABLE_COLUMNS, write_table
from kdgrid.cli import main

TASKS = ["syn_arith", "syn_twostep", "syn_choice"]
SIZES = {"s-small": 0.1, "s-large": 0.4, "t-mid": 1.0, "t-big": 2.0}


def rows(role, model, accuracy, teacher=None, method=None, temperature=None, noise=0.0, kind="sft", seed=1,
         agreement=None, bleu=None, family="math"):
    out = []
    for task, acc in zip([*TASKS, "Average"], [*accuracy, float(np.mean(accuracy))]):
        kd = role == "kd"
        out.append({"family": family, "task": task, "role": role, "cell": f"{role}-{teacher}-{model}-{method}-{temperature}-{kind}-{noise}-{seed}",
                    "model": model, "teacher": teacher, "student": model if kd else None, "method": method,
                    "temperature": temperature, "noise_sigma": noise if kd else None, "teacher_kind": kind if kd else None,
                    "seed": seed, "accuracy": acc, "n_items": 20,
                    "agreement": agreement, "bleu": bleu, "embedding_similarity": None,
                    "sft_agreement": agreement - 10 if agreement is not None else None, "sft_bleu": None,
                    "sft_embedding_similarity": None, "student_size_b": SIZES[model],
                    "teacher_size_b": SIZES[teacher] if teacher else None})
    return out


def full_table(sweep=True, ablations=True, compare=True):
    rng = np.random.default_rng(3)
    data = []
    for model, base in [("s-small", 20), ("s-large", 35), ("t-mid", 50), ("t-big", 60)]:
        data += rows("base", model, list(base - 10 + rng.uniform(0, 5, 3)))
        data += rows("sft", model, list(base + rng.uniform(0, 5, 3)))
    for teacher in ["t-mid", "t-big"]:
        for student, base in [("s-small", 20), ("s-large", 35)]:
            for method in ["fkl", "rkl", "gkd", "tvd"]:
                for temperature in ([1.0, 2.0, 5.0] if sweep and method != "gkd" else [1.0]):
                    for seed in [1, 2]:
                        measures = {"agreement": float(rng.uniform(40, 80)), "bleu": float(rng.uniform(10, 50))} if compare else {}
                        data += rows("kd", student, list(base + rng.normal(4, 3, 3)), teacher, method, temperature, seed=seed, **measures)
            if ablations:
                data += rows("kd", student, list(base - 15 + rng.uniform(0, 3, 3)), teacher, "fkl", 1.0, kind="base")
                for sigma in [1.0, 5.0]:
                    data += rows("kd", student, list(base - sigma + rng.uniform(0, 3, 3)), teacher, "fkl", 1.0, noise=sigma)
    return pd.DataFrame(data, columns=TABLE_COLUMNS)


EXTRA_GPU_S = {"fkl": 1000.0, "rkl": 1000.0, "tvd": 1200.0, "gkd": 5000.0}


def cost_ledger(table):
    """A cost ledger (kdgrid.analysis.cost COST_COLUMNS that fig8 reads) for the table's checkpoints:
    SFT 3600 GPU-seconds, a KD cell that plus its method's extra cost."""
    cells = table.drop_duplicates("cell")
    total = [3600.0 + (EXTRA_GPU_S[m] if r == "kd" else 0.0) for r, m in zip(cells["role"], cells["method"])]
    return cells[["cell", "family", "role", "model", "teacher", "method", "temperature", "noise_sigma", "teacher_kind",
                  "seed"]].assign(total_gpu_s=total, total_core_s=0.0)


def render(tmp_path_factory, name, table, cost=None):
    directory = tmp_path_factory.mktemp(name)
    path = directory / "results.csv"
    write_table(table, path)
    out = directory / "plots"
    args = ["plots", "--table", str(path), "--out-dir", str(out)]
    if cost is not None:
        cost.to_csv(directory / "cost.csv", index=False)
        args += ["--cost", str(directory / "cost.csv")]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    table = full_table()
    return render(tmp_path_factory, "full", table, cost_ledger(table))


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out = render(tmp_path_factory, "sparse", full_table(sweep=False, ablations=False, compare=False))
    return out, err.getvalue()


def assert_all_figures(out):
    for name in FIGURES:
        png, pdf = out / f"{name}.png", out / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert pdf.read_bytes()[:5] == b"%PDF-", pdf
        assert (out / "captions" / f"{name}.rst").read_text().startswith(CAPTIONS[name][:40])
    assert not [p for p in out.rglob(".*")]  # no temporary file left


def test_every_figure_is_written_with_its_caption(full):
    assert_all_figures(full)
    assert set(FIGURES) == {"fig1_accuracy", "fig2_improvement_vs_size", "fig3_temperature", "fig4_teacher",
                            "fig5_agreement_fidelity", "fig6_ablations", "fig7_heatmap", "fig8_cost"}
    for name in FIGURES:
        assert "No data" not in (full / "captions" / f"{name}.rst").read_text()
    # a figure with data is bigger than the one-line placeholder
    assert (full / "fig7_heatmap.png").stat().st_size > 20_000


def test_missing_data_gives_a_figure_that_says_so(sparse, full):
    out, stderr = sparse
    assert_all_figures(out)
    for name in ["fig3_temperature", "fig6_ablations", "fig5_agreement_fidelity", "fig8_cost"]:
        assert f"{name}: no data for" in stderr
        assert "No data in this run" in (out / "captions" / f"{name}.rst").read_text()
        assert (out / f"{name}.png").stat().st_size < (full / f"{name}.png").stat().st_size
    for name in ["fig1_accuracy", "fig2_improvement_vs_size", "fig4_teacher", "fig7_heatmap"]:
        assert f"{name}: no data" not in stderr


def test_a_table_without_kd_rows_still_gives_every_figure(tmp_path_factory, capsys):
    table = full_table()
    out = render(tmp_path_factory, "nokd", table[table["role"] != "kd"])
    assert_all_figures(out)
    assert capsys.readouterr().err.count("no data for") == len(FIGURES)


def test_one_colour_per_method_across_figures():
    first = method_palette(["fkl", "rkl", "gkd"])
    second = method_palette(["gkd", "tvd", "fkl", "my_new_loss"])
    assert first[method_label("fkl")] == second[method_label("fkl")] == METHOD_COLORS["fkl"]
    assert first[method_label("gkd")] == second[method_label("gkd")]
    assert len(set(map(tuple, second.values()))) == 4
    assert method_palette(["my_new_loss", "other"]) == method_palette(["other", "my_new_loss"])


def test_temperature_sweep_draws_equal_accuracies_of_two_methods_apart():
    from matplotlib.colors import to_hex

    from kdgrid.analysis.figures import fig3_temperature

    data = rows("sft", "s-small", [20.0, 20.0, 20.0])
    for temperature, accuracy in ((1.0, 30.0), (2.0, 25.0), (4.0, 16.0)):
        data += rows("kd", "s-small", [accuracy] * 3, "t-mid", "fkl", temperature)
    for method in ("seqkd", "skew_kl"):  # the same accuracy at the same temperature
        data += rows("kd", "s-small", [16.67] * 3, "t-mid", method, 1.0)
    fig = fig3_temperature(pd.DataFrame(data, columns=TABLE_COLUMNS), None)
    ax = fig.axes[0]
    colors = {to_hex(c): label for label, c in method_palette(["fkl", "seqkd", "skew_kl"]).items()}
    drawn = {colors[to_hex(line.get_color())]: list(zip(line.get_xdata(), line.get_ydata()))
             for line in ax.get_lines() if to_hex(line.get_color()) in colors and len(line.get_xdata())}
    (seqkd,), (skew,) = drawn[method_label("seqkd")], drawn[method_label("skew_kl")]
    assert seqkd[1] == skew[1] == pytest.approx(16.67)
    assert abs(seqkd[0] - skew[0]) > 0.02  # side by side, not one under the other
    assert all(abs(x - t) < 0.1 for (x, _), t in zip(drawn[method_label("fkl")], (1.0, 2.0, 4.0)))
    assert list(ax.get_xticks()) == [1.0, 2.0, 4.0]
