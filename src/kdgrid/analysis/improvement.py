"""KD improvement per cell, the quantity every hypothesis is about.

A cell is (family, task, teacher, student, method). Its KD accuracy is the best over temperatures of
the seed-averaged accuracy, leaving out the teacher-signal ablations (teacher_kind base, noise > 0);
its improvement is that minus the student's own SFT accuracy (seed-averaged), in accuracy points.
The predictors of H2-H5 ride along: the teacher's SFT accuracy, the student's size and SFT accuracy,
and agreement / BLEU of the selected checkpoint with its teacher.
"""

from __future__ import annotations

from .table import AVERAGE

CORE_COLUMNS = ("family", "task", "role", "model", "teacher", "student", "method", "temperature",
                "noise_sigma", "teacher_kind", "accuracy")
OPTIONAL_COLUMNS = ("seed", "agreement", "bleu", "embedding_similarity", "sft_agreement", "sft_bleu",
                    "sft_embedding_similarity", "student_size_b", "teacher_size_b")
MEASURES = ("accuracy", "agreement", "bleu", "embedding_similarity", "sft_agreement", "sft_bleu",
            "sft_embedding_similarity")
CELL_KEYS = ["family", "task", "teacher", "student", "method"]
METHOD_ORDER = ("fkl", "rkl", "gkd", "seqkd", "skew_kl", "tvd")


def ordered_methods(methods) -> list[str]:
    present = {m for m in methods if isinstance(m, str)}
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


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
    return sft.groupby(["family", "model", "task"], as_index=False, dropna=False)["accuracy"].mean()


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
                           "teacher_sft_accuracy", "student_size_b", "teacher_size_b",
                           *[m for m in MEASURES if m != "accuracy"], "missing"]
    return best[columns].reset_index(drop=True)


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"
