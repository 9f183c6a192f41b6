"""kdgrid.resources_plan: job resources follow from model sizes (GPUs, ZeRO stage, processes, memory, time)."""

import copy
from pathlib import Path

import pytest

from kdgrid.errors import KdgridError
from kdgrid.grid import DEFAULT_TRAINING, expand_grid, load_config
from kdgrid.resources_plan import DEFAULT_RESOURCES, plan_inference, plan_training

ROOT = Path(__file__).resolve().parents[1]
GPU = {**DEFAULT_RESOURCES, "gpu_mem_gb": 40, "max_gpus_per_job": 8}
LORA = DEFAULT_TRAINING
FULL = {**DEFAULT_TRAINING, "finetune": "full"}


def test_small_lora_student_gets_one_gpu_without_zero():
    plan = plan_training(GPU, LORA, student_b=0.5, teacher_b=0, examples_seen=40_000)
    assert (plan.gpu, plan.nproc, plan.zero_stage) == (1, 1, 0)
    assert plan.cpus_per_gpu == GPU["cpus_per_gpu"] and plan.threads == GPU["cpus_per_gpu"]


def test_a_14b_teacher_gets_a_multi_gpu_zero3_job(paper):
    sft = paper.resources_sft(paper.sft_runs_by_id["math/sft/Qwen2.5-14B/seed42"])
    assert sft.gpu >= 2 and sft.nproc == sft.gpu and sft.zero_stage == 3
    online = paper.resources_distill(paper.cells_by_id["math/Qwen2.5-14B__Qwen2.5-7B/gkd/t1/sft-teacher/seed42"])
    assert online.gpu >= 2 and online.zero_stage == 3
    small = paper.resources_sft(paper.sft_runs_by_id["math/sft/Qwen2.5-0.5B/seed42"])
    assert (small.gpu, small.zero_stage) == (1, 0)


def test_more_memory_means_more_gpus_more_time_more_host_memory():
    lora = plan_training(GPU, LORA, 7, 0, 40_000)
    full = plan_training(GPU, FULL, 7, 0, 40_000)
    assert full.gpu > lora.gpu
    with_teacher = plan_training(GPU, LORA, 1.5, 14, 40_000)
    cached = plan_training(GPU, LORA, 1.5, 0, 40_000)
    assert with_teacher.gpu >= cached.gpu and with_teacher.mem_mb > cached.mem_mb
    assert with_teacher.runtime > cached.runtime
    longer = plan_training(GPU, LORA, 1.5, 0, 400_000)
    assert longer.runtime > cached.runtime
    big_gpus = plan_training({**GPU, "gpu_mem_gb": 80}, FULL, 7, 0, 40_000)
    assert big_gpus.gpu < full.gpu


def test_runtime_stays_within_the_configured_bounds():
    tiny = plan_training(GPU, LORA, 0.001, 0, 10)
    assert tiny.runtime == GPU["min_runtime_min"]
    huge = plan_training(GPU, LORA, 7, 14, 10**9)
    assert huge.runtime == GPU["max_runtime_min"]


def test_a_job_that_fits_nowhere_names_the_settings_to_change():
    with pytest.raises(KdgridError, match="max_gpus_per_job=2"):
        plan_training({**GPU, "max_gpus_per_job": 2}, FULL, 14, 0, 1000)


def test_inference_jobs_use_one_gpu_unless_the_weights_need_more():
    assert plan_inference(GPU, 14, 4000, 256, 256, 16).gpu == 1
    assert plan_inference(GPU, 70, 4000, 256, 256, 16).gpu == 8
    assert plan_inference(GPU, 7, 4000, 256, 256, 16).nproc == 1
    short = plan_inference(GPU, 7, 4000, 256, 32, 16)
    long = plan_inference(GPU, 7, 4000, 256, 256, 16)
    assert long.runtime > short.runtime


def test_cpu_accelerator_runs_every_job_as_one_process():
    config = copy.deepcopy(load_config(ROOT / "config.yaml"))
    config["resources"] = {"accelerator": "cpu", "cpu_threads": 3}
    grid = expand_grid(config)
    plans = [grid.resources_distill(c) for c in grid.cells] + [grid.resources_sft(r) for r in grid.sft_runs]
    assert {(p.gpu, p.nproc, p.zero_stage, p.threads) for p in plans} == {(0, 1, 0, 3)}


def test_an_unknown_accelerator_is_refused():
    with pytest.raises(KdgridError, match="accelerator: 'tpu'"):
        plan_training({**GPU, "accelerator": "tpu"}, LORA, 1, 0, 10)


CPU = {**DEFAULT_RESOURCES, "accelerator": "cpu"}
SMOLLM2_B = 0.134515  # SmolLM2-135M-Instruct (tests/real_checkpoint.py)


def test_cpu_memory_follows_the_model_and_covers_the_measured_peaks():
    """Measured max RSS on CPU (resources_plan's docstring): 135M LoRA SFT at 4 x 256 tokens 3.45 GB
    (4.3 GB in issue 11's run); every plan must exceed the peak with room to spare."""
    sft = plan_training(CPU, {**LORA, "micro_batch_size": 4, "cutoff": 256}, SMOLLM2_B, 0, 16)
    assert sft.mem_mb >= 1.3 * 4300
    small = plan_training(CPU, {**LORA, "micro_batch_size": 2, "cutoff": 128}, 0.0637, 0, 16)
    assert small.mem_mb >= 1.3 * 1100
    gkd = plan_training(CPU, {**LORA, "micro_batch_size": 2, "cutoff": 128}, 0.0637, SMOLLM2_B, 16)
    assert gkd.mem_mb >= 1.3 * 1540 and gkd.mem_mb > small.mem_mb  # the online teacher adds its weights
    full = plan_training(CPU, {**FULL, "micro_batch_size": 4, "cutoff": 256}, SMOLLM2_B, 0, 16)
    assert full.mem_mb > sft.mem_mb  # gradients and Adam states
    longer = plan_training(CPU, {**LORA, "micro_batch_size": 8, "cutoff": 256}, SMOLLM2_B, 0, 16)
    assert longer.mem_mb > sft.mem_mb
    evaluate = plan_inference(CPU, SMOLLM2_B, examples=4, prompt_tokens=128, new_tokens=32, batch_size=4)
    assert evaluate.mem_mb >= 1.3 * 1570


def test_cpu_mem_mb_is_the_least_a_cpu_job_gets():
    tiny = plan_training({**CPU, "cpu_mem_mb": 2000}, LORA, 4.944e-05, 0, 16)
    assert tiny.mem_mb == 2000  # a tiny model needs less than the floor
    big = plan_training({**CPU, "cpu_mem_mb": 2000}, FULL, 1.5, 0, 16)
    assert big.mem_mb > 1.5 * 16 * 1024  # weights, gradients, Adam states of 1.5B parameters
