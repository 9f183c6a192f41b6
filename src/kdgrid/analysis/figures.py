"""The paper's figures from a results table (seaborn, Agg backend), each saved as PNG and PDF.

One palette (METHOD_COLORS) gives every method the same colour in every figure. A figure whose data
is missing (no temperature sweep, no ablation...) is still written, saying "no data for ...", and
the reason goes to stderr. Names and captions live in `kdgrid.analysis.captions`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats

from ..io import atomic_path, write_text
from ..methods import METHODS, REGISTRY
from .captions import CAPTIONS, FIGURES, FORMATS
from .improvement import (
    complete_columns,
    kd_cells,
    main_kd_rows,
    ordered_methods,
    ordered_tasks,
    pair_label,
    seed_averaged,
    sft_accuracy,
)
from .table import AVERAGE, warn

_CB = sns.color_palette("colorblind")
# the methods of kdgrid.methods take these in registry order, methods it does not know the rest
_PALETTE = [_CB[i] for i in (0, 1, 2, 4, 5, 6, 8, 9, 3, 7)]
METHOD_COLORS = {"base": "#b0b0b0", "sft": "#4d4d4d",
                 **{m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(METHODS)}}
_EXTRA_COLORS = _PALETTE[len(METHODS):] or _PALETTE
METHOD_LABELS = {"base": "base model", "sft": "SFT", **{m.name: m.label for m in REGISTRY.values()}}
ACCURACY = "Average accuracy (%)"
IMPROVEMENT = "improvement over SFT (points)"


class NoData(Exception):
    """A figure has nothing to draw; the message says what is missing."""


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_palette(methods) -> dict[str, tuple]:
    """Colour per method label; methods outside METHOD_COLORS get the extra colours in sorted order."""
    extra = sorted(m for m in set(methods) if m not in METHOD_COLORS)
    colors = {**METHOD_COLORS, **{m: _EXTRA_COLORS[i % len(_EXTRA_COLORS)] for i, m in enumerate(extra)}}
    return {method_label(m): colors[m] for m in methods}


def _average(table):
    return table[table["task"] == AVERAGE]


def _families(table) -> list[str]:
    return list(dict.fromkeys(table["family"]))


def _size_ticks(ax, sizes) -> None:
    sizes = sorted({float(s) for s in sizes if not math.isnan(s)})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
    ax.minorticks_off()


def _shared_legend(fig, axes, title=None) -> None:
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
        if ax.get_legend():
            ax.get_legend().remove()
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside right upper", title=title, frameon=False)


def _note(ax, text: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, wrap=True)


def _student_order(frame) -> list[str]:
    return list(frame.sort_values(["student_size_b", "student"])["student"].drop_duplicates())


def fig1_accuracy(table, cells):
    kd = main_kd_rows(_average(table))
    if kd.empty:
        raise NoData("student accuracy (no KD rows in the table)")
    students = kd[["family", "student", "student_size_b"]].drop_duplicates()
    avg = _average(table)
    parts = []
    for role in ("base", "sft"):
        rows = avg[avg["role"] == role].groupby(["family", "model"], as_index=False)["accuracy"].mean()
        rows = rows.rename(columns={"model": "student"}).merge(students, on=["family", "student"])
        parts.append(rows.assign(variant=method_label(role), teacher=None))
    kd_avg = cells[cells["task"] == AVERAGE]
    parts.append(kd_avg.assign(variant=kd_avg["method"].map(method_label), accuracy=kd_avg["kd_accuracy"])
                 [["family", "student", "student_size_b", "teacher", "variant", "accuracy"]])
    data = pd.concat(parts, ignore_index=True).dropna(subset=["accuracy"])
    methods = ["base", "sft"] + ordered_methods(kd_avg["method"])
    palette = method_palette(methods)
    families = _families(data)
    widths = [max(3.0, 1.2 * data.loc[data["family"] == f, "student"].nunique()) for f in families]
    fig, axes = plt.subplots(1, len(families), figsize=(sum(widths) + 2.5, 4.5), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": widths}, layout="constrained")
    for ax, family in zip(axes[0], families):
        part = data[data["family"] == family]
        sns.barplot(part, x="student", y="accuracy", hue="variant", order=_student_order(part),
                    hue_order=[h for h in palette if h in set(part["variant"])], palette=palette,
                    errorbar=("pi", 100), err_kws={"linewidth": 1}, capsize=0.1, ax=ax)
        _seed_intervals(ax, kd_avg[kd_avg["family"] == family], _student_order(part),
                        [h for h in palette if h in set(part["variant"])])
        ax.set_title(family)
        ax.set_xlabel("student")
        ax.set_ylabel(ACCURACY)
        ax.tick_params(axis="x", labelrotation=25)
    _shared_legend(fig, axes)
    return fig


def _seed_intervals(ax, cells, students, hues) -> None:
    """Each KD cell with several seeds as a point on its bar, with its 95% t-interval over seeds."""
    cells = cells[cells["kd_accuracy_ci_low"].notna()]
    width = 0.8 / len(hues)
    label = "KD cell: mean and 95% CI over seeds"
    for r in cells.itertuples():
        variant = method_label(r.method)
        if variant not in hues or r.student not in students:
            continue
        x = students.index(r.student) - 0.4 + (hues.index(variant) + 0.5) * width
        ax.errorbar(x, r.kd_accuracy, yerr=[[r.kd_accuracy - r.kd_accuracy_ci_low], [r.kd_accuracy_ci_high - r.kd_accuracy]],
                    fmt="o", color="black", markersize=3, capsize=2, linewidth=0.8,
                    label=label)
        label = None


def fig2_improvement_vs_size(table, cells):
    data = cells[(cells["task"] == AVERAGE) & cells["improvement"].notna()]
    if data.empty:
        raise NoData("KD improvement (no KD cell with an SFT baseline)")
    data = data.assign(**{"KD method": data["method"].map(method_label)})
    palette = method_palette(ordered_methods(data["method"]))
    families = _families(data)
    fig, axes = plt.subplots(1, len(families), figsize=(4.8 * len(families) + 2.2, 4.2), squeeze=False, layout="constrained")
    for ax, family in zip(axes[0], families):
        part = data[data["family"] == family]
        sns.lineplot(part, x="student_size_b", y="improvement", hue="KD method", palette=palette,
                     hue_order=[h for h in palette if h in set(part["KD method"])], estimator="mean", errorbar=None,
                     marker="o", ax=ax)
        sns.scatterplot(part, x="student_size_b", y="improvement", hue="KD method", palette=palette, alpha=0.45,
                        legend=False, ax=ax)
        ax.axhline(0, color="black", linewidth=0.8)
        _size_ticks(ax, part["student_size_b"])
        ax.set_title(family)
        ax.set_xlabel("student size (B parameters)")
        ax.set_ylabel(IMPROVEMENT)
    _shared_legend(fig, axes, "KD method")
    return fig


def fig3_temperature(table, cells):
    kd = seed_averaged(main_kd_rows(_average(complete_columns(table))))
    sweeps = kd.groupby(["family", "teacher", "student"])["temperature"].transform("nunique")
    kd = kd[sweeps >= 2]
    if kd.empty:
        raise NoData("a temperature sweep (no pair trained at two or more temperatures)")
    kd = kd.sort_values(["family", "student_size_b", "teacher_size_b", "temperature"])
    kd = kd.assign(**{"KD method": kd["method"].map(method_label)})
    sft = sft_accuracy(_average(table))
    pairs = list(dict.fromkeys(zip(kd["family"], kd["teacher"], kd["student"])))
    palette = method_palette(ordered_methods(kd["method"]))
    ncols = min(4, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 2.2, 3.0 * nrows + 0.4), squeeze=False, layout="constrained")
    for ax, (family, teacher, student) in zip(axes.flat, pairs):
        part = kd[(kd["family"] == family) & (kd["teacher"] == teacher) & (kd["student"] == student)]
        hues = [h for h in palette if h in set(part["KD method"])]
        temperatures = sorted(part["temperature"].unique())
        # the methods side by side at each temperature (2.5% of the axis apart), so equal accuracies stay visible
        step = 0.025 * (temperatures[-1] - temperatures[0])
        offsets = {h: (i - (len(hues) - 1) / 2) * step for i, h in enumerate(hues)}
        part = part.assign(x=part["temperature"] + part["KD method"].map(offsets))
        sns.lineplot(part, x="x", y="accuracy", hue="KD method", palette=palette, marker="o", hue_order=hues, ax=ax)
        baseline = sft[(sft["family"] == family) & (sft["model"] == student)]["accuracy"]
        if len(baseline):
            ax.axhline(baseline.iloc[0], color=METHOD_COLORS["sft"], linestyle="--", linewidth=1, label=method_label("sft"))
        ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
        ax.set_title(f"{family}: {pair_label(teacher, student)}", fontsize=9)
        ax.set_xlabel("temperature τ")
        ax.set_ylabel(ACCURACY)
    for ax in axes.flat[len(pairs):]:
        ax.set_visible(False)
    _shared_legend(fig, axes, "KD method")
    return fig


def _dodged(values, methods, order, factor):
    """Spread points of different methods sideways (multiplicatively, for log axes) so they do not hide each other."""
    offsets = {m: (i - (len(order) - 1) / 2) for i, m in enumerate(order)}
    return values * np.power(factor, methods.map(offsets).astype(float))


def fig4_teacher(table, cells):
    data = cells[(cells["task"] == AVERAGE) & cells["improvement"].notna()]
    if data.empty:
        raise NoData("KD improvement (no KD cell with an SFT baseline)")
    order = ordered_methods(data["method"])
    palette = method_palette(order)
    data = data.assign(**{"KD method": data["method"].map(method_label)})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), squeeze=False, layout="constrained")
    panels = [("teacher_sft_accuracy", "teacher's Average SFT accuracy (%)", False),
              ("teacher_size_b", "teacher size (B parameters)", True)]
    for ax, (column, label, log) in zip(axes[0], panels):
        part = data[data[column].notna()]
        if part.empty:
            _note(ax, f"no data for {label}")
        else:
            x = _dodged(part[column], part["method"], order, 1.04) if log else part[column]
            sns.scatterplot(part.assign(x=x), x="x", y="improvement", hue="KD method", style="family", palette=palette,
                            hue_order=[h for h in palette if h in set(part["KD method"])], s=55, ax=ax)
            if log:
                _size_ticks(ax, part[column])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel(IMPROVEMENT)
    _shared_legend(fig, axes)
    return fig


def _spearman_note(ax, x, y) -> None:
    known = x.notna() & y.notna()
    if known.sum() < 3 or x[known].nunique() < 2 or y[known].nunique() < 2:
        return
    rho, p = stats.spearmanr(x[known], y[known])
    ax.text(0.03, 0.97, f"Spearman ρ = {rho:.2f}\np = {p:.2g}, n = {int(known.sum())}", transform=ax.transAxes,
            va="top", ha="left", fontsize=9, bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})


def fig5_agreement_fidelity(table, cells):
    known = cells[cells["improvement"].notna()]
    per_task = known[known["task"] != AVERAGE]
    average = known[known["task"] == AVERAGE]
    if per_task[["agreement", "bleu"]].notna().sum().sum() == 0 and average[["agreement", "sft_agreement"]].notna().all(axis=1).sum() == 0:
        raise NoData("agreement or fidelity (no compare.json measures in the table)")
    order = ordered_methods(known["method"])
    palette = method_palette(order)
    families = _families(known)
    fig, axes = plt.subplots(len(families), 3, figsize=(15, 4.0 * len(families) + 0.3), squeeze=False, layout="constrained")
    for row, family in zip(axes, families):
        tasks = per_task[per_task["family"] == family]
        tasks = tasks.assign(**{"KD method": tasks["method"].map(method_label)})
        for ax, column, label, what in ((row[0], "agreement", "agreement with the teacher (%)", "agreement"),
                                        (row[1], "bleu", "fidelity: BLEU with the teacher's rationale", "fidelity (BLEU)")):
            part = tasks[tasks[column].notna()]
            if part.empty:
                _note(ax, f"no data for {what} in {family}")
            else:
                sns.scatterplot(part, x=column, y="improvement", hue="KD method", palette=palette, alpha=0.7,
                                hue_order=[h for h in palette if h in set(part["KD method"])], ax=ax)
                _spearman_note(ax, part[column], part["improvement"])
                ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlabel(label)
            ax.set_ylabel(IMPROVEMENT)
            ax.set_title(f"{family}: improvement vs {what}")
        ax = row[2]
        pairs = average[(average["family"] == family) & average["agreement"].notna() & average["sft_agreement"].notna()]
        if pairs.empty:
            _note(ax, f"no data for SFT and KD agreement in {family}")
        else:
            pairs = pairs.assign(**{"KD method": pairs["method"].map(method_label)})
            sns.scatterplot(pairs, x="sft_agreement", y="agreement", hue="KD method", palette=palette, s=55,
                            hue_order=[h for h in palette if h in set(pairs["KD method"])], ax=ax)
            low = float(np.nanmin(pairs[["sft_agreement", "agreement"]].to_numpy())) - 2
            high = float(np.nanmax(pairs[["sft_agreement", "agreement"]].to_numpy())) + 2
            ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", label="KD = SFT")
        ax.set_xlabel("SFT student's agreement with the teacher (%)")
        ax.set_ylabel("KD student's agreement (%)")
        ax.set_title(f"{family}: agreement, SFT vs KD ({AVERAGE})")
    _shared_legend(fig, axes, "KD method")
    return fig


_VARIANT_COLORS = {"student SFT (no KD)": METHOD_COLORS["sft"], "KD, SFT teacher": _CB[0],
                   "KD, task-unaware teacher": _CB[3]}


def _variant(teacher_kind, noise) -> str:
    if teacher_kind == "base":
        return "KD, task-unaware teacher"
    if noise and noise > 0:
        return f"KD, noisy teacher σ={noise:g}"
    return "KD, SFT teacher"


def fig6_ablations(table, cells):
    avg = complete_columns(_average(table))
    kd = avg[avg["role"] == "kd"].assign(teacher_kind=lambda d: d["teacher_kind"].fillna("sft"),
                                         noise_sigma=lambda d: d["noise_sigma"].fillna(0.0))
    ablations = kd[(kd["teacher_kind"] == "base") | (kd["noise_sigma"] > 0)]
    if ablations.empty:
        raise NoData("teacher-signal ablations (no task-unaware or noisy-teacher KD cell)")
    settings = ablations[["family", "teacher", "student", "method", "temperature"]].drop_duplicates()
    rows = kd.merge(settings, on=["family", "teacher", "student", "method", "temperature"])
    rows = rows.groupby(["family", "teacher", "student", "method", "temperature", "teacher_kind", "noise_sigma"],
                        as_index=False, dropna=False)["accuracy"].mean()
    rows["variant"] = [_variant(k, s) for k, s in zip(rows["teacher_kind"], rows["noise_sigma"])]
    sft = sft_accuracy(avg).rename(columns={"model": "student"})
    baseline = settings.merge(sft, on=["family", "student"]).assign(variant="student SFT (no KD)")
    data = pd.concat([rows, baseline], ignore_index=True)
    sizes = kd[["family", "student", "student_size_b"]].drop_duplicates(["family", "student"])
    data = data.merge(sizes, on=["family", "student"], how="left")
    data["setting"] = [f"{t} →\n{s}\n{m}, τ={tau:g}" for t, s, m, tau in
                       zip(data["teacher"], data["student"], data["method"], data["temperature"])]
    noise_levels = sorted(v for v in data["variant"].unique() if v.startswith("KD, noisy"))
    reds = sns.color_palette("Reds", len(noise_levels) + 2)[2:]
    palette = {**_VARIANT_COLORS, **dict(zip(noise_levels, reds))}
    order = [v for v in palette if v in set(data["variant"])]
    families = _families(data)
    widths = [max(3.5, 1.7 * data.loc[data["family"] == f, "setting"].nunique()) for f in families]
    fig, axes = plt.subplots(1, len(families), figsize=(sum(widths) + 3, 4.8), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": widths}, layout="constrained")
    for ax, family in zip(axes[0], families):
        part = data[data["family"] == family].sort_values(["student_size_b", "student", "teacher"])
        sns.barplot(part, x="setting", y="accuracy", hue="variant", hue_order=order, palette=palette, errorbar=None, ax=ax)
        ax.set_title(family)
        ax.set_xlabel("teacher → student, method, temperature")
        ax.set_ylabel(ACCURACY)
        ax.tick_params(axis="x", labelsize=8)
    _shared_legend(fig, axes, "teacher signal")
    return fig


def fig7_heatmap(table, cells):
    data = cells[cells["improvement"].notna()]
    if data.empty:
        raise NoData("KD improvement (no KD cell with an SFT baseline)")
    families = _families(data)
    grids = []
    for family in families:
        part = data[data["family"] == family]
        part = part.assign(row=[f"{pair_label(t, s)} ({m})" for t, s, m in zip(part["teacher"], part["student"], part["method"])])
        tasks = [t for t in ordered_tasks(table, family) if t in set(part["task"])]
        grid = part.pivot_table(index="row", columns="task", values="improvement", sort=False)[tasks]
        grids.append((family, grid))
    heights = [max(2.0, 0.3 * len(grid) + 1.2) for _, grid in grids]
    width = max(7.0, 3.5 + 0.85 * max(grid.shape[1] for _, grid in grids))
    fig, axes = plt.subplots(len(grids), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    # a few collapsed cells (e.g. -70 points) must not wash out the colour of all the others
    limit = max(1.0, float(np.nanpercentile(np.abs(data["improvement"].to_numpy(dtype=float)), 95)))
    for ax, (family, grid) in zip(axes[:, 0], grids):
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="RdBu_r", center=0, vmin=-limit, vmax=limit, annot_kws={"fontsize": 7},
                    linewidths=0.3, cbar_kws={"label": IMPROVEMENT}, ax=ax)
        ax.set_title(f"{family}: KD improvement over SFT per task")
        ax.set_xlabel("task")
        ax.set_ylabel("teacher → student (method)")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
    return fig


def fig8_cost(table, cells, cost=None):
    if cost is None:
        raise NoData("cost (no cost ledger given: kdgrid plots --cost tables/cost.csv)")
    from .cost import kd_extra_cost

    data, unit = kd_extra_cost(table, cost)
    data = data.dropna(subset=["improvement", "extra_cost"])
    if data.empty:
        raise NoData("cost (no KD cell with a measured cost and an SFT baseline)")
    order = ordered_methods(data["method"])
    palette = method_palette(order)
    data = data.assign(**{"KD method": data["method"].map(method_label)})
    families = _families(data)
    fig, axes = plt.subplots(1, len(families), figsize=(4.8 * len(families) + 2.2, 4.2), squeeze=False, layout="constrained")
    for ax, family in zip(axes[0], families):
        part = data[data["family"] == family]
        sns.scatterplot(part, x="extra_cost", y="improvement", hue="KD method", palette=palette, s=55,
                        hue_order=[h for h in palette if h in set(part["KD method"])], ax=ax)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axvline(0, color="black", linewidth=0.5, linestyle=":")
        ax.set_title(family)
        ax.set_xlabel(f"extra cost over SFT ({unit})")
        ax.set_ylabel(IMPROVEMENT)
    _shared_legend(fig, axes, "KD method")
    return fig


DRAW = {
    "fig1_accuracy": fig1_accuracy,
    "fig2_improvement_vs_size": fig2_improvement_vs_size,
    "fig3_temperature": fig3_temperature,
    "fig4_teacher": fig4_teacher,
    "fig5_agreement_fidelity": fig5_agreement_fidelity,
    "fig6_ablations": fig6_ablations,
    "fig7_heatmap": fig7_heatmap,
    "fig8_cost": fig8_cost,
}
NEEDS_COST = ("fig8_cost",)


def no_data_figure(what: str):
    fig, ax = plt.subplots(figsize=(6, 2.2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"no data for {what}", ha="center", va="center", fontsize=13, wrap=True)
    return fig


def save(fig, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def draw_all(table, out_dir, cost=None) -> tuple[list[Path], list[str]]:
    """Draw every figure of FIGURES into out_dir (PNG, PDF, captions/<name>.rst); `cost`: the cost
    ledger (kdgrid.analysis.cost) for the figures in NEEDS_COST.

    Returns the files written and one message per figure drawn without data.
    """
    out_dir = Path(out_dir)
    table = complete_columns(table)
    cells = kd_cells(table)
    written, empty = [], []
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        for name in FIGURES:
            caption = CAPTIONS[name]
            try:
                fig = DRAW[name](table, cells, cost) if name in NEEDS_COST else DRAW[name](table, cells)
            except NoData as e:
                empty.append(f"{name}: no data for {e}")
                warn(f"{name}: no data for {e}; writing a placeholder figure that says so")
                fig = no_data_figure(str(e))
                caption += f" (No data in this run: {e}.)"
            written += save(fig, out_dir, name)
            caption_path = out_dir / "captions" / f"{name}.rst"
            write_text(caption_path, caption + "\n")
            written.append(caption_path)
    return written, empty
