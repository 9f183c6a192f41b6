"""Compute resources per job from the model sizes: GPUs, processes, ZeRO stage, host memory, runtime.

The rules ask this module (through `kdgrid.grid`) for each job's resources; the SLURM profile turns
them into `--gpus`, `--cpus-per-gpu`, `--mem` and `-t`. The estimates are deliberately simple and
conservative; `config.yaml`'s `resources:` section describes the cluster's GPUs.

Memory of a training job on one GPU, in GB (bf16 weights: 2 bytes per parameter):
- the trained model: 2 bytes x parameters with LoRA (frozen weights, tiny adapters), 16 with full
  fine-tuning (weights, gradients and Adam states in mixed precision);
- a teacher (every distillation cell but seqkd: one that may read the teacher-output cache runs its
  teacher on its first step to check the cache, and for the whole run if the check fails): 2 bytes x its
  parameters;
- activations: a constant plus a share per billion parameters, for micro_batch_size x cutoff tokens.
ZeRO-3 shards the first two over the job's GPUs, not the activations. A job gets the smallest power
of two of GPUs on which it fits in `gpu_mem_gb x usable_fraction`, and ZeRO-3 when it needs more than
one; inference jobs (evaluate, teacher outputs and responses) get one GPU unless the weights need more.
With `accelerator: cpu` (the tiny grid) every job is one process on `cpu_threads` cores, ZeRO 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import KdgridError

DEFAULT_RESOURCES = {
    "accelerator": "gpu",  # gpu | cpu
    "gpu_mem_gb": 40,  # memory of one GPU
    "usable_fraction": 0.8,  # share of it a job may plan to fill
    "max_gpus_per_job": 8,  # GPUs of one node
    "cpus_per_gpu": 8,
    "gpu_tflops": 100,  # sustained bf16 TFLOP/s one GPU reaches on these jobs
    "runtime_margin": 2.0,  # estimated runtime x this, plus start-up
    "min_runtime_min": 30,
    "max_runtime_min": 2880,
    "cpu_threads": 1,  # accelerator cpu: threads (cores) per job
    "cpu_mem_mb": 4000,
    "cpu_runtime_min": 60,
}

ACTIVATION_BASE_GB = 2.0  # CUDA context, buffers, the (chunked) loss
ACTIVATION_GB_PER_B = 0.7  # trained model, per billion parameters, per 1024 tokens in a micro-batch
TEACHER_ACTIVATION_GB_PER_B = 0.2  # frozen teacher forward, no stored activations
INFERENCE_OVERHEAD_GB = 4.0  # KV cache and buffers of a generation batch
STARTUP_MIN = 10  # loading models, launching processes
DECODE_STEP_S_BASE, DECODE_STEP_S_PER_B = 0.015, 0.0015  # one generation step of a batch (memory bound)
HOST_MEM_BASE_GB, HOST_MEM_GB_PER_B = 16, 2.5  # host RAM: base plus loading weights, per process


@dataclass(frozen=True)
class JobResources:
    gpu: int
    nproc: int  # processes `kdgrid train --nproc` launches (one per GPU; 1 on CPU)
    zero_stage: int
    cpus_per_gpu: int
    threads: int
    mem_mb: int
    runtime: int  # minutes

    def as_dict(self) -> dict:
        return asdict(self)


def _cpu_job(res: dict) -> JobResources:
    return JobResources(gpu=0, nproc=1, zero_stage=0, cpus_per_gpu=0, threads=int(res["cpu_threads"]),
                        mem_mb=int(res["cpu_mem_mb"]), runtime=int(res["cpu_runtime_min"]))


def _check(res: dict) -> None:
    if res["accelerator"] not in ("gpu", "cpu"):
        raise KdgridError(f"config key resources.accelerator: {res['accelerator']!r} is not one of gpu, cpu")


def _runtime_min(res: dict, seconds: float) -> int:
    minutes = math.ceil(res["runtime_margin"] * seconds / 60) + STARTUP_MIN
    return int(min(max(minutes, res["min_runtime_min"]), res["max_runtime_min"]))


def _gpus_for(res: dict, sharded_gb: float, unsharded_gb: float, what: str) -> int:
    usable = res["gpu_mem_gb"] * res["usable_fraction"]
    n = 1
    while n <= res["max_gpus_per_job"]:
        if sharded_gb / n + unsharded_gb <= usable:
            return n
        n *= 2
    raise KdgridError(
        f"{what} needs about {sharded_gb:.0f} GB of weights and states plus {unsharded_gb:.0f} GB per GPU: it does "
        f"not fit on resources.max_gpus_per_job={res['max_gpus_per_job']} GPUs of resources.gpu_mem_gb="
        f"{res['gpu_mem_gb']} GB (raise those, or lower the training micro_batch_size or cutoff)")


def plan_training(res: dict, training: dict, student_b: float, teacher_b: float, examples_seen: int,
                  generated_tokens: float = 0) -> JobResources:
    """An SFT run (teacher_b = 0) or a distillation cell with an online teacher of teacher_b billion
    parameters (0 for seqkd); generated_tokens: on-policy tokens the
    student samples per example (GKD)."""
    _check(res)
    if res["accelerator"] == "cpu":
        return _cpu_job(res)
    full = training["finetune"] == "full"
    weight_bytes = 4 if training["precision"] == "fp32" else 2
    sharded = (16 if full else weight_bytes) * student_b + weight_bytes * teacher_b
    tokens_k = training["micro_batch_size"] * training["cutoff"] / 1024
    activations = ACTIVATION_BASE_GB + tokens_k * (ACTIVATION_GB_PER_B * student_b
                                                   + TEACHER_ACTIVATION_GB_PER_B * teacher_b)
    what = f"training a {student_b:g}B student" + (f" with a {teacher_b:g}B teacher" if teacher_b else "")
    gpus = _gpus_for(res, sharded, activations, what)

    flops_per_token = ((6 if full else 4) * student_b + 2 * teacher_b) * 1e9
    seconds = examples_seen * training["cutoff"] * flops_per_token / (gpus * res["gpu_tflops"] * 1e12)
    if generated_tokens:
        steps = examples_seen / training["micro_batch_size"] / gpus
        seconds += steps * generated_tokens * (DECODE_STEP_S_BASE + DECODE_STEP_S_PER_B * student_b)
    host_gb = HOST_MEM_BASE_GB + gpus * HOST_MEM_GB_PER_B * (student_b + teacher_b)
    return JobResources(gpu=gpus, nproc=gpus, zero_stage=3 if gpus > 1 else 0,
                        cpus_per_gpu=int(res["cpus_per_gpu"]), threads=gpus * int(res["cpus_per_gpu"]),
                        mem_mb=math.ceil(host_gb) * 1024, runtime=_runtime_min(res, seconds))


def plan_inference(res: dict, model_b: float, examples: int, prompt_tokens: int, new_tokens: int,
                   batch_size: int) -> JobResources:
    """One model reading `examples` prompts (a forward pass each) and generating up to `new_tokens`."""
    _check(res)
    if res["accelerator"] == "cpu":
        return _cpu_job(res)
    gpus = _gpus_for(res, 2 * model_b, INFERENCE_OVERHEAD_GB, f"running a {model_b:g}B model")
    seconds = examples * prompt_tokens * 2 * model_b * 1e9 / (gpus * res["gpu_tflops"] * 1e12)
    seconds += math.ceil(examples / batch_size) * new_tokens * (DECODE_STEP_S_BASE + DECODE_STEP_S_PER_B * model_b)
    host_gb = HOST_MEM_BASE_GB + HOST_MEM_GB_PER_B * model_b
    return JobResources(gpu=gpus, nproc=1, zero_stage=0, cpus_per_gpu=int(res["cpus_per_gpu"]),
                        threads=gpus * int(res["cpus_per_gpu"]), mem_mb=math.ceil(host_gb) * 1024,
                        runtime=_runtime_min(res, seconds))


def plan_light(res: dict) -> JobResources:
    """A CPU-only job (compare, aggregate, stats, plots)."""
    _check(res)
    threads = int(res["cpu_threads"]) if res["accelerator"] == "cpu" else 2
    return JobResources(gpu=0, nproc=1, zero_stage=0, cpus_per_gpu=0, threads=threads,
                        mem_mb=int(res["cpu_mem_mb"]) if res["accelerator"] == "cpu" else 16384,
                        runtime=int(res["cpu_runtime_min"]) if res["accelerator"] == "cpu" else 60)
