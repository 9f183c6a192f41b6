"""The whole grid on a real pretrained model: config/real-smoke.yaml through Snakemake (make real-smoke).

SmolLM2-135M-Instruct and a 10-layer student of it (tests/real_checkpoint.py), real LLM-Adapters records
(tests/fixtures/llm-adapters-excerpt), every method class. Each test checks that one stage produced real
outputs. Behind the `real` marker: excluded from the default run (pyproject's addopts), run by
`make real-smoke` (`pytest -m real`).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from kdgrid.grid import PLOT_NAMES, expand_grid, load_config
from real_checkpoint import ensure, link
from workflow_support import ROOT, copy_workflow, job_table, snakemake

pytestmark = [pytest.mark.real, pytest.mark.slow]

CONFIG = "config/real-smoke.yaml"
GRID = expand_grid(load_config(ROOT / CONFIG))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A workflow copy after a complete run of the real-smoke grid (the checkpoints linked where the
    config names them, the data excerpt where it reads it)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("real-smoke"))
    link(ensure(), workdir / "resources" / "real-checkpoint")
    excerpt = Path("tests/fixtures/llm-adapters-excerpt")
    shutil.copytree(ROOT / excerpt, workdir / excerpt)
    run = snakemake(workdir, "--configfile", CONFIG, "--cores", "2", timeout=3000)
    assert run.returncode == 0, (run.stdout + run.stderr)[-8000:]
    return workdir


def results(workdir: Path, *parts: str) -> Path:
    return workdir.joinpath(GRID.outdir, *parts)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_method_class_and_both_families_are_in_the_grid():
    assert {c.method for c in GRID.cells} == {"fkl", "gkd", "seqkd"}
    assert any(GRID.uses_cache(c) for c in GRID.cells)  # off-policy from the cache
    assert any(c.method == "gkd" and not GRID.uses_cache(c) for c in GRID.cells)  # teacher online
    assert set(GRID.families) == {"math", "commonsense"}
    assert all(not m.tiny and m.path for m in GRID.models.values())


def test_every_training_job_trained_and_counted_truncations(finished):
    runs = [r.id for r in GRID.sft_runs] + [c.id for c in GRID.cells]
    for run in runs:
        assert (results(finished, run, "model", "config.json")).is_file(), run
        rows = read_jsonl(results(finished, run, "train_log.jsonl"))
        losses = [r["loss"] for r in rows if "loss" in r]
        assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses), run
        meta = next(r for r in rows if "truncated_examples" in r)
        assert 0 <= meta["truncated_examples"] <= meta["examples"], run


def test_every_evaluation_generated_real_answers(finished):
    for ev in GRID.evaluations:
        scores = json.loads(results(finished, ev.ckpt, "eval", "scores.json").read_text())
        assert set(scores["n"]) == set(GRID.families[ev.family].tasks), ev.ckpt
        assert all(n == 4 for n in scores["n"].values()), ev.ckpt
        assert all(0 <= acc <= 100 for acc in scores["accuracy"].values()), ev.ckpt
        records = read_jsonl(results(finished, ev.ckpt, "eval", "records.jsonl"))
        assert len(records) == 4, ev.ckpt
        assert all(isinstance(r["generation"], str) for r in records)
        assert sum(bool(r["generation"].strip()) for r in records) >= 3, (ev.ckpt, records)


def test_every_comparison_measured_agreement_and_bleu(finished):
    for c in GRID.comparisons:
        comparison = json.loads(results(finished, c.id + ".json").read_text())
        for key in ("agreement", "bleu"):
            values = [v for task, v in comparison[key].items()]
            assert values and all(0 <= v <= 100 for v in values), (c.id, key)


def test_the_table_statistics_and_plots_hold_results(finished):
    with open(results(finished, "tables", "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows if r.get("role") == "kd"} == {"fkl", "gkd", "seqkd"}
    assert {r["family"] for r in rows} == {"math", "commonsense"}
    with open(results(finished, "stats", "hypotheses.csv"), newline="") as f:
        assert list(csv.DictReader(f))
    assert results(finished, "stats", "summary.md").read_text().strip()
    for name in PLOT_NAMES:
        png = results(finished, "plots", f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert results(finished, "plots", f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_logs_are_free_of_git_noise(finished):
    logs = list(results(finished, "logs").rglob("*.log"))
    assert logs
    noisy = [str(p) for p in logs if "not a git repository" in p.read_text(errors="replace")]
    assert not noisy


def test_no_job_used_more_memory_than_planned(finished):
    """The benchmark of every training and inference job (max RSS) against the memory its plan gave."""
    plans = {"sft": {r.id: GRID.resources_sft(r) for r in GRID.sft_runs},
             "distill": {c.id: GRID.resources_distill(c) for c in GRID.cells}}
    checked = 0
    for rule, jobs in plans.items():
        for job, plan in jobs.items():
            with open(results(finished, "benchmarks", rule, f"{job}.tsv"), newline="") as f:
                max_rss = float(next(csv.DictReader(f, delimiter="\t"))["max_rss"])
            assert max_rss < plan.mem_mb, (rule, job, max_rss, plan.mem_mb)
            checked += 1
    assert checked == len(GRID.sft_runs) + len(GRID.cells)


def test_a_second_run_schedules_nothing(finished):
    run = snakemake(finished, "-n", "--configfile", CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    assert job_table(run.stdout + run.stderr) == {}


def test_topk_error_measures_the_real_models_on_real_records(tmp_path):
    from benchmark_support import load_script

    dirs = ensure()
    data = ROOT / "tests/fixtures/llm-adapters-excerpt/dataset/gsm8k/test.json"
    out = tmp_path / "topk.json"
    assert load_script("topk_error").main(["--teacher", str(dirs.teacher), "--student", str(dirs.student),
                                           "--data", str(data), "--n-eval", "2", "--ks", "16",
                                           "--temperatures", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tokenizer_length"] == 49152 and result["data"] == str(data)
    assert result["n_eval_sequences"] == 2
    rows = result["rows"]
    assert len(rows) == 5 and all(r["dense"] > 0 and 0 <= r["teacher_rest_mass_mean"] < 1 for r in rows)
