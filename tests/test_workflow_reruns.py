"""Precise re-runs, end to end: after a complete run of config/tiny-ci.yaml through the real rules, a
change to the config schedules exactly the jobs it touches (read from Snakemake's dry-run job table)."""

import copy
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from kdgrid.grid import load_config
from workflow_support import JOINS, copy_workflow, planned_jobs, snakemake, write_config

COMMANDS = ("models", "data", "train", "teacher_outputs", "evaluate", "compare", "aggregate", "stats", "plots")
MISSING = [c for c in COMMANDS if importlib.util.find_spec(f"kdgrid.commands.{c}") is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"kdgrid commands not written yet: {', '.join(MISSING)}"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workflow copy after a complete run of the CI grid."""
    workdir = copy_workflow(tmp_path_factory.mktemp("reruns"))
    run = snakemake(workdir, "--configfile", "config/tiny-ci.yaml", "--cores", "2", timeout=1200)
    assert run.returncode == 0, run.stderr[-5000:]
    assert (workdir / "results/stats/hypotheses.csv").is_file()
    return workdir


def dry_run(workdir: Path, change=None) -> tuple[Counter, list]:
    config = copy.deepcopy(load_config(workdir / "config/tiny-ci.yaml"))
    if change:
        change(config)
    return planned_jobs(workdir, write_config(workdir / "changed.yaml", config))


def test_a_second_run_with_no_change_does_nothing(finished):
    counts, jobs = dry_run(finished)
    assert counts == {} and jobs == []


def test_adding_a_temperature_runs_only_the_new_cells_and_the_joins(finished):
    counts, jobs = dry_run(finished, lambda c: c["blocks"][0].update(temperatures=[1, 2]))
    # math fkl and rkl at t2: their teacher-output cache, training, evaluation and comparison
    assert counts == {"teacher_outputs": 1, "distill": 2, "evaluate": 2, "compare": 2, **JOINS}
    new = [o for rule, outputs in jobs if rule in ("teacher_outputs", "distill", "evaluate", "compare")
           for o in outputs]
    assert new and all("/t2/" in o for o in new)


def test_an_evaluation_setting_retrains_nothing(finished):
    counts, _ = dry_run(finished, lambda c: c["evaluation"].update(max_new_tokens=12))
    # every checkpoint is evaluated again (2 families x (2 base + 2 SFT) + 3 KD), every comparison redone
    assert counts == {"evaluate": 11, "compare": 5, **JOINS}


def test_one_familys_training_setting_touches_only_that_family(finished):
    def slower_commonsense(config):
        family = config["families"]["commonsense"]
        family["training"] = {**family["training"], "lr": 1e-3}

    counts, jobs = dry_run(finished, slower_commonsense)
    assert counts == {"sft": 2, "teacher_outputs": 1, "distill": 1, "evaluate": 3, "compare": 2, **JOINS}
    touched = [o for rule, outputs in jobs if rule not in JOINS for o in outputs]
    assert touched and all(o.startswith("results/commonsense/") for o in touched)


def test_the_report_shows_the_figures_with_their_captions(finished):
    from kdgrid.analysis.captions import CAPTIONS

    run = snakemake(finished, "--configfile", "config/tiny-ci.yaml", "--report", "report.html")
    assert run.returncode == 0, run.stderr[-5000:]
    html = (finished / "report.html").read_text(errors="replace")
    for name, caption in CAPTIONS.items():
        assert f"{name}.png" in html
        assert caption.split(".")[0][:60] in html, name


def test_keeping_checkpoints_reruns_nothing(finished):
    counts, jobs = dry_run(finished, lambda c: c.update(disk={"keep_checkpoints": True}))
    assert counts == {} and jobs == []


def test_the_cost_ledger_has_every_checkpoint_and_the_summary_compares_it(finished):
    import pandas as pd

    from kdgrid.analysis.cost import COST_COLUMNS
    from kdgrid.grid import expand_grid

    grid = expand_grid(load_config(finished / "config/tiny-ci.yaml"))
    results = finished / "results"
    cost = pd.read_csv(results / "tables/cost.csv")
    assert sorted(cost["cell"]) == sorted(e.ckpt for e in grid.evaluations)
    assert cost["missing_benchmarks"].isna().all(), cost["missing_benchmarks"].dropna().tolist()
    assert (cost["own_wall_s"] > 0).all() and (cost["own_core_s"] >= cost["own_wall_s"]).all()
    assert (cost["total_gpu_s"] == 0).all()  # a CPU grid
    trained = cost[cost["role"] != "base"]
    assert (trained["tokens_trained"] > 0).all() and (trained["train_peak_memory_mb"] > 0).all()
    assert (trained["disk_bytes"] > 0).all() and (trained["est_flops"] > 0).all()
    kd = cost[cost["role"] == "kd"]
    assert (kd["shared_wall_s"] > 0).all()  # every KD cell shares its teacher's SFT and a cache
    assert (kd["shared_disk_bytes"] > 0).all()
    jobs = pd.read_csv(results / "tables/cost_jobs.csv")
    assert jobs["wall_s"].notna().all() and len(jobs) == len(grid.comparisons) + sum(
        n for rule, n in grid.job_counts().items() if rule in ("sft", "distill", "teacher_outputs", "teacher_responses", "evaluate"))
    # results.csv holds no timing: it stays identical from run to run
    timing = set(COST_COLUMNS) - {"cell", "family", "role", "model", "teacher", "method", "temperature", "noise_sigma",
                                  "teacher_kind", "seed"}
    assert not timing & set(pd.read_csv(results / "tables/results.csv").columns)
    summary = (results / "stats/summary.md").read_text()
    assert "## Cost" in summary and "cost per point" in summary and "| distill |" in summary
    assert "Calibration: " in summary and "resources.cpu_gflops" in summary
    assert "No data" not in (results / "plots/captions/fig8_cost.rst").read_text()
    assert not list(results.rglob("checkpoints"))  # removed once each model was published
    log = (results / "logs/distill/math/tiny-m__tiny-xs/fkl/t1/sft-teacher/seed1.log").read_text()
    assert "tokens trained" in log and "peak memory" in log
    assert "kdgrid evaluate: cost:" in (results / "logs/evaluate/math/sft/tiny-xs/seed1.log").read_text()
