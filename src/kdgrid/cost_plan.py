"""The cost of a grid before it runs: per job, per rule and in total, GPU-hours (or CPU core-seconds)
and disk, from the same work estimate the job resources use (`kdgrid.resources_plan.Work`).

GPU-seconds of a job = its estimated wall time on the GPUs it is given x those GPUs (what a cluster
charges), without start-up and without `runtime_margin` (the SLURM time limits add both). On
`accelerator: cpu` a job's cost is core-seconds: its FLOPs over `resources.cpu_gflops` per core.

Disk per job: the merged model a training job publishes (its parameters x 4 bytes in fp32, else 2),
the transient checkpoint it keeps while running (full fine-tuning: weights and Adam states,
12 bytes per parameter; LoRA: the adapter and its Adam states, not estimated: a model's config gives its
size, not the layer shapes the adapter's size depends on), a teacher-output cache (tokens x the
bytes per token of its format) and teacher responses (a few bytes per generated token).
Nothing heavy is imported here: the Snakefile prints a line of it at parse time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .resources_plan import Work, inference_work, training_work

GPU_RULES = ("sft", "distill", "teacher_outputs", "teacher_responses", "evaluate")
CHECKPOINT_BYTES_PER_PARAM_FULL = 12  # fp32 weights + two fp32 Adam moments
RESPONSE_BYTES_PER_TOKEN = 4  # UTF-8 text of generated tokens, JSON-quoted


def cache_bytes_per_token(top_k: int) -> int:
    """kdgrid-teacher-outputs/1: int32 ids and float16 deltas per top-k entry, float32 max, lse, rest lse."""
    return 6 * top_k + 12


@dataclass(frozen=True)
class JobEstimate:
    rule: str
    job: str  # its benchmark name: <outdir>/benchmarks/<rule>/<job>.tsv
    gpus: int
    threads: int
    work: Work
    wall_s: float  # estimated wall time (no start-up, no margin)
    device_s: float  # GPU-seconds (gpu) or core-seconds (cpu)
    disk_bytes: float  # what the job publishes
    transient_bytes: float = 0.0  # what it holds while running (training checkpoints)


def _model_bytes(size_b: float, precision: str, accelerator: str) -> float:
    fp32 = precision == "fp32" or (precision == "auto" and accelerator == "cpu")
    return size_b * 1e9 * (4 if fp32 else 2)


def _estimate(grid, rule: str, job: str, plan, work: Work, disk: float = 0.0, transient: float = 0.0) -> JobEstimate:
    res = grid.resources
    if res["accelerator"] == "cpu":
        core_s = work.cpu_core_seconds(res)
        return JobEstimate(rule, job, 0, plan.threads, work, core_s / max(plan.threads, 1), core_s, disk, transient)
    wall = work.gpu_wall_seconds(res, plan.gpu)
    return JobEstimate(rule, job, plan.gpu, plan.threads, work, wall, wall * plan.gpu, disk, transient)


def _training(grid, rule: str, job: str, family: str, plan, size: tuple) -> JobEstimate:
    training, student_b = size[0], size[1]
    disk = _model_bytes(student_b, training["precision"], grid.resources["accelerator"])
    transient = student_b * 1e9 * CHECKPOINT_BYTES_PER_PARAM_FULL if training["finetune"] == "full" else 0.0
    return _estimate(grid, rule, job, plan, training_work(*size), disk, transient)


def job_estimates(grid) -> list[JobEstimate]:
    """Every job of the grid that computes (training, caches, responses, evaluations) with its estimate."""
    jobs = []
    for run in grid.sft_runs:
        jobs.append(_training(grid, "sft", run.id, run.family, grid.resources_sft(run), grid.sft_size(run)))
    for t in grid.teacher_outputs:
        size = grid.inference_size(t.teacher, t.family, "teacher_outputs")
        tokens = size[1] * size[2]
        jobs.append(_estimate(grid, "teacher_outputs", t.path, grid.resources_inference(t.teacher, t.family, "teacher_outputs"),
                              inference_work(*size), tokens * cache_bytes_per_token(t.top_k)))
    for t in grid.teacher_responses:
        size = grid.inference_size(t.teacher, t.family, "teacher_responses")
        jobs.append(_estimate(grid, "teacher_responses", t.path,
                              grid.resources_inference(t.teacher, t.family, "teacher_responses"),
                              inference_work(*size), size[1] * size[3] * RESPONSE_BYTES_PER_TOKEN))
    for cell in grid.cells:
        jobs.append(_training(grid, "distill", cell.id, cell.family, grid.resources_distill(cell),
                              grid.distill_size(cell, cache_passes=True)))
    for e in grid.evaluations:
        size = grid.inference_size(e.model, e.family, "evaluate")
        jobs.append(_estimate(grid, "evaluate", e.ckpt, grid.resources_inference(e.model, e.family, "evaluate"),
                              inference_work(*size)))
    return jobs


def without_cache(grid):
    """The same grid with the teacher-output cache disabled: every KD cell runs its teacher."""
    return dataclasses.replace(grid, teacher_cache={**grid.teacher_cache, "enabled": False})


@dataclass(frozen=True)
class RuleCost:
    rule: str
    jobs: int
    gpus: tuple[int, ...]  # distinct GPUs per job (cores per job on CPU)
    flops: float
    device_s: float
    disk_bytes: float


def per_rule(jobs: list[JobEstimate]) -> list[RuleCost]:
    rules = []
    for rule in GPU_RULES:
        mine = [j for j in jobs if j.rule == rule]
        if mine:
            rules.append(RuleCost(rule, len(mine), tuple(sorted({j.gpus or j.threads for j in mine})),
                                  sum(j.work.flops + j.work.generation_flops for j in mine),
                                  sum(j.device_s for j in mine), sum(j.disk_bytes for j in mine)))
    return rules


def cell_disk(grid, jobs: list[JobEstimate]) -> dict[str, float]:
    """Disk per KD cell: its merged model plus its share of the cache or responses it reads."""
    by_job = {(j.rule, j.job): j for j in jobs}
    readers: dict[tuple[str, str], int] = {}
    for cell in grid.cells:
        for key in _shared_inputs(grid, cell):
            readers[key] = readers.get(key, 0) + 1
    disk = {}
    for cell in grid.cells:
        share = sum(by_job[key].disk_bytes / readers[key] for key in _shared_inputs(grid, cell))
        disk[cell.id] = by_job[("distill", cell.id)].disk_bytes + share
    return disk


def _shared_inputs(grid, cell) -> list[tuple[str, str]]:
    cache = grid.teacher_outputs_of(cell)
    if cache is not None:
        return [("teacher_outputs", cache.path)]
    responses = grid.teacher_responses_of(cell)
    if responses is not None:
        return [("teacher_responses", responses.path)]
    return []


def _unit(grid) -> tuple[str, float]:
    """(name, seconds per unit) of the grid's cost: GPU-hours on GPUs, core-seconds on CPUs."""
    return ("GPU-hours", 3600.0) if grid.resources["accelerator"] == "gpu" else ("CPU core-seconds", 1.0)


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:,.1f} MB"


