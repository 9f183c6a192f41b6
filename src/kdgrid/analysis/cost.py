"""The cost ledger after a run: what each job and each checkpoint cost, measured and estimated.

Sources: Snakemake's benchmark file of every job (`<outdir>/benchmarks/<rule>/<job>.tsv`: wall
seconds `s`, `max_rss` in MB; not its `cpu_time`, which Snakemake samples every 30 s after a job's
first 15 s and so undercounts long jobs), each training job's `train_log.jsonl` (tokens trained,
peak memory, checkpoint and model bytes, from its "done" line), the files on disk, and the estimate
of `kdgrid.cost_plan` for the same grid (the one estimator the job resources also use).

Two tables, beside (never inside) the results table, so that results.csv stays identical from run to
run and across executors:
- jobs (`cost_jobs.csv`), one row per computing job: rule, job, GPUs, measured wall seconds,
  GPU-seconds (wall x GPUs of the job; 0 on CPU), core-seconds (wall x cores of the job: what a
  cluster charges, waiting included), peak RSS,
  and the estimated FLOPs and GPU- or core-seconds;
- checkpoints (`cost.csv`), one row per evaluated checkpoint: the `own_*` cost of the jobs that
  produced it (its training, evaluation and comparisons), the `shared_*` share of upstream jobs other
  checkpoints need too (a KD cell's teacher SFT and teacher evaluation split evenly over the cells
  distilled from that teacher checkpoint, its teacher-output cache or teacher responses over the cells
  that read them; those jobs are also their own checkpoint's `own_*` cost, so the grid's total is the
  sum of `own_*` plus the cache and response jobs), `total_*` = own + shared, tokens trained, peak
  memory, estimated FLOPs and disk.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..errors import KdgridError
from ..io import atomic_path

JOB_COLUMNS = ["rule", "job", "accelerator", "rate", "gpus", "wall_s", "gpu_s", "core_s", "max_rss_mb",
               "est_flops", "est_s", "est_wall_s", "disk_bytes"]
COST_COLUMNS = [
    "cell", "family", "role", "model", "teacher", "method", "temperature", "noise_sigma", "teacher_kind", "seed",
    "jobs", "missing_benchmarks",
    "own_wall_s", "own_gpu_s", "own_core_s", "shared_wall_s", "shared_gpu_s", "shared_core_s",
    "total_wall_s", "total_gpu_s", "total_core_s",
    "tokens_trained", "train_peak_memory_mb", "peak_rss_mb",
    "est_flops", "est_own_s", "est_shared_s", "est_total_s",
    "disk_bytes", "shared_disk_bytes", "checkpoint_bytes",
]
SECONDS = ("wall_s", "gpu_s", "core_s")


def grid_from_json(text: str):
    """The grid of a config given as JSON (the aggregate rule passes the workflow's config)."""
    from ..grid import expand_grid

    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise KdgridError(f"--grid-config: not JSON ({e})") from None
    return expand_grid(config)


def read_benchmark(path: Path) -> dict | None:
    """The last row of a Snakemake benchmark file (a job re-run overwrites it), or None if absent."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise KdgridError(f"{path}: a benchmark file without a row")
    row = rows[-1]

    def number(key):
        value = row.get(key)
        try:
            x = float(value)
        except (TypeError, ValueError):
            return math.nan  # Snakemake writes "-" or "NA" for what it could not measure
        return x

    if "s" not in row:
        raise KdgridError(f"{path}: not a Snakemake benchmark file (no column 's')")
    return {"wall_s": number("s"), "max_rss_mb": number("max_rss")}


def read_done(train_log: Path) -> dict:
    """The "done" line of a training log (tokens, peak memory, bytes), {} if the log has none."""
    if not train_log.is_file():
        return {}
    done = {}
    with open(train_log, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise KdgridError(f"{train_log}: line {number} is not JSON") from None
            if row.get("event") == "done":
                done = row
    return done


def _du(path: Path) -> int:
    from ..usage import folder_bytes

    return folder_bytes(path)


def job_table(grid, benchmarks_dir=None):
    """One row per computing job of the grid: measured (NaN where its benchmark is missing) and estimated."""
    import pandas as pd

    from ..cost_plan import job_estimates
    from ..resources_plan import plan_light

    res = grid.resources
    rate = res["gpu_tflops"] if res["accelerator"] == "gpu" else res["cpu_gflops"]
    benchmarks_dir = Path(benchmarks_dir or grid.out("benchmarks"))
    rows = []
    for est in job_estimates(grid):
        measured = read_benchmark(benchmarks_dir / est.rule / f"{est.job}.tsv")
        wall = measured["wall_s"] if measured else math.nan
        rows.append({
            "rule": est.rule, "job": est.job, "accelerator": res["accelerator"], "rate": rate, "gpus": est.gpus,
            "wall_s": wall, "gpu_s": wall * est.gpus, "core_s": wall * est.threads,
            "max_rss_mb": measured["max_rss_mb"] if measured else math.nan,
            "est_flops": est.work.flops + est.work.generation_flops, "est_s": est.device_s, "est_wall_s": est.wall_s,
            "disk_bytes": _du(Path(grid.out(est.job))) if est.rule in ("teacher_outputs", "teacher_responses") else math.nan,
        })
    light = plan_light(res)
    for comparison in grid.comparisons:
        measured = read_benchmark(benchmarks_dir / "compare" / f"{comparison.id}.tsv")
        wall = measured["wall_s"] if measured else math.nan
        rows.append({"rule": "compare", "job": comparison.id, "accelerator": res["accelerator"], "rate": rate, "gpus": 0,
                     "wall_s": wall, "gpu_s": 0.0, "core_s": wall * light.threads,
                     "max_rss_mb": measured["max_rss_mb"] if measured else math.nan,
                     "est_flops": 0.0, "est_s": 0.0, "est_wall_s": 0.0, "disk_bytes": math.nan})
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def _sum(values) -> float:
    """The sum of what was measured: a job without a benchmark adds nothing (missing_benchmarks names it)."""
    return float(sum(v for v in values if not math.isnan(v)))


def checkpoint_table(grid, jobs):
    """One row per evaluated checkpoint (base, SFT, KD) from the job table."""
    import pandas as pd

    by_key = {(r.rule, r.job): r for r in jobs.itertuples(index=False)}
    own_of: dict[str, list[tuple[str, str]]] = {e.ckpt: [("evaluate", e.ckpt)] for e in grid.evaluations}
    for run in grid.sft_runs:
        own_of[run.id].insert(0, ("sft", run.id))
    for cell in grid.cells:
        own_of[cell.id].insert(0, ("distill", cell.id))
    for c in grid.comparisons:
        own_of[c.student_ckpt].append(("compare", c.id))

    shared_of: dict[str, list[tuple[tuple[str, str], int]]] = {}
    readers: dict[tuple[str, str], int] = {}
    upstream: dict[str, list[tuple[str, str]]] = {}
    for cell in grid.cells:
        teacher_ckpt = grid.teacher_ckpt(cell.family, cell.teacher, cell.teacher_kind)
        keys = [k for k in own_of[teacher_ckpt] if k[0] != "compare"]  # the teacher's SFT and evaluation
        cache = grid.teacher_outputs_of(cell)
        if cache is not None:
            keys.append(("teacher_outputs", cache.path))
        responses = grid.teacher_responses_of(cell)
        if responses is not None:
            keys.append(("teacher_responses", responses.path))
        upstream[cell.id] = keys
        for key in keys:
            readers[key] = readers.get(key, 0) + 1
    for cell_id, keys in upstream.items():
        shared_of[cell_id] = [(key, readers[key]) for key in keys]

    rows = []
    for e in grid.evaluations:
        meta = dict(e.meta)
        own = [by_key[k] for k in own_of[e.ckpt] if k in by_key]
        shared = [(by_key[k], n) for k, n in shared_of.get(e.ckpt, []) if k in by_key]
        missing = [f"{r.rule}/{r.job}" for r in own + [s for s, _ in shared] if math.isnan(r.wall_s)]
        row = {key: meta.get(key) for key in ("family", "role", "model", "teacher", "method", "temperature",
                                               "noise_sigma", "teacher_kind", "seed")}
        row.update(cell=e.ckpt, jobs="+".join(dict.fromkeys(r.rule for r in own)), missing_benchmarks=" ".join(missing))
        for column in SECONDS:
            row[f"own_{column}"] = _sum(getattr(r, column) for r in own)
            row[f"shared_{column}"] = _sum(getattr(r, column) / n for r, n in shared)
            row[f"total_{column}"] = row[f"own_{column}"] + row[f"shared_{column}"]
        row["est_flops"] = _sum(r.est_flops for r in own)
        row["est_own_s"] = _sum(r.est_s for r in own)
        row["est_shared_s"] = _sum(r.est_s / n for r, n in shared)
        row["est_total_s"] = row["est_own_s"] + row["est_shared_s"]
        row["peak_rss_mb"] = max((r.max_rss_mb for r in own if not math.isnan(r.max_rss_mb)), default=math.nan)
        done = read_done(Path(grid.out(e.ckpt, "train_log.jsonl"))) if e.role != "base" else {}
        row["tokens_trained"] = done.get("tokens", math.nan) if done else math.nan
        row["train_peak_memory_mb"] = done.get("peak_memory_mb", math.nan) if done else math.nan
        row["checkpoint_bytes"] = done.get("checkpoint_bytes", math.nan) if done else math.nan
        row["disk_bytes"] = _du(Path(grid.out(e.ckpt)))
        row["shared_disk_bytes"] = _sum(r.disk_bytes / n for r, n in shared
                                        if r.rule in ("teacher_outputs", "teacher_responses") and not math.isnan(r.disk_bytes))
        rows.append(row)
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def write_cost_tables(grid, out_csv, out_jobs_csv, benchmarks_dir=None):
    """Build both tables and write them atomically; returns (checkpoints, jobs)."""
    jobs = job_table(grid, benchmarks_dir)
    checkpoints = checkpoint_table(grid, jobs)
    for table, path in ((checkpoints, out_csv), (jobs, out_jobs_csv)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    return checkpoints, jobs


def read_cost(path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise KdgridError(f"{path}: file not found (written by kdgrid aggregate --out-cost)")
    return pd.read_csv(path, keep_default_na=True)


# ---------------------------------------------------------------------------------------------
# What the analysis reads from the ledger


def device_column(cost) -> tuple[str, str, float]:
    """(measured column, unit, seconds per unit) of a ledger: GPU-hours on GPUs, core-seconds on CPUs."""
    gpus = bool((cost["total_gpu_s"].fillna(0) > 0).any())
    return ("gpu_s", "GPU-hours", 3600.0) if gpus else ("core_s", "core-seconds", 1.0)


def kd_extra_cost(table, cost):
    """Per main-grid KD checkpoint (SFT teacher, no noise): its Average improvement over the student's
    SFT model of the same seed (accuracy points) and its extra measured cost over that SFT model
    (total = own + shared), in the ledger's unit."""
    import pandas as pd

    from .table import AVERAGE

    column, unit, per = device_column(cost)
    avg = table[table["task"] == AVERAGE]
    acc = avg.set_index("cell")["accuracy"]
    total = cost.set_index("cell")[f"total_{column}"] / per
    sft = cost[cost["role"] == "sft"]
    sft_cell = {(r.family, r.model, int(r.seed)): r.cell for r in sft.itertuples() if not pd.isna(r.seed)}
    rows = []
    kd = cost[(cost["role"] == "kd") & (cost["teacher_kind"].fillna("sft") == "sft")
              & (pd.to_numeric(cost["noise_sigma"], errors="coerce").fillna(0) == 0)]
    for r in kd.itertuples():
        base = sft_cell.get((r.family, r.model, int(r.seed)))
        if base is None or r.cell not in acc.index or base not in acc.index:
            continue
        rows.append({"family": r.family, "teacher": r.teacher, "student": r.model, "method": r.method,
                     "temperature": float(r.temperature), "seed": int(r.seed),
                     "improvement": float(acc[r.cell] - acc[base]),
                     "extra_cost": float(total[r.cell] - total[base]), "kd_cost": float(total[r.cell]),
                     "sft_cost": float(total[base])})
    return pd.DataFrame(rows, columns=["family", "teacher", "student", "method", "temperature", "seed",
                                       "improvement", "extra_cost", "kd_cost", "sft_cost"]), unit


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _seconds(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def _measured_column(jobs) -> str:
    return "gpu_s" if (jobs["accelerator"] == "gpu").all() else "core_s"


def calibration(jobs) -> list[dict]:
    """Measured against estimated, per rule and over all rules (jobs with an estimate and a benchmark)."""
    column = _measured_column(jobs)
    known = jobs[(jobs["est_s"] > 0) & jobs[column].notna()]
    rows = []
    for rule, part in list(known.groupby("rule", sort=False)) + [("all", known)]:
        est, measured = part["est_s"].sum(), part[column].sum()
        rows.append({"rule": rule, "jobs": len(part), "est_s": est, "measured_s": measured,
                     "ratio": measured / est if est else math.nan})
    return rows


MIN_COMPUTE_SHARE = 0.1  # below this share of the measured time, start-up hides the compute rate


def fit_startup_and_rate(jobs) -> dict | None:
    """Least squares over jobs: measured = startup + slope x estimated (both in the ledger's seconds).
    The rate that would have matched is rate / slope. None when the run cannot tell: fewer than three
    jobs, a slope <= 0, or estimated compute under MIN_COMPUTE_SHARE of the measured time."""
    import numpy as np

    column = _measured_column(jobs)
    known = jobs[(jobs["est_s"] > 0) & jobs[column].notna()]
    if len(known) < 3 or known["est_s"].nunique() < 2:
        return None
    est, measured = known["est_s"].to_numpy(float), known[column].to_numpy(float)
    slope, startup = np.polyfit(est, measured, 1)
    share = float(slope * est.sum() / measured.sum()) if slope > 0 else 0.0
    if slope <= 0 or share < MIN_COMPUTE_SHARE:
        return {"jobs": len(known), "startup_s": float(np.median(measured)), "slope": float(slope), "share": share,
                "rate": None}
    return {"jobs": len(known), "startup_s": float(startup), "slope": float(slope), "share": share,
            "rate": float(known["rate"].iloc[0]) / float(slope)}


COST_HEADING = "## Cost"  # summary.md's last section: measured times, which differ from run to run


def without_cost_section(summary: str) -> str:
    """summary.md's statistics, the part two runs of the same grid must agree on (whatever their timing)."""
    return summary.split(f"\n{COST_HEADING}\n", 1)[0]


def cost_markdown(table, cost, jobs) -> str:
    """The summary.md section: cost per point of improvement, and the estimate against the measurement."""
    from .improvement import ordered_methods

    extra, unit = kd_extra_cost(table, cost)
    lines = ["", COST_HEADING, "",
             (f"Measured cost from Snakemake's benchmark files (tables/cost.csv, one row per checkpoint; "
              f"tables/cost_jobs.csv, one per job), in {unit}. A KD cell's cost is its own jobs (training, evaluation, "
              "comparison) plus its share of its teacher's SFT and evaluation and of the teacher-output cache or "
              "responses it reads; its extra cost is that minus its student's SFT model's cost (same seed). Cost per "
              "point = mean extra cost / mean improvement (Average accuracy points), only where KD gains."), ""]
    if extra.empty:
        lines.append("No KD cell with a measured cost and an SFT baseline in this run.")
    else:
        lines += [f"| family | method | cells | mean improvement | mean extra cost ({unit}) | cost per point |",
                  "|---|---|---|---|---|---|"]
        for family in dict.fromkeys(extra["family"]):
            part = extra[extra["family"] == family]
            for method in ordered_methods(part["method"]):
                rows = part[part["method"] == method]
                gain, price = rows["improvement"].mean(), rows["extra_cost"].mean()
                per_point = _fmt(price / gain, 3) if gain > 0 else "– (no gain)"
                lines.append(f"| {family} | {method} | {len(rows)} | {gain:+.2f} | {_fmt(price, 3)} | {per_point} |")
    lines += ["", ("Estimated (kdgrid grid cost, before the run) against measured, per rule "
              "(the estimate leaves out start-up: loading Python, torch and the models):"), "",
              "| rule | jobs | estimated | measured | measured / estimated |", "|---|---|---|---|---|"]
    rows = calibration(jobs)
    for r in rows:
        lines.append(f"| {r['rule']} | {r['jobs']} | {_seconds(r['est_s'])} s | {_seconds(r['measured_s'])} s | {_fmt(r['ratio'], 3)} |")
    fit = fit_startup_and_rate(jobs)
    if fit is not None:
        accelerator, rate = jobs["accelerator"].iloc[0], float(jobs["rate"].iloc[0])
        key = "gpu_tflops" if accelerator == "gpu" else "cpu_gflops"
        unit_s = "GPU-seconds" if accelerator == "gpu" else "core-seconds"
        if fit["rate"] is None:
            lines += ["", (f"Calibration: not determinable from this run: start-up dominates (the estimated compute "
                           f"explains {fit['share']:.0%} of the measured time over {fit['jobs']} jobs; median job "
                           f"{fit['startup_s']:.1f} {unit_s}). `resources.{key}` stays {rate:g}.")]
        else:
            lines += ["", (f"Calibration: over {fit['jobs']} jobs, measured = {fit['startup_s']:.1f} {unit_s} of start-up "
                           f"per job + {fit['slope']:.3g} x the estimate; `resources.{key}: {fit['rate']:.3g}` (now "
                           f"{rate:g}) would make the estimate's compute match this run (a suggestion; start-up is "
                           "not part of the estimate).")]
    return "\n".join(lines) + "\n"


def append_cost_section(summary_md, table, cost_csv, cost_jobs_csv) -> None:
    """Add the Cost section to a written summary.md (rewritten atomically)."""
    from ..errors import KdgridError
    from ..io import write_text

    if not cost_jobs_csv:
        raise KdgridError("--cost needs --cost-jobs (tables/cost_jobs.csv)")
    text = Path(summary_md).read_text(encoding="utf-8")
    write_text(summary_md, text + cost_markdown(table, read_cost(cost_csv), read_cost(cost_jobs_csv)))
