"""benchmarks/gpu.sh on a CPU with tiny shapes (`--tiny`): the same sections as on the GPU, each ending
with figures or a reason, in one JSON; and the real model shapes it builds on the GPU."""

import json
import os
import subprocess
import sys

import pytest

from benchmark_support import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_bench  # a script of benchmarks/, imported as a module (its dataclasses need sys.modules)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-bench") / "gpu_bench.json"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_WHEELS": str(out.parent / "no-wheels"),
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    env.pop("OUT", None)
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no wheels in" in done.stdout
    return json.loads(out.read_text())


def _parts(section: dict) -> dict:
    return {k: v for k, v in section["results"].items() if isinstance(v, dict) and k not in ("setup", "ratios")}


def test_every_section_ends_with_figures_or_a_reason(report):
    assert report["profile"] == "tiny"
    assert list(report["sections"]) == list(gpu_bench.SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] in ("done", "partial", "skipped"), (name, section.get("reason"), section.get("traceback"))
        if section["status"] == "skipped":
            assert section["reason"], name
            continue
        assert section["seconds"] > 0 and section["budget_s"] > 0
        parts = _parts(section)
        assert parts or name == "machine", name
        for part, row in parts.items():
            assert "failed" not in row, (name, part, row.get("traceback"))
            assert row.get("skipped") or any(isinstance(v, (int, float)) and v > 0 for v in row.values()), (name, part)
        if section["status"] == "partial":
            assert any("skipped" in row for row in parts.values())


def test_machine_facts(report):
    machine = report["sections"]["machine"]["results"]
    assert machine["torch"] and machine["transformers"] and machine["python"]
    assert machine["cuda_available"] is False and machine["peak_flops_assumed"] is None
    assert machine["matmul"]["flops_per_s"] > 0


def test_training_steps_of_every_variant(report):
    section = report["sections"]["train_steps"]
    results, setup = section["results"], section["results"]["setup"]
    tokens = setup["grad_accum"] * setup["batch"] * setup["seq"]
    teacher = report["settings"]["teachers"][0]
    expected = {f"sft_{ft}": ("none", ft) for ft in ("lora", "full")}
    expected |= {f"kd_{kind}_{ft}_{teacher}": (source, ft) for kind, source in (("online", "model"), ("cache", "cache"))
                 for ft in ("lora", "full")}
    for name, (source, finetune) in expected.items():
        row = results[name]
        if "skipped" in row:
            assert "budget" in row["skipped"]
            continue
        assert (row["teacher_source"], row["finetune"]) == (source, finetune)
        assert row["teacher"] == (None if source == "none" else teacher)
        assert row["tokens_per_step"] == tokens and len(row["all_ms"]) == setup["timed_steps"]
        assert row["tokens_per_s"] == pytest.approx(tokens / (row["median_ms"] / 1e3))
        assert row["mfu"] is None and row["peak_memory_mib"] is None  # CPU: neither
        assert 0 < row["trainable_params"]
    lora, full = results["sft_lora"], results["sft_full"]
    if "skipped" not in lora and "skipped" not in full:
        assert lora["trainable_params"] < full["trainable_params"]
    assert results[f"teacher_{teacher}"]["cache_file_mib"] > 0


def test_fused_loss_section_compares_or_names_the_missing_function(report):
    import kdgrid.losses

    section = report["sections"]["fused_loss"]
    if not hasattr(kdgrid.losses, "linear_kd_loss"):
        assert section["status"] == "skipped" and "kdgrid.losses.linear_kd_loss" in section["reason"]
        return
    results = section["results"]
    for method in gpu_bench.KD_METHODS:
        for form in ("pair", "sparse", "logits"):
            row = results[f"loss_{method}_teacher_{form}"]
            if "skipped" in row:
                assert "budget" in row["skipped"]
                continue
            assert row["loss_rel_diff"] < 1e-4, (method, form)
            assert row["grad_max_abs_diff"] <= 1e-4 * max(row["grad_max_abs"], 1e-6), (method, form)
            assert row["logits_median_ms"] > 0 and row["fused_median_ms"] > 0
    for variant, source in (("kd_online", "model"), ("kd_cache", "cache"), ("sft", "none")):
        row = results[f"trainer_{variant}_lora"]
        if "skipped" in row:
            assert "budget" in row["skipped"]
            continue
        assert (row["logits"]["fused_loss"], row["fused"]["fused_loss"]) == (False, True)
        assert row["logits"]["teacher_source"] == row["fused"]["teacher_source"] == source
        assert row["time_ratio_fused_over_logits"] == pytest.approx(row["fused"]["median_ms"] / row["logits"]["median_ms"])


def test_zero3_single_process_run_shards_the_teacher(report):
    section = report["sections"]["zero3"]
    if section["status"] == "skipped":
        assert section["reason"]
        return
    results = section["results"]
    assert results["setup"]["zero_stage"] == 3 and results["setup"]["world_size"] == 1
    assert results["setup"]["teacher_sharded"] == "DeepSpeedEngine"
    row = results["kd_online_full"]
    assert len(row["all_steps_ms"]) == results["setup"]["steps"] and row["tokens_per_s"] > 0


def test_generation_on_the_evaluation_path(report):
    results = report["sections"]["generation"]["results"]
    settings = report["settings"]
    hf = results["hf_generate"]
    assert hf["new_tokens_per_row"] == settings["gen_new_tokens"]
    assert hf["new_tokens_per_s"] == pytest.approx(settings["gen_batch"] * settings["gen_new_tokens"] / hf["seconds"])
    lm = results["lm_eval_evaluate"]
    if "skipped" not in lm:
        assert lm["items"] == settings["gen_batch"] and lm["generate_calls"] >= 1
        assert sum(lm["generate_batch_sizes"]) == settings["gen_batch"]
        assert 0 < lm["generated_tokens"] <= settings["gen_batch"] * settings["gen_new_tokens"]


@pytest.mark.parametrize("name, params", [("qwen2.5-0.5b", 494_032_768), ("qwen2.5-3b", 3_085_938_688),
                                          ("qwen2.5-7b", 7_615_616_512)])
def test_real_shapes_have_the_published_parameter_counts(name, params):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(gpu_bench.model_config(name))
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.config.tie_word_embeddings == (name != "qwen2.5-7b")


def test_a_spent_budget_leaves_the_remaining_parts_with_a_reason():
    results, saves = {}, []
    ran = []
    parts = [("first", lambda: ran.append(1) or {"value": 1.0}), ("second", lambda: {"value": 2.0})]
    budget = gpu_bench.Budget(3600)
    gpu_bench.run_parts(results, parts[:1], budget, lambda: saves.append(1))
    gpu_bench.run_parts(results, parts[1:], gpu_bench.Budget(0), lambda: saves.append(1))
    assert results["first"] == {"value": 1.0} and ran == [1]
    assert "budget of 0 s was spent before second" in results["second"]["skipped"]
    assert len(saves) == 2  # written after every part


def test_a_failing_part_records_its_error_and_the_next_part_runs():
    results = {}

    def broken():
        raise ValueError("dtype mismatch")

    gpu_bench.run_parts(results, [("broken", broken), ("next", lambda: {"value": 1.0})], gpu_bench.Budget(3600),
                        lambda: None)
    assert results["broken"]["failed"] == "ValueError: dtype mismatch" and "broken" in results["broken"]["traceback"]
    assert results["next"] == {"value": 1.0}
