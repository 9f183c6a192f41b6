"""KD improvement per cell, the quantity every hypothesis is about.

A cell is (family, task, teacher, student, method). Its KD accuracy is the best over temperatures of
the seed-averaged accuracy, leaving out the teacher-signal ablations (teacher_kind base, noise > 0);
its improvement is that minus the student's own SFT accuracy (seed-averaged), in accuracy points.
The predictors of H2-H5 ride along: the teacher's SFT accuracy, the student's size and SFT accuracy,
and agreement / BLEU of the selected checkpoint with its teacher.

Beside the paper's definition each cell carries:
- the per-seed improvements at the selected temperature (KD at seed s minus the student's SFT at seed s,
  or its seed mean when SFT has no run at s; `seed_improvements`), with a 95% t-interval over seeds
  (`improvement_ci_low/high`) and the same interval for the KD accuracy (`kd_accuracy_ci_low/high`);
- `improvement_heldout`: the temperature chosen on one fixed half of the test items scores the other half
  (`splits`), both ways round, so every item is scored once, at the temperature its other half chose; the
  accuracy over all items (each half weighted by its number of items) minus the student's SFT accuracy.
  With one temperature, or both halves choosing the same, it is the paper's `improvement` exactly. The
  paper's `improvement` chooses and scores on the same items, which favours it; the difference is the
  gain that comes from selection. Empty where the table has no split accuracies (or, where the halves
  choose differently, no split item counts).
"""

from __future__ import annotations

from ..methods import METHODS
from .splits import SPLIT_COLUMNS, SPLIT_COUNT_COLUMNS
from .table import AVERAGE

CORE_COLUMNS = ("family", "task", "role", "model", "teacher", "student", "method", "temperature",
                "noise_sigma", "teacher_kind", "accuracy")
OPTIONAL_COLUMNS = ("seed", *SPLIT_COLUMNS, *SPLIT_COUNT_COLUMNS, "agreement", "bleu", "embedding_similarity", "sft_agreement", "sft_bleu",
                    "sft_embedding_similarity", "student_size_b", "teacher_size_b")
MEASURES = ("accuracy", *SPLIT_COLUMNS, "agreement", "bleu", "embedding_similarity", "sft_agreement", "sft_bleu",
            "sft_embedding_similarity")
CELL_KEYS = ["family", "task", "teacher", "student", "method"]


def ordered_methods(methods) -> list[str]:
    present = {m for m in methods if isinstance(m, str)}
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def ordered_tasks(table, family: str) -> list[str]:
    """The family's tasks in table order, `Average` last."""
    tasks = list(dict.fromkeys(table.loc[table["family"] == family, "task"]))
    return [t for t in tasks if t != AVERAGE] + ([AVERAGE] if AVERAGE in tasks else [])


def complete_columns(table):
    """The table with every optional column present (empty where the table lacks it)."""
    import numpy as np

    missing = [c for c in OPTIONAL_COLUMNS if c not in table.columns]
    return table.assign(**{c: np.nan for c in missing}) if missing else table


def main_kd_rows(table):
    """KD rows of the main grid: SFT teacher, no noise (the teacher-signal ablations left out)."""
    kd = table[table["role"] == "kd"]
    kind = kd["teacher_kind"].fillna("sft")
    noise = kd["noise_sigma"].fillna(0.0)
    return kd[(kind == "sft") & (noise == 0)]


def sft_accuracy(table):
    """Seed-averaged SFT accuracy per (family, model, task)."""
    sft = table[table["role"] == "sft"]
    return sft.groupby(["family", "model", "task"], as_index=False, dropna=False)[["accuracy"]].mean()


def seed_averaged(kd):
    """KD rows averaged over seeds: one row per (cell, temperature), with the seed spread."""
    import numpy as np

    keys = CELL_KEYS + ["temperature"]
    grouped = kd.groupby(keys, dropna=False, sort=False)
    out = grouped[list(MEASURES)].mean()
    out["seed_sd"] = grouped["accuracy"].std(ddof=1)
    out["n_seeds"] = grouped["accuracy"].size()
    out["student_size_b"] = grouped["student_size_b"].first()
    out["teacher_size_b"] = grouped["teacher_size_b"].first()
    for column in SPLIT_COUNT_COLUMNS:  # a property of the test set, the same at every seed
        out[column] = grouped[column].first()
    out = out.reset_index()
    out.loc[out["n_seeds"] < 2, "seed_sd"] = np.nan
    return out


