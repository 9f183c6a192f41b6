"""Smoke run of benchmarks/loss_from_hidden.py at tiny shapes: every variant runs, the fused losses equal
the reference formulas, the JSON's ratios follow from its rows. Its figures are not checked."""

import json

import pytest

from benchmark_support import load_script


def test_quick_run_writes_consistent_rows(tmp_path):
    out = tmp_path / "loss_from_hidden.json"
    assert load_script("loss_from_hidden").main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["straightforward", "logits_kd_loss", "fused_online", "fused_cache", "sft_logits", "sft_fused"]
    for variant in ("logits_kd_loss", "fused_online", "sft_fused"):  # the same loss, computed another way
        assert rows[variant]["value_rel_diff"] < 1e-5 and rows[variant]["grad_rel_diff"] < 1e-5, variant
    assert rows["fused_cache"]["value_rel_diff"] < 0.05  # top-8 + 8 samples of a 1000-wide teacher: an estimate
    assert all(r["peak_added_mib"] >= 0 and r["seconds"] > 0 for r in rows.values())
    ratios = result["ratios"]
    assert ratios["fused_online_peak_over_straightforward"] == rows["fused_online"]["peak_ratio"]
    assert ratios["fused_cache_over_sft_fused_time"] == pytest.approx(
        rows["fused_cache"]["seconds"] / rows["sft_fused"]["seconds"], rel=1e-2)
    assert result["goals"]["kd_cache_within_1.15x_of_sft"] == (ratios["fused_cache_over_sft_fused_time"] <= 1.15)
