"""Smoke run of benchmarks/planning.py at small sizes: the jobs it counts are the grid's, its JSON has
every size. Timings are not checked (benchmarks are not timed tests)."""

import json

import pytest

from benchmark_support import ROOT, load_script
from kdgrid.grid import expand_grid, load_config

pytestmark = pytest.mark.slow


def test_planning_benchmark_counts_every_job_of_each_size(tmp_path):
    out = tmp_path / "planning.json"
    planning = load_script("planning")
    assert planning.main(["--seeds", "2,1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["seeds"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        config = load_config(ROOT / "config.yaml")
        config["seeds"] = list(range(1, row["seeds"] + 1))
        # every job of the grid, plus `all` (the paper grid's 465 at one seed: tests/test_workflow.py)
        assert row["jobs"] == sum(expand_grid(config).job_counts().values()) + 1
        assert row["wall_s"] > 0 and row["cpu_s"] > 0
        assert row["ms_per_job"] == pytest.approx(1000 * row["wall_s"] / row["jobs"], rel=1e-2)
    assert result["rows"][0]["jobs"] == 465
    assert result["linear"] is None  # no two sizes of 1000 jobs or more: linearity is not told
    assert isinstance(result["goal_met"], bool) and len(result["load_before"]) == 3
