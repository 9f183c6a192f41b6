"""A short Markdown report of the hypothesis tests: each hypothesis, its result, and whether the data
support it at alpha 0.05 (Holm-corrected across tasks), plus the per-cell improvements with their
spread across seeds."""

from __future__ import annotations

import math

from .hypotheses import ALPHA, PER_TASK_ONLY, STATEMENTS, not_computable
from .improvement import ordered_methods, pair_label
from .table import AVERAGE


def _fmt(x, digits=2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def _result(row) -> str:
    if math.isnan(row.statistic):
        return "not computable"
    text = f"{row.statistic_name} = {row.statistic:.2f}, p = {_p(row.p_value)}, Holm p = {_p(row.p_holm)}, n = {row.n}"
    if row.hypothesis == "H1_ttest":
        text += f", mean {row.mean_improvement:+.2f} points, d = {row.effect_size:.2f}"
    return text


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
        verdict = "supported" if supported else "not supported"
        if supported and row.statistic_name == "rho":
            verdict += f" ({_direction(row.statistic)} correlation)"
        return f"{AVERAGE}: {_result(row)}", tasks, verdict
    if tested.empty:
        reason = next(iter(rows["reason"]), "") if len(rows) else "no test"
        return "not computable", tasks, f"not computable: {reason}"
    if len(significant) == 0:
        verdict = "not supported (no task significant)"
    else:
        signs = {_direction(r) for r in significant["statistic"]} if hypothesis in PER_TASK_ONLY else set()
        share = "supported" if len(significant) > len(tested) / 2 else "partly supported"
        verdict = f"{share} in {len(significant)} of {len(tested)} tasks" + (f" ({', '.join(sorted(signs))})" if signs else "")
    return "per task only", tasks, verdict


def summary_markdown(results, cells, source: str) -> str:
    lines = [
        "# KD hypothesis tests",
        "",
        (f"Source: `{source}`. Improvement = best KD accuracy over temperatures (teacher-signal ablations left out) "
        "minus the student's own SFT accuracy, in accuracy points; with several seeds each cell is averaged over "
        f"seeds first. Significance at alpha = {ALPHA}, p-values Holm-corrected across the tasks (and {AVERAGE}) "
        "of each family, hypothesis and method. H1_ttest is one-sided (improvement > 0); H2-H5 are Spearman "
        "correlations. Full results: hypotheses.csv."),
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
    problems = not_computable(results)
    if problems:
        lines += ["", "## Not computable", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def _cell_table(cells) -> list[str]:
    if cells.empty:
        return []
    lines = ["", (f"{AVERAGE} accuracy per cell (best temperature; seed sd = standard deviation of the KD accuracy "
             "across seeds, – with one seed):"), "",
             "| teacher → student | method | best τ | KD % | SFT % | improvement | seeds | seed sd |",
             "|---|---|---|---|---|---|---|---|"]
    for r in cells.itertuples():
        improvement = f"{r.improvement:+.2f}" if not math.isnan(r.improvement) else f"– ({r.missing})"
        lines.append(f"| {pair_label(r.teacher, r.student)} | {r.method} | {_fmt(r.best_temperature, 1)} | "
                     f"{_fmt(r.kd_accuracy)} | {_fmt(r.sft_accuracy)} | {improvement} | {r.n_seeds} | {_fmt(r.seed_sd)} |")
    return lines