def kd_cells(table):
    """One row per cell with its best temperature, improvement and predictors.

    `missing` says, for a cell whose improvement cannot be computed, why (no SFT baseline for the
    student, no KD accuracy); it is empty where the improvement is known.
    """
    import numpy as np

    table = complete_columns(table)
    averaged = seed_averaged(main_kd_rows(table))
    averaged = averaged.sort_values(["accuracy", "temperature"], ascending=[False, True], na_position="last", kind="stable")
    best = averaged.groupby(CELL_KEYS, dropna=False, sort=False).head(1)
    best = best.rename(columns={"accuracy": "kd_accuracy", "temperature": "best_temperature"})

    sft = sft_accuracy(table)
    best = best.merge(sft.rename(columns={"model": "student", "accuracy": "sft_accuracy"}),
                      on=["family", "student", "task"], how="left")
    best = best.merge(sft.rename(columns={"model": "teacher", "accuracy": "teacher_sft_accuracy"}),
                      on=["family", "teacher", "task"], how="left")
    best["improvement"] = best["kd_accuracy"] - best["sft_accuracy"]
    best = _join(best, _heldout(averaged))
    best["improvement_heldout"] = best["kd_accuracy_heldout"] - best["sft_accuracy"]  # both over all items
    best = _join(best, _seed_intervals(seed_improvements(table, best)))

    sft_students = set(zip(table.loc[table["role"] == "sft", "family"], table.loc[table["role"] == "sft", "model"]))
    missing = []
    for row in best.itertuples():
        if (row.family, row.student) not in sft_students:
            missing.append(f"no SFT baseline for student {row.student}")
        elif np.isnan(row.sft_accuracy):
            missing.append(f"no SFT accuracy for student {row.student} on {row.task}")
        elif np.isnan(row.kd_accuracy):
            missing.append(f"no KD accuracy for {row.teacher}->{row.student} {row.method} on {row.task}")
        else:
            missing.append("")
    best["missing"] = missing

    method_rank = {m: i for i, m in enumerate(ordered_methods(best["method"]))}
    best = best.assign(_m=best["method"].map(method_rank))
    best = best.sort_values(["family", "student_size_b", "student", "teacher_size_b", "teacher", "_m"], kind="stable")
    columns = CELL_KEYS + ["improvement", "kd_accuracy", "sft_accuracy", "best_temperature", "n_seeds", "seed_sd",
                           "improvement_ci_low", "improvement_ci_high", "kd_accuracy_ci_low", "kd_accuracy_ci_high",
                           "improvement_heldout", "heldout_temperatures",
                           "teacher_sft_accuracy", "student_size_b", "teacher_size_b",
                           *[m for m in MEASURES if m != "accuracy"], "missing"]
    return best[columns].reset_index(drop=True)


def _join(cells, extra):
    """cells with extra's per-cell columns (empty ones when there is no cell)."""
    if cells.empty:
        return cells.assign(**{c: [] for c in extra.columns if c not in CELL_KEYS})
    return cells.merge(extra, on=CELL_KEYS, how="left")


