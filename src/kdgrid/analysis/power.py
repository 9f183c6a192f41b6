"""What a grid of this size can detect: the smallest mean improvement the one-sided t-test finds with
80% power at alpha 0.05, from the number of cells and the spread of their improvements, and what the
seeds say about the noise of one cell."""

from __future__ import annotations

import math

from .hypotheses import ALPHA, min_n
from .improvement import CELL_KEYS

POWER = 0.8


def detectable(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean (in the units of sd) a one-sided one-sample t-test on n values detects with `power`."""
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="larger")) * sd


def power_note(cells, runs) -> str:
    """One paragraph for the Average improvement of one family's cells (`cells`: task == Average rows;
    `runs`: their per-seed improvements)."""
    import numpy as np

    known = cells["improvement"].dropna()
    n = len(known)
    if n < 2:
        text = (f"Power: {n} cell(s) with an improvement; with fewer than two the spread between cells, and so the "
                "smallest detectable mean improvement, is unknown.")
    elif known.std(ddof=1) == 0:
        text = (f"Power: {n} cells, all with the same improvement; the smallest detectable mean improvement "
                "cannot be estimated.")
    else:
        sd = float(known.std(ddof=1))
        text = (f"Power: with {n} cells and a between-cell sd of {sd:.2f} points, the one-sided t-test at alpha "
                f"{ALPHA} detects a mean improvement of {detectable(n, sd):.2f} points with {POWER:.0%} power")
        need = min_n("signflip")
        text += (f"; the permutation test cannot give p < {ALPHA} with fewer than {need} cells." if n < need else ".")
    per_cell = runs.dropna(subset=["improvement"]).groupby(CELL_KEYS, sort=False)["improvement"]
    variances = per_cell.var(ddof=1).dropna()
    seeds = int(per_cell.size().max()) if len(runs) else 0
    if seeds < 2 or variances.empty:
        return text + " One seed per cell: the seed-to-seed variance is unknown (it is inside the between-cell sd)."
    seed_sd = math.sqrt(float(np.mean(variances)))
    if seed_sd == 0:
        return text + f" Seeds: {seeds} per cell, and every seed of a cell gives the same improvement."
    from scipy import stats

    half_width = float(stats.t.ppf(0.975, seeds - 1)) * seed_sd / math.sqrt(seeds)
    return text + (f" Seeds: the per-seed improvement of a cell varies with sd {seed_sd:.2f} points (pooled over "
                   f"{len(variances)} cells, {seeds} seeds), so a cell's mean over its seeds is known to about "
                   f"±{half_width:.2f} points (95%), and one cell's improvement is detected (paired t over its "
                   f"{seeds} seeds, {POWER:.0%} power) from {detectable(seeds, seed_sd):.2f} points.")
