"""The paper's hypothesis tests on KD improvement, per family, method and task.

- H1_ttest: one-sample t-test, improvement > 0 (one-sided); effect size Cohen's d, CI of the mean.
- H1_anova: one-way ANOVA of improvement across methods (method `all` only); effect size partial eta^2.
- H2_teacher_score, H3_student_size, H3_student_sft, H4_agreement, H5_fidelity: Spearman's rho of
  improvement against a predictor, with its 95% CI; H4/H5 per task only (not `Average`).
Every test is run over all cells (method `all`) and per method, except the ANOVA. A test that cannot
be computed still gets a row: empty statistic and a `reason`.
"""

from __future__ import annotations

import math
import warnings

from .improvement import CORE_COLUMNS, kd_cells, ordered_methods, ordered_tasks, pair_label
from .table import AVERAGE

ALPHA = 0.05

STATEMENTS = {
    "H1_ttest": "KD improves accuracy over the student's own SFT (mean improvement > 0).",
    "H1_anova": "The improvement differs between KD methods.",
    "H2_teacher_score": "The improvement correlates with the teacher's SFT accuracy.",
    "H3_student_size": "The improvement correlates with the student's size.",
    "H3_student_sft": "The improvement correlates with the student's own SFT accuracy.",
    "H4_agreement": "The improvement correlates with student-teacher agreement.",
    "H5_fidelity": "The improvement correlates with reasoning fidelity (BLEU with the teacher's rationales).",
}
HYPOTHESES = tuple(STATEMENTS)

# correlation hypothesis -> (cell column, what it is, table column it comes from)
PREDICTORS = {
    "H2_teacher_score": ("teacher_sft_accuracy", "the teacher's SFT accuracy", "accuracy"),
    "H3_student_size": ("student_size_b", "student size", "student_size_b"),
    "H3_student_sft": ("sft_accuracy", "the student's SFT accuracy", "accuracy"),
    "H4_agreement": ("agreement", "agreement", "agreement"),
    "H5_fidelity": ("bleu", "fidelity (BLEU)", "bleu"),
}
PER_TASK_ONLY = {"H4_agreement", "H5_fidelity"}

RESULT_COLUMNS = [
    "family", "hypothesis", "method", "task", "n", "statistic_name", "statistic", "dof", "p_value", "p_holm",
    "significant", "effect_size_name", "effect_size", "ci_low", "ci_high", "mean_improvement", "n_seeds",
    "seed_sd", "reason",
]


def _row(family, hypothesis, method, task, reason="", **values):
    row = {c: math.nan for c in RESULT_COLUMNS}
    row.update(family=family, hypothesis=hypothesis, method=method, task=task, n=0, statistic_name="",
               effect_size_name="", reason=reason, significant=None)
    row.update(values)
    return row


def _cell_names(cells) -> str:
    names = [f"{pair_label(r.teacher, r.student)} {r.method}" for r in cells.itertuples()]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _seed_values(cells) -> dict:
    import numpy as np

    sd = cells["seed_sd"].to_numpy(dtype=float)
    return {
        "n_seeds": int(cells["n_seeds"].max()) if len(cells) else math.nan,
        "seed_sd": float(np.nanmean(sd)) if np.isfinite(sd).any() else math.nan,
    }


def _unusable(cells) -> str:
    """Why some cells of a test have no improvement, or '' when all have one."""
    bad = cells[cells["missing"] != ""]
    return "; ".join(dict.fromkeys(bad["missing"])) if len(bad) else ""


def _ttest(cells) -> dict:
    import pingouin as pg

    x = cells["improvement"].to_numpy(dtype=float)
    common = {"n": len(x), "mean_improvement": float(x.mean()) if len(x) else math.nan, **_seed_values(cells)}
    if len(x) < 2:
        return {**common, "reason": f"fewer than two cells (n={len(x)}); a t-test needs two or more"}
    if x.std() == 0:
        return {**common, "reason": "all improvements are equal; the t statistic is undefined"}
    res = pg.ttest(x, 0, alternative="greater").iloc[0]
    ci_low, ci_high = res["CI95"]
    return {**common, "statistic_name": "t", "statistic": float(res["T"]), "dof": float(res["dof"]),
            "p_value": float(res["p_val"]), "effect_size_name": "cohen_d", "effect_size": float(res["cohen_d"]),
            "ci_low": float(ci_low), "ci_high": float(ci_high)}


def _anova(cells) -> dict:
    import pingouin as pg

    common = {"n": len(cells), "mean_improvement": float(cells["improvement"].mean()) if len(cells) else math.nan,
              **_seed_values(cells)}
    sizes = cells.groupby("method")["improvement"].size()
    if len(sizes) < 2:
        return {**common, "reason": f"only {len(sizes)} KD method(s) ({', '.join(sizes.index)}); an ANOVA needs two or more"}
    if len(cells) - len(sizes) < 1:
        return {**common, "reason": f"one cell per method ({len(cells)} cells, {len(sizes)} methods); no within-method variance"}
    within = cells.groupby("method")["improvement"].var(ddof=0).fillna(0)
    if (within * sizes).sum() == 0:
        return {**common, "reason": "no variance within methods; the F statistic is undefined"}
    res = pg.anova(data=cells, dv="improvement", between="method").iloc[0]
    return {**common, "statistic_name": "F", "statistic": float(res["F"]), "dof": float(res["ddof2"]),
            "p_value": float(res["p_unc"]), "effect_size_name": "np2", "effect_size": float(res["np2"])}


