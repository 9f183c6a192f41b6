"""The cost ledger: the estimate before a run (`kdgrid grid cost`, against a hand computation) and the
measured tables after it (kdgrid.analysis.cost, from benchmark files and training logs written here)."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from kdgrid.analysis.cost import (
    COST_COLUMNS,
    checkpoint_table,
    cost_markdown,
    job_table,
    kd_extra_cost,
    read_benchmark,
)
from kdgrid.cli import main
from kdgrid.cost_plan import job_estimates, per_rule, report, summary_line, without_cache
from kdgrid.errors import KdgridError
from kdgrid.grid import expand_grid, load_config
from workflow_support import ROOT

CI = load_config(ROOT / "config/tiny-ci.yaml")


def estimate(grid, rule, job):
    return next(j for j in job_estimates(grid) if (j.rule, j.job) == (rule, job))


def test_a_cached_lora_cell_by_hand(paper):
    grid = paper
    job = estimate(grid, "distill", "math/Qwen2.5-7B__Qwen2.5-0.5B/fkl/t1/sft-teacher/seed42")
    # 9919 examples x 4 epochs x 256 tokens; LoRA: 4 x 0.5e9 FLOPs per token; the cache replaces the teacher
    tokens = 9919 * 4 * 256
    assert job.work.flops == pytest.approx(4 * 0.5e9 * tokens)
    assert job.gpus == 1
    assert job.device_s == pytest.approx(4 * 0.5e9 * tokens / 100e12)  # 203.1 s at 100 TFLOP/s
    assert job.disk_bytes == pytest.approx(0.5e9 * 2)  # the merged bf16 model


def test_an_on_policy_gkd_cell_with_its_online_teacher_by_hand(paper):
    grid = paper
    cell = "math/Qwen2.5-7B__Qwen2.5-0.5B/gkd/t1/sft-teacher/seed42"
    job = estimate(grid, "distill", cell)
    tokens = 9919 * 4 * 256
    compute = (4 * 0.5 + 2 * 7) * 1e9 * tokens / 100e12  # student fwd+bwd (LoRA) + 7B teacher forward
    decode = (9919 * 4 / 4) * (128 * 0.5) * (0.015 + 0.0015 * 0.5)  # micro-batches x lmbda x max new tokens
    assert job.device_s == pytest.approx(compute + decode)
    # the job's SLURM time limit comes from the same estimate: margin 2, plus 10 minutes of start-up
    assert grid.resources_distill(grid.cells_by_id[cell]).runtime == math.ceil(2 * (compute + decode) / 60) + 10


def test_a_tiny_cpu_cell_by_hand(tiny):
    grid = tiny
    job = estimate(grid, "distill", "math/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1")
    flops = 6 * 49_440 * (600 * 6 * 128)  # full fine-tuning of tiny-xs over 6 epochs of 600 examples x 128
    assert job.gpus == 0 and job.work.flops == pytest.approx(flops)
    assert job.device_s == pytest.approx(flops / 80e9)  # core-seconds at resources.cpu_gflops 80
    assert job.transient_bytes == pytest.approx(49_440 * 12)  # fp32 weights + Adam states in checkpoints/


def test_the_rules_add_up_and_the_cache_saves_teacher_time(paper):
    grid = paper
    jobs = job_estimates(grid)
    rules = {r.rule: r for r in per_rule(jobs)}
    assert {rule: r.jobs for rule, r in rules.items()} == {"sft": 16, "distill": 119, "teacher_outputs": 12, "evaluate": 151}
    assert sum(r.device_s for r in rules.values()) == pytest.approx(sum(j.device_s for j in jobs))
    plain = job_estimates(without_cache(grid))
    assert not [j for j in plain if j.rule == "teacher_outputs"]
    assert sum(j.device_s for j in plain) > sum(j.device_s for j in jobs)


def test_grid_cost_prints_gpu_hours_for_the_paper_grid_and_core_seconds_for_the_tiny_one(capsys, tmp_path, paper, tiny):
    assert main(["grid", "cost", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    for text in ("GPU-hours", "100 sustained TFLOP/s", "4 N D (LoRA)", "distill", "evaluate", "total",
                 "teacher-output cache:", "saves", "disk (estimated):", "per KD cell"):
        assert text in out, text
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    hours = sum(j.device_s for j in job_estimates(paper)) / 3600
    assert f"{hours:,.2f}" in total
    assert main(["grid", "cost", "--config", str(ROOT / "config/tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert "CPU core-seconds" in out and "GPU-hours" not in out and "teacher_responses" in out
    # the tiny grid fine-tunes fully: its checkpoints are estimated; the paper grid's LoRA ones are said not to be
    assert "per full fine-tuning job" in out and "LoRA jobs" not in out
    assert main(["grid", "cost", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    lora = sum(j.rule in ("sft", "distill") for j in job_estimates(paper))
    assert f"checkpoints/ of the {lora} LoRA jobs hold their adapter and its Adam states (not estimated)" in out
    assert "per full fine-tuning job" not in out
    assert "estimated cost of this grid" in summary_line(tiny)


def test_a_disabled_cache_says_what_enabling_it_would_cost(paper_config):
    config = paper_config
    config["teacher_cache"]["enabled"] = False
    text = report(expand_grid(config))
    assert "disabled in this config; enabling it would cost" in text


# ---------------------------------------------------------------------------------------------
# After the run: the ledger from benchmark files and training logs


def ci_grid(tmp_path):
    return expand_grid({**CI, "outdir": str(tmp_path / "results")})


def write_benchmark(grid, rule, job, seconds, rss=100.0):
    path = tmp_path_of(grid) / "benchmarks" / rule / f"{job}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t-\t-\t-\t-\t-\t-\t-\n")


def tmp_path_of(grid):
    from pathlib import Path

    return Path(grid.outdir)


@pytest.fixture
def measured(tmp_path):
    """The CI grid with every job's benchmark (10 s each; the math teacher's SFT 40 s, its cache 20 s)
    and every training job's log, as a finished run leaves them."""
    grid = ci_grid(tmp_path)
    special = {("sft", "math/sft/tiny-m/seed1"): 40.0, ("teacher_outputs", "math/teacher_outputs/tiny-m/sft/t1/topk16.pt"): 20.0}
    for j in job_estimates(grid):
        write_benchmark(grid, j.rule, j.job, special.get((j.rule, j.job), 10.0))
    for c in grid.comparisons:
        write_benchmark(grid, "compare", c.id, 10.0)
    for ckpt in [r.id for r in grid.sft_runs] + [c.id for c in grid.cells]:
        folder = tmp_path_of(grid) / ckpt
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.safetensors").write_bytes(b"x" * 1000)
        (folder / "train_log.jsonl").write_text(
            json.dumps({"step": 1, "tokens": 300, "memory_mb": 50.0}) + "\n"
            + json.dumps({"event": "done", "tokens": 300, "peak_memory_mb": 50.0, "checkpoint_bytes": 4000}) + "\n")
    cache = tmp_path_of(grid) / "math/teacher_outputs/tiny-m/sft/t1/topk16.pt"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"c" * 600)
    return grid