def _heldout(averaged):
    """Per cell: the KD accuracy over all items with each half scored at the temperature chosen on the other
    half (ties go to the lower temperature, as for the paper's selection)."""
    import pandas as pd

    pair_keys = [k for k in CELL_KEYS if k != "task"]
    tasks = averaged[averaged["task"] != AVERAGE].groupby(pair_keys, dropna=False)
    rows = []
    for key, group in averaged.groupby(CELL_KEYS, dropna=False, sort=False):
        cell = dict(zip(CELL_KEYS, key))
        on_1, on_2 = _chosen(group, "accuracy_split1", "accuracy_split2"), _chosen(group, "accuracy_split2", "accuracy_split1")
        if on_1 is None or on_2 is None:
            heldout, chosen = float("nan"), ""
        else:
            chosen = f"{on_1:g}/{on_2:g}"
            if on_1 == on_2:  # every item scored at the same temperature: its accuracy on all items
                heldout = float(group.loc[group["temperature"] == on_1, "accuracy"].iloc[0])
            elif cell["task"] == AVERAGE:  # the mean over the tasks, as the Average's accuracy is
                parts = tasks.get_group(tuple(cell[k] for k in pair_keys))
                heldout = sum(_crossed(part, on_1, on_2) for _, part in parts.groupby("task")) / parts["task"].nunique()
            else:
                heldout = _crossed(group, on_1, on_2)
        rows.append({**cell, "kd_accuracy_heldout": heldout, "heldout_temperatures": chosen})
    return pd.DataFrame(rows, columns=CELL_KEYS + ["kd_accuracy_heldout", "heldout_temperatures"])


def _chosen(group, choose_on: str, score_on: str):
    """The temperature with the best accuracy on one half (the lowest of a tie), among those scored on both."""
    known = group[group[choose_on].notna() & group[score_on].notna()].sort_values("temperature", kind="stable")
    return None if known.empty else float(known.loc[known[choose_on].idxmax(), "temperature"])


def _crossed(rows, on_1: float, on_2: float) -> float:
    """One task's accuracy over all items with half 2 scored at temperature on_1 and half 1 at on_2, each half
    weighted by its number of items (nan where a count or a temperature is missing)."""
    at = rows.set_index("temperature")
    if on_1 not in at.index or on_2 not in at.index:
        return float("nan")
    n1, n2 = at.at[on_2, "n_items_split1"], at.at[on_1, "n_items_split2"]
    return float((n1 * at.at[on_2, "accuracy_split1"] + n2 * at.at[on_1, "accuracy_split2"]) / (n1 + n2))


def seed_improvements(table, cells):
    """One row per (cell, seed) at the cell's selected temperature: the KD accuracy of that seed and its
    improvement over the student's SFT at the same seed (the SFT seed mean where SFT has no run at it)."""
    import pandas as pd

    table = complete_columns(table)
    kd = main_kd_rows(table)
    selected = cells[CELL_KEYS + ["best_temperature", "sft_accuracy"]].rename(columns={"best_temperature": "temperature"})
    runs = kd.merge(selected, on=CELL_KEYS + ["temperature"], how="inner")
    runs = runs.groupby(CELL_KEYS + ["seed"], dropna=False, as_index=False).agg(
        kd_accuracy=("accuracy", "mean"), sft_mean=("sft_accuracy", "first"))
    sft = table[table["role"] == "sft"].groupby(["family", "model", "task", "seed"], as_index=False)["accuracy"].mean()
    runs = runs.merge(sft.rename(columns={"model": "student", "accuracy": "sft_seed"}),
                      on=["family", "student", "task", "seed"], how="left")
    runs["sft_accuracy"] = runs["sft_seed"].fillna(runs["sft_mean"])
    runs["improvement"] = runs["kd_accuracy"] - runs["sft_accuracy"]
    return pd.DataFrame(runs[CELL_KEYS + ["seed", "kd_accuracy", "sft_accuracy", "improvement"]])


def _seed_intervals(runs):
    """Per cell with two or more seeds: 95% t-intervals over seeds of its improvement and KD accuracy."""
    import pandas as pd
    from scipy import stats

    rows = []
    for key, group in runs.groupby(CELL_KEYS, dropna=False, sort=False):
        row = dict(zip(CELL_KEYS, key))
        for column, name in (("improvement", "improvement"), ("kd_accuracy", "kd_accuracy")):
            x = group[column].dropna().to_numpy(dtype=float)
            low = high = float("nan")
            if len(x) >= 2:
                if x.std() == 0:
                    low = high = float(x.mean())
                else:
                    low, high = stats.ttest_1samp(x, 0).confidence_interval(0.95)
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = float(low), float(high)
        rows.append(row)
    return pd.DataFrame(rows, columns=CELL_KEYS + ["improvement_ci_low", "improvement_ci_high",
                                                   "kd_accuracy_ci_low", "kd_accuracy_ci_high"])


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"
