"""A short Markdown report of the hypothesis tests: each hypothesis, its result, and whether the data
support it at alpha 0.05 (Holm-corrected across tasks), plus the per-cell improvements with their
spread across seeds, the held-out temperature selection beside the paper's, and a power note."""

from __future__ import annotations

import math

from .hypotheses import (
    ALPHA,
    MAX_EXACT,
    PER_TASK_ONLY,
    PERM_RESAMPLES,
    PERM_SEED,
    STATEMENTS,
    min_n,
    not_computable,
)
from .improvement import ordered_methods, pair_label
from .power import power_note
from .table import AVERAGE


def _fmt(x, digits=2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def _ci(low, high) -> str:
    return f" [{low:+.2f}, {high:+.2f}]" if not (math.isnan(low) or math.isnan(high)) else ""


def _result(row) -> str:
    if math.isnan(row.statistic):
        return "not computable"
    text = (f"{row.statistic_name} = {row.statistic:.2f}, p = {_p(row.p_value)}, Holm p = {_p(row.p_holm)}, "
            f"p_perm = {_p(row.p_perm)}, Holm p_perm = {_p(row.p_perm_holm)}, n = {row.n}")
    if row.effect_size_name == "cohen_d":
        text += f", mean {row.mean_improvement:+.2f} points, d = {row.effect_size:+.2f}{_ci(row.effect_ci_low, row.effect_ci_high)}"
    elif row.effect_size_name == "rho":
        text += f", 95% CI{_ci(row.effect_ci_low, row.effect_ci_high) or ' –'}"
    return text


def _too_few(row) -> str:
    """Why a permutation verdict could not be 'supported' at this n, or ''."""
    if row.verdict_p != "p_perm_holm" or math.isnan(row.p_min) or row.p_min < ALPHA:
        return ""
    if row.hypothesis == "H1_seeds":  # the permuted units: cells, or the seeds of a single cell
        units = "seeds" if "one cell" in row.test else "cells"
        return (f" ({int(row.dof) + 1} {units}: the permutation test cannot give p < {ALPHA} with fewer than "
                f"{int(row.min_n)})")
    return f" (n = {row.n}: the permutation test cannot give p < {ALPHA} below n = {int(row.min_n)})"


def _direction(rho: float) -> str:
    return "positive" if rho > 0 else "negative"


def _verdict(hypothesis: str, rows) -> tuple[str, str, str]:
    """(headline result, tasks significant, verdict) for one (family, hypothesis, method)."""
    per_task = rows[rows["task"] != AVERAGE]
    tested = per_task[per_task["statistic"].notna()]
    significant = tested[tested["significant"] == True]
    tasks = f"{len(significant)}/{len(tested)}" + (f" ({len(per_task) - len(tested)} not computable)" if len(tested) < len(per_task) else "")
    average = rows[rows["task"] == AVERAGE]
    if hypothesis not in PER_TASK_ONLY and len(average):
        row = next(average.itertuples())
        if math.isnan(row.statistic):
            return "not computable", tasks, f"not computable: {row.reason}"
        supported = bool(row.significant)
        verdict = "supported" if supported else "not supported" + _too_few(row)
        if supported and row.statistic_name == "rho":
            verdict += f" ({_direction(row.statistic)} correlation)"
        if supported and row.effect_size_name == "cohen_d" and row.effect_size < 0:
            verdict += " (negative effect)"
        return f"{AVERAGE}: {_result(row)}", tasks, verdict
    if tested.empty:
        reason = next(iter(rows["reason"]), "") if len(rows) else "no test"
        return "not computable", tasks, f"not computable: {reason}"
    if len(significant) == 0:
        too_few = [_too_few(r) for r in tested.itertuples()]
        verdict = "not supported (no task significant)" + (too_few[0] if all(too_few) else "")
    else:
        signs = {_direction(r) for r in significant["statistic"]} if hypothesis in PER_TASK_ONLY else set()
        share = "supported" if len(significant) > len(tested) / 2 else "partly supported"
        verdict = f"{share} in {len(significant)} of {len(tested)} tasks" + (f" ({', '.join(sorted(signs))})" if signs else "")
    return "per task only", tasks, verdict


def _basis(results) -> str:
    used = set(results["verdict_p"].dropna()) - {""}
    if used == {"p_holm"}:
        return ("Verdicts use the asymptotic p-values (`p_holm`), as the paper computed them, so that its published "
                "verdicts are reproduced; the permutation p-values are shown beside them.")
    return (f"Verdicts use the permutation p-values (`p_perm_holm`): exact where there are at most {MAX_EXACT} "
            f"permutations (Spearman up to n = 8, sign-flip up to n = 15), else {PERM_RESAMPLES} random ones "
            f"(seed {PERM_SEED}). The asymptotic p (`p`, the paper's) is shown beside them; it is unreliable for "
            "few cells (for |rho| = 1 it is 0 at any n). A permutation test has a smallest possible p: at alpha "
            f"{ALPHA} the Spearman tests need n >= {min_n('spearman')} cells, the t-tests (sign-flip) n >= "
            f"{min_n('signflip')}, the ANOVA n >= {min_n('anova', 2)} with two methods and >= {min_n('anova', 3)} "
            "with three; below that a verdict is 'not supported' whatever the data.")


def _disagreements(results) -> list[str]:
    """Tests where the permutation p and the asymptotic p give different verdicts."""
    import numpy as np

    both = results[np.isfinite(results["p_holm"].to_numpy(dtype=float))
                   & np.isfinite(results["p_perm_holm"].to_numpy(dtype=float))]
    differ = both[(both["p_holm"] < ALPHA) != (both["p_perm_holm"] < ALPHA)]
    return [f"- {r.family} {r.hypothesis} {r.method} {r.task}: Holm p = {_p(r.p_holm)}, Holm p_perm = {_p(r.p_perm_holm)} "
            f"(n = {r.n})" for r in differ.itertuples()]


def _selection(cells) -> list[str]:
    both = cells.dropna(subset=["improvement", "improvement_heldout"])
    if both.empty:
        return [("Temperature selection: the improvement takes the best temperature on the same test items it "
                 "scores; a held-out choice needs the per-half accuracies (the table has none: no per-item records)."), ""]
    gain = both["improvement"] - both["improvement_heldout"]
    return [(f"Temperature selection: with the temperature chosen on one half of each test set and scored on the "
             f"other (both ways round), the {AVERAGE} improvement is {both['improvement_heldout'].mean():+.2f} points "
             f"on average over {len(both)} cells, against {both['improvement'].mean():+.2f} with the best temperature "
             f"on all items; selection on the test items accounts for {gain.mean():+.2f} points "
             f"(per cell {gain.min():+.2f} to {gain.max():+.2f})."), ""]


def summary_markdown(results, cells, source: str, runs=None) -> str:
    lines = [
        "# KD hypothesis tests",
        "",
        (f"Source: `{source}`. Improvement = best KD accuracy over temperatures (teacher-signal ablations left out) "
        "minus the student's own SFT accuracy, in accuracy points; with several seeds each cell is averaged over "
        f"seeds first (H1_seeds keeps the seeds apart). Significance at alpha = {ALPHA}, p-values Holm-corrected "
        f"across the tasks (and {AVERAGE}) of each family, hypothesis and method. H1_ttest and H1_seeds are "
        "one-sided (improvement > 0); H2-H5 are Spearman correlations. Effect sizes carry their sign, with 95% CIs "
        "(Cohen's d: pingouin's normal approximation; rho: Fisher's z, none at n = 3 or |rho| = 1). "
        "Full results: hypotheses.csv."),
        "",
        _basis(results),
        "",
        "Hypotheses:",
        "",
    ]
    lines += [f"- **{h}**: {s}" for h, s in STATEMENTS.items()]
    for family in dict.fromkeys(results["family"]):
        family_rows = results[results["family"] == family]
        lines += ["", f"## {family or 'table'}", ""]
        if cells is not None:
            family_cells = cells[(cells["family"] == family) & (cells["task"] == AVERAGE)]
            known = family_cells["improvement"].dropna()
            if len(known):
                lines += [(f"{len(family_cells)} KD cells (teacher, student, method); {AVERAGE} improvement "
                          f"{known.mean():+.2f} points on average (from {known.min():+.2f} to {known.max():+.2f})."), ""]
                lines += _selection(family_cells)
                if runs is not None:
                    family_runs = runs[(runs["family"] == family) & (runs["task"] == AVERAGE)]
                    lines += [power_note(family_cells, family_runs), ""]
        lines += ["| hypothesis | method | result | tasks significant (Holm) | verdict |", "|---|---|---|---|---|"]
        methods = ["all"] + ordered_methods(family_rows["method"].loc[family_rows["method"] != "all"])
        for hypothesis in STATEMENTS:
            for method in methods:
                rows = family_rows[(family_rows["hypothesis"] == hypothesis) & (family_rows["method"] == method)]
                if rows.empty:
                    continue
                headline, tasks, verdict = _verdict(hypothesis, rows)
                lines.append(f"| {hypothesis} | {method} | {headline} | {tasks} | {verdict} |")
        if cells is not None:
            lines += _cell_table(cells[(cells["family"] == family) & (cells["task"] == AVERAGE)])
    disagree = _disagreements(results)
    if disagree:
        lines += ["", "## Where the permutation and the asymptotic p-values disagree (Holm, alpha 0.05)", ""] + disagree
    problems = not_computable(results)
    if problems:
        lines += ["", "## Not computable", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def _cell_table(cells) -> list[str]:
    if cells.empty:
        return []
    lines = ["", (f"{AVERAGE} accuracy per cell (best temperature; seed sd = standard deviation of the KD accuracy "
             "across seeds; 95% CI over seeds = t-interval of the per-seed improvement, – with one seed; held-out = "
             "the improvement with the temperature chosen on the other half of the test items, with the "
             "temperatures chosen on half 1 / half 2):"), "",
             "| teacher → student | method | best τ | KD % | SFT % | improvement | 95% CI over seeds | seeds | seed sd | held-out (τ) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in cells.itertuples():
        improvement = f"{r.improvement:+.2f}" if not math.isnan(r.improvement) else f"– ({r.missing})"
        interval = _ci(r.improvement_ci_low, r.improvement_ci_high).strip() or "–"
        heldout = f"{r.improvement_heldout:+.2f} ({r.heldout_temperatures})" if not math.isnan(r.improvement_heldout) else "–"
        lines.append(f"| {pair_label(r.teacher, r.student)} | {r.method} | {_fmt(r.best_temperature, 1)} | "
                     f"{_fmt(r.kd_accuracy)} | {_fmt(r.sft_accuracy)} | {improvement} | {interval} | {r.n_seeds} | "
                     f"{_fmt(r.seed_sd)} | {heldout} |")
    return lines