def test_a_kd_cell_pays_its_own_jobs_and_its_share_of_the_teacher_and_the_cache(measured):
    cost = checkpoint_table(measured, job_table(measured)).set_index("cell")
    fkl = cost.loc["math/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1"]
    assert fkl["jobs"] == "distill+evaluate+compare"
    assert fkl["own_wall_s"] == 30.0  # distill, evaluate, compare
    # fkl and rkl share the teacher's SFT (40 s) and evaluation (10 s) and the cache (20 s)
    assert fkl["shared_wall_s"] == pytest.approx((40 + 10 + 20) / 2)
    assert fkl["total_core_s"] == pytest.approx(30 + 35)  # 1 core per job
    assert fkl["total_gpu_s"] == 0
    assert fkl["tokens_trained"] == 300 and fkl["checkpoint_bytes"] == 4000
    assert fkl["disk_bytes"] == 1000 + len(Path(measured.out(fkl.name, "train_log.jsonl")).read_text())
    assert fkl["shared_disk_bytes"] == 300  # half of the 600-byte cache
    commonsense = cost.loc["commonsense/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1"]
    assert commonsense["shared_wall_s"] == pytest.approx(10 + 10 + 10)  # alone with its teacher and cache
    sft = cost.loc["math/sft/tiny-xs/seed1"]
    assert sft["jobs"] == "sft+evaluate+compare" and sft["shared_wall_s"] == 0 and sft["own_wall_s"] == 30.0
    base = cost.loc["math/base/tiny-m"]
    assert base["jobs"] == "evaluate" and math.isnan(base["tokens_trained"])
    assert (cost["missing_benchmarks"].fillna("") == "").all()
    assert fkl["est_own_s"] == pytest.approx(sum(j.device_s for j in job_estimates(measured)
                                                 if j.job == fkl.name and j.rule in ("distill", "evaluate")))


