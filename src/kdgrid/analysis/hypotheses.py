"""The paper's hypothesis tests on KD improvement, per family, method and task.

- H1_ttest: one-sample t-test, improvement > 0 (one-sided); effect size Cohen's d (signed), CI of the mean.
- H1_seeds: the same question with seeds as repeated measures: the per-seed improvements of every cell,
  a mixed model with the cell as random intercept (statsmodels; one cell: a paired t-test KD vs SFT
  over seeds). Needs two or more seeds in some cell.
- H1_anova: one-way ANOVA of improvement across methods (method `all` only); effect size partial eta^2.
- H2_teacher_score, H3_student_size, H3_student_sft, H4_agreement, H5_fidelity: Spearman's rho of
  improvement against a predictor, with its 95% CI; H4/H5 per task only (not `Average`).
Every test is run over all cells (method `all`) and per method, except the ANOVA. A test that cannot
be computed still gets a row: empty statistic and a `reason`.

Two p-values per test. `p_value` is the asymptotic one the paper computed (pingouin: t, F, and the
t-approximation for Spearman, which gives 0 for |rho| = 1 at any n); `p_perm` is a permutation test
of the same statistic (scipy.stats.permutation_test): all permutations where there are at most
MAX_EXACT of them (every ordering for Spearman up to n = 8, every sign pattern for the t-tests up to
n = 15), else PERM_RESAMPLES random ones drawn with seed PERM_SEED. Holm runs on each. `p_min` is the
smallest p-value the permutation test can give at the row's n, `min_n` the smallest n at which it can
be below ALPHA. `significant` follows `verdict_p`: the permutation p on our grids, the asymptotic one
for the paper's published tables (`kdgrid analyze --import-paper`), whose verdicts it reproduces.
"""

from __future__ import annotations

import math
import warnings

from ..errors import KdgridError
from .improvement import (
    CELL_KEYS,
    CORE_COLUMNS,
    kd_cells,
    ordered_methods,
    ordered_tasks,
    pair_label,
    seed_improvements,
)
from .table import AVERAGE

ALPHA = 0.05
PERM_RESAMPLES = 9999
PERM_SEED = 0
MAX_EXACT = 40320  # 8!: Spearman is exact up to n = 8
VERDICT_P = {"permutation": "p_perm_holm", "asymptotic": "p_holm"}