def _spearman(cells, column: str, what: str) -> dict:
    import pingouin as pg

    known = cells[cells[column].notna()]
    common = {"n": len(known), "mean_improvement": float(known["improvement"].mean()) if len(known) else math.nan,
              **_seed_values(known)}
    if known.empty:
        return {**common, "reason": f"no cell has {what}; a correlation needs three or more"}
    note = ""
    if len(known) < len(cells):
        note = f"left out {len(cells) - len(known)} cell(s) without {what}: {_cell_names(cells[cells[column].isna()])}"
    if len(known) < 3:
        return {**common, "reason": "; ".join(filter(None, [(f"fewer than three cells with {what} (n={len(known)}); "
                                                            "a correlation needs three or more"), note]))}
    for values, name in ((known["improvement"], "improvement"), (known[column], what)):
        if values.nunique() < 2:
            return {**common, "reason": f"all values of {name} are equal; Spearman's rho is undefined"}
    res = pg.corr(known["improvement"].to_numpy(dtype=float), known[column].to_numpy(dtype=float), method="spearman").iloc[0]
    ci_low, ci_high = res["CI95"]
    return {**common, "statistic_name": "rho", "statistic": float(res["r"]), "p_value": float(res["p_val"]),
            "effect_size_name": "rho", "effect_size": float(res["r"]), "ci_low": float(ci_low),
            "ci_high": float(ci_high), "reason": note}


def _test(hypothesis, cells) -> dict:
    with warnings.catch_warnings():
        # pingouin's own noise (pandas deprecations, "sample too small to estimate power")
        warnings.simplefilter("ignore")
        if hypothesis == "H1_ttest":
            return _ttest(cells)
        if hypothesis == "H1_anova":
            return _anova(cells)
        column, what, _ = PREDICTORS[hypothesis]
        return _spearman(cells, column, what)


def _holm(results):
    import numpy as np
    import pingouin as pg

    results["p_holm"] = np.nan
    for _, group in results.groupby(["family", "hypothesis", "method"], sort=False):
        finite = group[np.isfinite(group["p_value"].to_numpy(dtype=float))]
        if len(finite):
            _, corrected = pg.multicomp(finite["p_value"].to_numpy(dtype=float), method="holm")
            results.loc[finite.index, "p_holm"] = corrected
    p = results["p_holm"].to_numpy(dtype=float)
    results["significant"] = [bool(v < ALPHA) if np.isfinite(v) else None for v in p]
    return results


def missing_column_reasons(table, source: str = "the table") -> dict[str, str]:
    """hypothesis -> why it cannot run because the table lacks a column ('' when it can run)."""
    core = [c for c in CORE_COLUMNS if c not in table.columns]
    reasons = {}
    for hypothesis in HYPOTHESES:
        needed = core + ([PREDICTORS[hypothesis][2]] if hypothesis in PREDICTORS and PREDICTORS[hypothesis][2] not in table.columns else [])
        reasons[hypothesis] = f"{source} has no column {', '.join(map(repr, needed))}" if needed else ""
    return reasons


def run_hypotheses(table, source: str = "the table"):
    """All hypothesis tests on a results table -> (results DataFrame with RESULT_COLUMNS, cells DataFrame)."""
    import pandas as pd

    column_reasons = missing_column_reasons(table, source)
    families = list(dict.fromkeys(table["family"])) if "family" in table.columns else [""]
    if any(column_reasons[h] for h in HYPOTHESES if h not in PREDICTORS):
        rows = [_row(f, h, "all", "", column_reasons[h]) for f in families for h in HYPOTHESES]
        return _holm(pd.DataFrame(rows, columns=RESULT_COLUMNS)), None

    cells = kd_cells(table)
    rows = []
    for family in families:
        family_cells = cells[cells["family"] == family]
        tasks = [t for t in ordered_tasks(table, family) if t in set(family_cells["task"])]
        methods = ordered_methods(family_cells["method"])
        if family_cells.empty:
            reason = f"no KD cell with an SFT teacher and no noise in family {family!r}"
            rows += [_row(family, h, "all", "", reason) for h in HYPOTHESES]
            continue
        for hypothesis in HYPOTHESES:
            if column_reasons[hypothesis]:
                rows.append(_row(family, hypothesis, "all", "", column_reasons[hypothesis]))
                continue
            for method in ["all"] + ([] if hypothesis == "H1_anova" else methods):
                for task in tasks:
                    if task == AVERAGE and hypothesis in PER_TASK_ONLY:
                        continue
                    chosen = family_cells[family_cells["task"] == task]
                    if method != "all":
                        chosen = chosen[chosen["method"] == method]
                    unusable = _unusable(chosen)
                    if unusable:
                        rows.append(_row(family, hypothesis, method, task, f"not computable: {unusable}",
                                         n=int((chosen["missing"] == "").sum())))
                    else:
                        rows.append(_row(family, hypothesis, method, task, **_test(hypothesis, chosen)))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    results["n"] = results["n"].astype(int)
    return _holm(results), cells


def not_computable(results) -> list[str]:
    """One line per distinct reason a test has no statistic, with how many tests it hit."""
    empty = results[results["statistic"].isna()]
    counts = empty.groupby(["family", "hypothesis", "reason"], sort=False).size()
    return [f"{family or '-'} {hypothesis}: {reason} ({n} test(s))" for (family, hypothesis, reason), n in counts.items()]