def test_a_missing_benchmark_is_named_not_counted(measured):
    (tmp_path_of(measured) / "benchmarks/teacher_outputs/math/teacher_outputs/tiny-m/sft/t1/topk16.pt.tsv").unlink()
    cost = checkpoint_table(measured, job_table(measured)).set_index("cell")
    fkl = cost.loc["math/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1"]
    assert "teacher_outputs/math/teacher_outputs/tiny-m/sft/t1/topk16.pt" in fkl["missing_benchmarks"]
    assert fkl["shared_wall_s"] == pytest.approx((40 + 10) / 2)


def test_a_benchmark_file_that_is_not_one_is_an_error(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("wall\n3\n")
    with pytest.raises(KdgridError, match="x.tsv: not a Snakemake benchmark"):
        read_benchmark(path)
    path.write_text("s\tmax_rss\n")
    with pytest.raises(KdgridError, match="without a row"):
        read_benchmark(path)


def results_for(grid, accuracy):
    """A results table with only the Average rows kd_extra_cost reads: accuracy per checkpoint."""
    return pd.DataFrame([{"cell": e.ckpt, "task": "Average", "accuracy": accuracy(e)} for e in grid.evaluations])


def test_the_summary_prices_each_point_of_improvement_and_suggests_a_calibration(measured):
    jobs = job_table(measured)
    cost = checkpoint_table(measured, jobs)
    table = results_for(measured, lambda e: {"kd": 60.0, "sft": 50.0}.get(e.role, 10.0)
                        if dict(e.meta).get("method") != "rkl" else 40.0)
    extra, unit = kd_extra_cost(table, cost)
    assert unit == "core-seconds"
    fkl = extra[(extra["family"] == "math") & (extra["method"] == "fkl")].iloc[0]
    assert fkl["improvement"] == 10.0
    assert fkl["extra_cost"] == pytest.approx(65 - 30)  # the cell's total minus its SFT model's own 30 s
    text = cost_markdown(table, cost, jobs)
    assert "| math | fkl | 1 | +10.00 | 35.000 | 3.500 |" in text
    assert "| math | rkl | 1 | -10.00 | 35.000 | – (no gain) |" in text
    ratio = jobs.loc[jobs["est_s"] > 0, "core_s"].sum() / jobs["est_s"].sum()
    assert f"| all | {(jobs['est_s'] > 0).sum()} |" in text and f"| {ratio:,.3f} |" in text
    assert "Calibration: " in text


def test_the_calibration_separates_start_up_from_the_compute_rate():
    from kdgrid.analysis.cost import fit_startup_and_rate

    est = [10.0, 20.0, 40.0, 80.0]
    jobs = pd.DataFrame({"rule": "distill", "job": list("abcd"), "accelerator": "gpu", "rate": 100.0, "gpus": 1,
                         "est_s": est, "gpu_s": [5 + 2 * e for e in est], "core_s": 0.0})
    fit = fit_startup_and_rate(jobs)
    assert fit["startup_s"] == pytest.approx(5) and fit["slope"] == pytest.approx(2)
    assert fit["rate"] == pytest.approx(50)  # the jobs ran at half the configured 100 TFLOP/s
    text = cost_markdown(pd.DataFrame(columns=["cell", "task", "accuracy"]),
                         pd.DataFrame(columns=COST_COLUMNS), jobs)
    assert "5.0 GPU-seconds of start-up per job + 2 x the estimate; `resources.gpu_tflops: 50` (now 100)" in text
    # jobs that all take the same time, whatever their estimate, are start-up: no rate can be told
    flat = jobs.assign(gpu_s=30.0)
    assert fit_startup_and_rate(flat)["rate"] is None
    text = cost_markdown(pd.DataFrame(columns=["cell", "task", "accuracy"]),
                         pd.DataFrame(columns=COST_COLUMNS), flat)
    assert "Calibration: not determinable from this run: start-up dominates" in text and "stays 100" in text


def test_every_rule_that_runs_a_job_writes_a_benchmark():
    import re

    for path in sorted((ROOT / "workflow/rules").glob("*.smk")):
        blocks = re.split(r"^rule ", path.read_text(), flags=re.MULTILINE)[1:]
        for block in blocks:
            name = block.split(":", 1)[0]
            if name == "fingerprint_folder":  # a stamp's bookkeeping, no cost (fingerprint.smk says why)
                continue
            assert "\n    benchmark:\n" in block, f"{path.name}: rule {name} has no benchmark directive"