STATEMENTS = {
    "H1_ttest": "KD improves accuracy over the student's own SFT (mean improvement > 0).",
    "H1_seeds": "KD improves accuracy over the student's own SFT, with the seed-to-seed variance taken into account.",
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
TESTS = {
    "H1_ttest": "one-sample t-test of the cell improvements, one-sided",
    "H1_seeds": "mixed model of the per-seed improvements, cell as random intercept, one-sided",
    "H1_anova": "one-way ANOVA across methods",
    **{h: "Spearman correlation, two-sided" for h in PREDICTORS},
}

RESULT_COLUMNS = [
    "family", "hypothesis", "method", "task", "n", "statistic_name", "statistic", "dof", "p_value", "p_holm",
    "significant", "effect_size_name", "effect_size", "ci_low", "ci_high", "mean_improvement", "n_seeds",
    "seed_sd", "reason",
    "test", "p_perm", "p_perm_holm", "p_min", "min_n", "perm_test", "verdict_p", "effect_ci_low", "effect_ci_high",
    "mean_improvement_heldout",
]


def _row(family, hypothesis, method, task, reason="", **values):
    row = {c: math.nan for c in RESULT_COLUMNS}
    row.update(family=family, hypothesis=hypothesis, method=method, task=task, n=0, statistic_name="",
               effect_size_name="", reason=reason, significant=None, test=TESTS[hypothesis], perm_test="",
               verdict_p="")
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


def _exact_or_mc(count: int) -> tuple[int, str]:
    """n_resamples for scipy.stats.permutation_test (it enumerates all `count` when n_resamples >= count)."""
    if count <= MAX_EXACT:
        return max(count, PERM_RESAMPLES), f"exact, all {count} permutations"
    return PERM_RESAMPLES, f"Monte Carlo, {PERM_RESAMPLES} resamples, seed {PERM_SEED}"


def smallest_p(kind: str, n: int, group_sizes=()) -> float:
    """The smallest p-value a permutation test can give with n distinct values (group_sizes for the ANOVA)."""
    if kind == "signflip":  # one-sided: only the observed sign pattern is as extreme
        count, extreme = 2 ** n, 1
    elif kind == "spearman":  # two-sided: the observed ordering and its reverse
        count, extreme = math.factorial(n), 2
    else:  # anova: relabelling groups of the same size gives the same F
        count = math.factorial(n) // math.prod(math.factorial(k) for k in group_sizes)
        extreme = math.prod(math.factorial(list(group_sizes).count(k)) for k in set(group_sizes))
    exact = extreme / count
    return exact if count <= MAX_EXACT else max(exact, 1 / (PERM_RESAMPLES + 1))


def min_n(kind: str, groups: int = 2, alpha: float = ALPHA) -> int:
    """The smallest n at which the permutation test can give p < alpha (ANOVA: `groups` groups as equal as can be)."""
    n = groups + 1 if kind == "anova" else 1
    while True:
        sizes = [n // groups + (i < n % groups) for i in range(groups)] if kind == "anova" else ()
        if smallest_p(kind, n, sizes) < alpha:
            return n
        n += 1


def _signed_d(x) -> tuple[float, float, float]:
    """Cohen's d of a one-sample test against 0, with its sign, and its 95% CI."""
    import pingouin as pg

    d = float(pg.compute_effsize(x, 0, eftype="cohen"))
    low, high = pg.compute_esci(stat=d, nx=len(x), ny=1, eftype="cohen", decimals=12)
    return d, float(low), float(high)


def _signflip(x) -> dict:
    """Sign-flip permutation test of mean(x) > 0; each value's sign flips independently under H0."""
    import numpy as np
    from scipy import stats

    resamples, how = _exact_or_mc(2 ** len(x))
    res = stats.permutation_test((np.asarray(x, dtype=float),), lambda v, axis: np.mean(v, axis=axis),
                                 permutation_type="samples", alternative="greater", vectorized=True,
                                 n_resamples=resamples, rng=PERM_SEED)
    return {"p_perm": float(res.pvalue), "perm_test": f"sign-flip, {how}",
            "p_min": smallest_p("signflip", len(x)), "min_n": min_n("signflip")}


def _ttest(cells) -> dict:
    import pingouin as pg

    x = cells["improvement"].to_numpy(dtype=float)
    common = {"n": len(x), "mean_improvement": float(x.mean()) if len(x) else math.nan,
              "mean_improvement_heldout": _mean(cells["improvement_heldout"]), **_seed_values(cells)}
    if len(x) < 2:
        return {**common, "reason": f"fewer than two cells (n={len(x)}); a t-test needs two or more"}
    if x.std() == 0:
        return {**common, "reason": "all improvements are equal; the t statistic is undefined"}
    res = pg.ttest(x, 0, alternative="greater").iloc[0]
    ci_low, ci_high = res["CI95"]
    d, d_low, d_high = _signed_d(x)
    return {**common, "statistic_name": "t", "statistic": float(res["T"]), "dof": float(res["dof"]),
            "p_value": float(res["p_val"]), "effect_size_name": "cohen_d", "effect_size": d,
            "effect_ci_low": d_low, "effect_ci_high": d_high, "ci_low": float(ci_low), "ci_high": float(ci_high),
            **_signflip(x)}


def _seeds_test(cells, runs) -> dict:
    """H1 with seeds as repeated measures: the per-seed improvements of the test's cells."""
    from scipy import stats

    keys = list(zip(*(cells[k] for k in CELL_KEYS)))
    runs = runs[runs.set_index(CELL_KEYS).index.isin(keys)].dropna(subset=["improvement"])
    per_cell = runs.groupby(CELL_KEYS, sort=False)["improvement"]
    k, seeds = per_cell.ngroups, (int(per_cell.size().max()) if len(runs) else 0)
    common = {"n": len(runs), "mean_improvement": _mean(runs["improvement"]), **_seed_values(cells),
              "mean_improvement_heldout": _mean(cells["improvement_heldout"])}
    if seeds < 2:
        return {**common, "reason": "one seed per cell; a seed-aware test needs two or more seeds"}
    x = runs["improvement"].to_numpy(dtype=float)
    if x.std() == 0:
        return {**common, "reason": "all per-seed improvements are equal; the test statistic is undefined"}
    if k == 1:
        t = stats.ttest_1samp(x, 0, alternative="greater")
        d, d_low, d_high = _signed_d(x)
        return {**common, "test": "paired t-test of KD vs SFT over the seeds of one cell, one-sided",
                "statistic_name": "t", "statistic": float(t.statistic), "dof": float(t.df),
                "p_value": float(t.pvalue), "ci_low": float(t.confidence_interval(0.95).low), "ci_high": math.inf,
                "effect_size_name": "cohen_d", "effect_size": d, "effect_ci_low": d_low, "effect_ci_high": d_high,
                **_signflip(x)}
    if (per_cell.var(ddof=0).fillna(0) == 0).all():
        return {**common, "reason": "every cell gives the same improvement at every seed; no seed variance to model"}
    fit = _mixed_model(runs)
    beta, se = float(fit.fe_params["Intercept"]), float(fit.bse_fe["Intercept"])
    if not fit.converged or not math.isfinite(se) or se <= 0:
        return {**common, "reason": f"the mixed model did not converge ({k} cells, {len(runs)} runs); see H1_ttest on the seed means"}
    dof = k - 1
    t_value = beta / se
    total_sd = math.sqrt(float(fit.cov_re.iloc[0, 0]) + float(fit.scale))
    d = beta / total_sd
    d_low, d_high = _signed_d_ci(d, k)
    cell_means = per_cell.mean().to_numpy(dtype=float)
    return {**common, "test": f"mixed model, cell as random intercept ({k} cells), t on {dof} df, one-sided",
            "statistic_name": "t", "statistic": t_value, "dof": float(dof),
            "p_value": float(stats.t.sf(t_value, dof)), "ci_low": beta - float(stats.t.ppf(0.95, dof)) * se,
            "ci_high": math.inf, "effect_size_name": "cohen_d", "effect_size": d,
            "effect_ci_low": d_low, "effect_ci_high": d_high,
            **_signflip(cell_means), "perm_test": "sign-flip of whole cells (their seed means), "
               + _exact_or_mc(2 ** k)[1]}


def _signed_d_ci(d: float, n: int) -> tuple[float, float]:
    import pingouin as pg

    low, high = pg.compute_esci(stat=d, nx=n, ny=1, eftype="cohen", decimals=12)
    return float(low), float(high)


def _mixed_model(runs):
    """improvement ~ 1 + (1 | cell), REML (statsmodels MixedLM)."""
    import statsmodels.formula.api as smf

    cell = runs[CELL_KEYS].astype(str).agg("/".join, axis=1)
    data = runs.assign(cell_id=cell.to_numpy())
    with warnings.catch_warnings():  # after the import: statsmodels turns its ConvergenceWarning on when imported
        warnings.simplefilter("ignore")
        return smf.mixedlm("improvement ~ 1", data, groups=data["cell_id"]).fit(reml=True)


def _f_permutation_p(groups, count: int, resamples: int) -> float:
    """P(F >= the observed F) with the method labels permuted, for groups of which one has a single cell:
    a valid one-way ANOVA group that scipy.stats.permutation_test refuses (it needs two per sample). The
    same test as scipy's otherwise: every distinct labelling when there are at most `resamples` (exact),
    else `resamples` random labellings with seed PERM_SEED and p = (hits + 1) / (resamples + 1)."""
    import itertools

    import numpy as np
    from scipy import stats

    values = np.concatenate(groups)
    sizes = [len(g) for g in groups]
    bounds = np.cumsum(sizes)[:-1]

    def f_of(rows):  # rows: [labellings, n], each row's values in group order
        return stats.f_oneway(*np.split(rows, bounds, axis=-1), axis=-1).statistic

    observed = f_of(values[None, :])[0]
    if count <= resamples:
        def labellings(remaining, sizes_left):
            if not sizes_left:
                yield ()
                return
            for chosen in itertools.combinations(remaining, sizes_left[0]):
                rest = [i for i in remaining if i not in chosen]
                for tail in labellings(rest, sizes_left[1:]):
                    yield chosen + tail
        orders = np.array(list(labellings(list(range(len(values))), sizes)))
        null = f_of(values[orders])
        return float(np.mean(null >= observed * (1 - 1e-12)))
    rng = np.random.default_rng(PERM_SEED)
    orders = np.argsort(rng.random((resamples, len(values))), axis=1)
    null = f_of(values[orders])
    return float((np.sum(null >= observed * (1 - 1e-12)) + 1) / (resamples + 1))


def _anova(cells) -> dict:
    import numpy as np
    import pingouin as pg
    from scipy import stats

    common = {"n": len(cells), "mean_improvement": float(cells["improvement"].mean()) if len(cells) else math.nan,
              "mean_improvement_heldout": _mean(cells["improvement_heldout"]), **_seed_values(cells)}
    sizes = cells.groupby("method")["improvement"].size()
    if len(sizes) < 2:
        return {**common, "reason": f"only {len(sizes)} KD method(s) ({', '.join(sizes.index)}); an ANOVA needs two or more"}
    if len(cells) - len(sizes) < 1:
        return {**common, "reason": f"one cell per method ({len(cells)} cells, {len(sizes)} methods); no within-method variance"}
    within = cells.groupby("method")["improvement"].var(ddof=0).fillna(0)
    if (within * sizes).sum() == 0:
        return {**common, "reason": "no variance within methods; the F statistic is undefined"}
    res = pg.anova(data=cells, dv="improvement", between="method").iloc[0]
    groups = [g.to_numpy(dtype=float) for _, g in cells.groupby("method")["improvement"]]
    count = math.factorial(len(cells)) // math.prod(math.factorial(len(g)) for g in groups)
    resamples, how = _exact_or_mc(count)
    if min(len(g) for g in groups) >= 2:
        p_perm = stats.permutation_test(groups, lambda *g, axis: stats.f_oneway(*g, axis=axis).statistic,
                                        permutation_type="independent", alternative="greater", vectorized=True,
                                        n_resamples=resamples, rng=PERM_SEED).pvalue
    else:
        p_perm = _f_permutation_p(groups, count, resamples)
    return {**common, "statistic_name": "F", "statistic": float(res["F"]), "dof": float(res["ddof2"]),
            "p_value": float(res["p_unc"]), "effect_size_name": "np2", "effect_size": float(res["np2"]),
            "p_perm": float(np.nan_to_num(p_perm, nan=1.0)), "perm_test": f"permuted method labels, {how}",
            "p_min": smallest_p("anova", len(cells), [len(g) for g in groups]), "min_n": min_n("anova", len(groups))}


def _spearman(cells, column: str, what: str) -> dict:
    import pingouin as pg
    from scipy import stats

    known = cells[cells[column].notna()]
    common = {"n": len(known), "mean_improvement": float(known["improvement"].mean()) if len(known) else math.nan,
              "mean_improvement_heldout": _mean(known["improvement_heldout"]), **_seed_values(known)}
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
    x, y = known["improvement"].to_numpy(dtype=float), known[column].to_numpy(dtype=float)
    res = pg.corr(x, y, method="spearman").iloc[0]
    ci_low, ci_high = res["CI95"]
    rho, n = float(res["r"]), len(known)
    resamples, how = _exact_or_mc(math.factorial(n))
    # Spearman's rho is Pearson's r of the ranks; permuting the ranks permutes the data
    perm = stats.pearsonr(stats.rankdata(x), stats.rankdata(y),
                          method=stats.PermutationMethod(n_resamples=resamples, rng=PERM_SEED))
    if n > 3 and abs(rho) < 1:
        effect_low, effect_high = (float(v) for v in pg.compute_esci(stat=rho, nx=n, eftype="spearman", decimals=12))
    else:  # Fisher's z has no finite standard error at n = 3 or |rho| = 1
        effect_low = effect_high = math.nan
    return {**common, "statistic_name": "rho", "statistic": rho, "p_value": float(res["p_val"]),
            "effect_size_name": "rho", "effect_size": rho, "ci_low": float(ci_low), "ci_high": float(ci_high),
            "effect_ci_low": effect_low, "effect_ci_high": effect_high, "reason": note,
            "p_perm": float(perm.pvalue), "perm_test": f"permuted pairings, {how}",
            "p_min": smallest_p("spearman", n), "min_n": min_n("spearman")}


def _mean(values) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan


def _test(hypothesis, cells, runs) -> dict:
    with warnings.catch_warnings():
        # pingouin's and statsmodels' noise (pandas deprecations, "sample too small to estimate power",
        # a random-effect variance on the boundary)
        warnings.simplefilter("ignore")
        if hypothesis == "H1_ttest":
            return _ttest(cells)
        if hypothesis == "H1_seeds":
            return _seeds_test(cells, runs)
        if hypothesis == "H1_anova":
            return _anova(cells)
        column, what, _ = PREDICTORS[hypothesis]
        return _spearman(cells, column, what)


def _holm(results, verdict: str = "permutation"):
    import numpy as np
    import pingouin as pg

    for column, corrected_column in (("p_value", "p_holm"), ("p_perm", "p_perm_holm")):
        results[corrected_column] = np.nan
        for _, group in results.groupby(["family", "hypothesis", "method"], sort=False):
            finite = group[np.isfinite(group[column].to_numpy(dtype=float))]
            if len(finite):
                _, corrected = pg.multicomp(finite[column].to_numpy(dtype=float), method="holm")
                results.loc[finite.index, corrected_column] = corrected
    p = results[VERDICT_P[verdict]].to_numpy(dtype=float)
    results["significant"] = [bool(v < ALPHA) if np.isfinite(v) else None for v in p]
    results["verdict_p"] = [VERDICT_P[verdict] if np.isfinite(v) else "" for v in p]
    return results


def missing_column_reasons(table, source: str = "the table") -> dict[str, str]:
    """hypothesis -> why it cannot run because the table lacks a column ('' when it can run)."""
    core = [c for c in CORE_COLUMNS if c not in table.columns]
    reasons = {}
    for hypothesis in HYPOTHESES:
        needed = core + ([PREDICTORS[hypothesis][2]] if hypothesis in PREDICTORS and PREDICTORS[hypothesis][2] not in table.columns else [])
        reasons[hypothesis] = f"{source} has no column {', '.join(map(repr, needed))}" if needed else ""
    return reasons


def run_hypotheses(table, source: str = "the table", verdict: str = "permutation"):
    """All hypothesis tests on a results table -> (results DataFrame with RESULT_COLUMNS, cells DataFrame).

    verdict: which p-value decides `significant`: "permutation" (p_perm_holm) or "asymptotic" (p_holm,
    the paper's)."""
    import pandas as pd

    if verdict not in VERDICT_P:
        raise KdgridError(f"verdict = {verdict!r}; expected one of {', '.join(VERDICT_P)}")

    column_reasons = missing_column_reasons(table, source)
    families = list(dict.fromkeys(table["family"])) if "family" in table.columns else [""]
    if any(column_reasons[h] for h in HYPOTHESES if h not in PREDICTORS):
        rows = [_row(f, h, "all", "", column_reasons[h]) for f in families for h in HYPOTHESES]
        return _holm(pd.DataFrame(rows, columns=RESULT_COLUMNS), verdict), None

    cells = kd_cells(table)
    runs = seed_improvements(table, cells)
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
                        rows.append(_row(family, hypothesis, method, task, **_test(hypothesis, chosen, runs)))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    results["n"] = results["n"].astype(int)
    return _holm(results, verdict), cells


def not_computable(results) -> list[str]:
    """One line per distinct reason a test has no statistic, with how many tests it hit."""
    empty = results[results["statistic"].isna()]
    counts = empty.groupby(["family", "hypothesis", "reason"], sort=False).size()
    return [f"{family or '-'} {hypothesis}: {reason} ({n} test(s))" for (family, hypothesis, reason), n in counts.items()]