def summary_line(grid) -> str:
    """One line for the dry run: total cost, per rule, and disk."""
    jobs = job_estimates(grid)
    unit, per = _unit(grid)
    rules = per_rule(jobs)
    total = sum(r.device_s for r in rules) / per
    parts = ", ".join(f"{r.rule} {r.device_s / per:,.1f}" for r in rules)
    disk = sum(j.disk_bytes for j in jobs)
    cells = cell_disk(grid, jobs).values()
    per_cell = f", a KD cell up to {_gb(max(cells))}" if cells else ""
    return (f"kdgrid: estimated cost of this grid: {total:,.1f} {unit} ({parts}); disk {_gb(disk)} of models and caches"
            f"{per_cell} (details and assumptions: kdgrid grid cost)")


def report(grid) -> str:
    """`kdgrid grid cost`: the assumptions, cost per rule and in total, the teacher cache's saving, disk."""
    res = grid.resources
    unit, per = _unit(grid)
    jobs = job_estimates(grid)
    rules = per_rule(jobs)
    total = sum(r.device_s for r in rules)
    if res["accelerator"] == "gpu":
        lines = [(f"estimated cost on GPUs of {res['gpu_tflops']:g} sustained TFLOP/s (resources.gpu_tflops) and "
                 f"{res['gpu_mem_gb']:g} GB (resources.gpu_mem_gb), GPUs per job from kdgrid.resources_plan:")]
    else:
        lines = [(f"estimated cost on CPU cores of {res['cpu_gflops']:g} sustained GFLOP/s each (resources.cpu_gflops), "
                 f"{res['cpu_threads']} core(s) per job:")]
    lines += [
        "  FLOPs = 6 N D (full fine-tuning), 4 N D (LoRA), 2 N D (a frozen forward: online teacher, cache run,",
        "  reading prompts); N = models.<name>.size_b, D = tokens = examples x epochs x cutoff (padded: an upper",
        "  bound); examples from data.n_train / approx_train_examples, approx_test_examples.",
    ]
    if res["accelerator"] == "gpu":
        lines += ["  generation (GKD on-policy batches, seqkd responses, evaluation): 0.015 s + 0.0015 s per B parameters",
                  "  per decoding step of a batch. GPU-hours = estimated wall time x the job's GPUs, without start-up or",
                  "  resources.runtime_margin (the SLURM time limits add both)."]
    else:
        lines += ["  generation: 2 N FLOPs per generated token. Core-seconds = FLOPs / cpu_gflops; start-up",
                  "  (loading Python, torch and the models, a few seconds per job) is not counted."]
    per_job = "GPUs/job" if res["accelerator"] == "gpu" else "cores/job"
    lines += ["", f"  {'rule':<18} {'jobs':>5} {per_job:>9} {'PFLOP':>12} {unit:>18} {'share':>6}"]
    for r in rules:
        gpus = "-".join(str(g) for g in (r.gpus[0], r.gpus[-1])) if len(r.gpus) > 1 else str(r.gpus[0])
        share = r.device_s / total if total else 0.0
        lines.append(f"  {r.rule:<18} {r.jobs:>5} {gpus:>9} {r.flops / 1e15:>12,.3f} {r.device_s / per:>18,.2f} {share:>6.1%}")
    lines.append(f"  {'total':<18} {sum(r.jobs for r in rules):>5} {'':>9} {sum(r.flops for r in rules) / 1e15:>12,.3f} "
                 f"{total / per:>18,.2f}")

    plain = without_cache(grid)
    plain_total = sum(j.device_s for j in job_estimates(plain))
    cache_runs = sum(j.device_s for j in jobs if j.rule == "teacher_outputs")
    saved = plain_total - total
    lines += ["", "teacher-output cache:"]
    if grid.teacher_cache["enabled"]:
        lines.append(f"  with it {total / per:,.2f} {unit} ({len(grid.teacher_outputs)} cache runs: {cache_runs / per:,.2f}), "
                     f"without it {plain_total / per:,.2f}: saves {saved / per:,.2f} ({saved / plain_total:.1%})"
                     if plain_total else "  nothing to save")
    else:
        lines.append(f"  disabled in this config; enabling it would cost {sum(j.device_s for j in job_estimates(_with_cache(grid))) / per:,.2f} "
                     f"{unit} instead of {total / per:,.2f}")
    cost = grid.teacher_cost()
    lines.append(f"  teacher forward passes over training examples: {cost['with_cache']:,} with it, "
                 f"{cost['without_cache']:,} without (kdgrid grid teacher-cost)")

    training = [j for j in jobs if j.rule in ("sft", "distill")]
    models = sum(j.disk_bytes for j in training)
    caches = sum(j.disk_bytes for j in jobs if j.rule == "teacher_outputs")
    responses = sum(j.disk_bytes for j in jobs if j.rule == "teacher_responses")
    full = [j.transient_bytes for j in training if j.transient_bytes]  # LoRA jobs' checkpoints are not estimated
    lora = len(training) - len(full)
    per_cell = sorted(cell_disk(grid, jobs).values())
    lines += ["", "disk (estimated):",
              (f"  merged models {_gb(models)} ({len(training)} SFT and KD models), "
              f"teacher-output caches {_gb(caches)}, teacher responses {_gb(responses)}; total {_gb(models + caches + responses)}")]
    if per_cell:
        lines.append(f"  per KD cell (its model + its share of the cache or responses it reads): median "
                     f"{_gb(per_cell[len(per_cell) // 2])}, largest {_gb(per_cell[-1])}")
    if full:
        lines.append(f"  while training, checkpoints/ holds up to {_gb(max(full))} per full fine-tuning job (weights and "
                     "Adam states), removed once the model is published (disk.keep_checkpoints: false)")
    if lora:
        lines.append(f"  while training, checkpoints/ of the {lora} LoRA jobs hold their adapter and its Adam states (not "
                     "estimated), removed once the model is published (disk.keep_checkpoints: false)")
    return "\n".join(lines)


def _with_cache(grid):
    return dataclasses.replace(grid, teacher_cache={**grid.teacher_cache, "enabled": True})
