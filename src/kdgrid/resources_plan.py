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

Work of a job (`training_work`, `inference_work`: the one estimator both the runtimes here and the
grid's cost ledger, `kdgrid.cost_plan`, use): about 6 x N x D FLOPs to train N parameters fully on D
tokens (forward and backward), 4 x N x D with LoRA (no weight gradients), 2 x N x D for a frozen
forward pass (an online teacher, a cache run, reading prompts); generation (GKD's on-policy batches,
seqkd's teacher responses, evaluation) is memory bound on a GPU: a fixed time per decoding step of a
batch; on a CPU its 2 x N FLOPs per generated token count like the rest. FLOPs divided by
`gpu_tflops` (a sustained figure) give GPU-seconds, by `cpu_gflops` (per core) core-seconds.

Memory of a job on CPU (fp32 throughout), in GB, times CPU_MEM_MARGIN, and at least `cpu_mem_mb`:
CPU_BASE_GB (Python, torch, transformers, lm-eval) + 8 bytes x parameters of every model loaded
(fp32 weights and one copy while loading or merging LoRA) + 12 more per trained parameter with full
fine-tuning (gradients, Adam's two moments) + CPU_ACTIVATION_GB_PER_B per billion parameters per 1024
tokens of a micro-batch (a frozen teacher or an inference job: CPU_FORWARD_SHARE of it). Measured
(benchmarks max RSS, 2026-12-01, SmolLM2-135M-Instruct and a 63.7M 10-layer cut of it, LoRA, fp32):
SFT of 135M at 4 x 256 tokens 3.45 GB, at 2 x 128 tokens 1.81 GB; of 63.7M at 2 x 128 1.10 GB; GKD
(63.7M student, 135M teacher online) 1.54 GB; fkl from the cache 0.99 GB; evaluation of 63.7M 0.81 GB;
teacher outputs of 135M 1.57 GB. The activation term (2.1 GB per 1024 tokens at 135M, the 49k-token
vocabulary's logits included) is fitted on the two 135M SFT runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import KdgridError

ACCELERATORS = ("gpu", "cpu")
DEFAULT_RESOURCES = {
    "accelerator": "gpu",  # one of ACCELERATORS
    "gpu_mem_gb": 40,  # memory of one GPU
    "usable_fraction": 0.8,  # share of it a job may plan to fill
    "max_gpus_per_job": 8,  # GPUs of one node
    "cpus_per_gpu": 8,
    "gpu_tflops": 100,  # sustained bf16 TFLOP/s one GPU reaches on these jobs
    "cpu_gflops": 80,  # accelerator cpu: sustained GFLOP/s of one core on these jobs (measured: docs/workflow.md)
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
CPU_BASE_GB = 1.0
CPU_WEIGHT_BYTES, CPU_FULL_FT_BYTES = 8, 12  # per parameter (module docstring)
CPU_ACTIVATION_GB_PER_B = 16.0  # per billion parameters, per 1024 tokens in a micro-batch
CPU_FORWARD_SHARE = 0.3  # a forward pass without gradients, of the training activations
CPU_MEM_MARGIN = 1.5


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


@dataclass(frozen=True)
class Work:
    """What a job computes: `flops` of forward and backward passes, plus generation, as decoding steps
    of a batch (GPU: memory bound, `decode_step_s` each) and as `generated_tokens` (2 x N FLOPs each
    on a CPU, in `generation_flops`). `decode_parallel`: the decoding steps are shared by the job's
    GPUs (training processes sample their own batches), not run by one process (inference)."""

    flops: float
    decode_steps: float = 0.0
    decode_step_s: float = 0.0
    generation_flops: float = 0.0
    decode_parallel: bool = True

    def gpu_wall_seconds(self, res: dict, gpus: int) -> float:
        """Wall seconds on `gpus` GPUs of `resources.gpu_tflops` each (no start-up, no margin)."""
        compute = self.flops / (gpus * res["gpu_tflops"] * 1e12)
        decode = self.decode_steps * self.decode_step_s
        return compute + (decode / gpus if self.decode_parallel else decode)

    def cpu_core_seconds(self, res: dict) -> float:
        """Core-seconds at `resources.cpu_gflops` per core (no start-up)."""
        return (self.flops + self.generation_flops) / (res["cpu_gflops"] * 1e9)


def decode_step_seconds(model_b: float) -> float:
    return DECODE_STEP_S_BASE + DECODE_STEP_S_PER_B * model_b


def training_work(training: dict, student_b: float, teacher_b: float, examples_seen: float,
                  generated_tokens: float = 0) -> Work:
    """An SFT run (teacher_b = 0) or a distillation cell with an online teacher of teacher_b billion
    parameters (0 when it reads the teacher-output cache or trains on teacher responses);
    generated_tokens: tokens the student samples per micro-batch on average (GKD: lmbda x max new tokens)."""
    full = training["finetune"] == "full"
    flops_per_token = ((6 if full else 4) * student_b + 2 * teacher_b) * 1e9
    steps = examples_seen / training["micro_batch_size"]
    decode_steps = steps * generated_tokens
    return Work(flops=examples_seen * training["cutoff"] * flops_per_token, decode_steps=decode_steps,
                decode_step_s=decode_step_seconds(student_b),
                generation_flops=2 * student_b * 1e9 * decode_steps * training["micro_batch_size"])


def inference_work(model_b: float, examples: float, prompt_tokens: int, new_tokens: int, batch_size: int) -> Work:
    """One model reading `examples` prompts (a forward pass each) and generating up to `new_tokens`."""
    decode_steps = math.ceil(examples / batch_size) * new_tokens
    return Work(flops=examples * prompt_tokens * 2 * model_b * 1e9, decode_steps=decode_steps,
                decode_step_s=decode_step_seconds(model_b), generation_flops=2 * model_b * 1e9 * examples * new_tokens,
                decode_parallel=False)


def _cpu_job(res: dict, mem_gb: float) -> JobResources:
    mem_mb = max(int(res["cpu_mem_mb"]), 256 * math.ceil(CPU_MEM_MARGIN * mem_gb * 1024 / 256))
    return JobResources(gpu=0, nproc=1, zero_stage=0, cpus_per_gpu=0, threads=int(res["cpu_threads"]),
                        mem_mb=mem_mb, runtime=int(res["cpu_runtime_min"]))


def cpu_training_mem_gb(training: dict, student_b: float, teacher_b: float) -> float:
    """The estimated peak memory (GB, before the margin) of a training job on CPU (module docstring)."""
    tokens_k = training["micro_batch_size"] * training["cutoff"] / 1024
    trained = (CPU_FULL_FT_BYTES * student_b) if training["finetune"] == "full" else 0.0
    return (CPU_BASE_GB + CPU_WEIGHT_BYTES * (student_b + teacher_b) + trained
            + tokens_k * CPU_ACTIVATION_GB_PER_B * (student_b + CPU_FORWARD_SHARE * teacher_b))


def cpu_inference_mem_gb(model_b: float, batch_size: int, tokens: int) -> float:
    tokens_k = batch_size * tokens / 1024
    return CPU_BASE_GB + CPU_WEIGHT_BYTES * model_b + tokens_k * CPU_ACTIVATION_GB_PER_B * CPU_FORWARD_SHARE * model_b


def _check(res: dict) -> None:
    if res["accelerator"] not in ACCELERATORS:
        raise KdgridError(f"config key resources.accelerator: {res['accelerator']!r} is not one of "
                          f"{', '.join(ACCELERATORS)}")


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
        return _cpu_job(res, cpu_training_mem_gb(training, student_b, teacher_b))
    full = training["finetune"] == "full"
    weight_bytes = 4 if training["precision"] == "fp32" else 2
    sharded = (16 if full else weight_bytes) * student_b + weight_bytes * teacher_b
    tokens_k = training["micro_batch_size"] * training["cutoff"] / 1024
    activations = ACTIVATION_BASE_GB + tokens_k * (ACTIVATION_GB_PER_B * student_b
                                                   + TEACHER_ACTIVATION_GB_PER_B * teacher_b)
    what = f"training a {student_b:g}B student" + (f" with a {teacher_b:g}B teacher" if teacher_b else "")
    gpus = _gpus_for(res, sharded, activations, what)

    seconds = training_work(training, student_b, teacher_b, examples_seen, generated_tokens).gpu_wall_seconds(res, gpus)
    host_gb = HOST_MEM_BASE_GB + gpus * HOST_MEM_GB_PER_B * (student_b + teacher_b)
    return JobResources(gpu=gpus, nproc=gpus, zero_stage=3 if gpus > 1 else 0,
                        cpus_per_gpu=int(res["cpus_per_gpu"]), threads=gpus * int(res["cpus_per_gpu"]),
                        mem_mb=math.ceil(host_gb) * 1024, runtime=_runtime_min(res, seconds))


def plan_inference(res: dict, model_b: float, examples: int, prompt_tokens: int, new_tokens: int,
                   batch_size: int) -> JobResources:
    """One model reading `examples` prompts (a forward pass each) and generating up to `new_tokens`."""
    _check(res)
    if res["accelerator"] == "cpu":
        return _cpu_job(res, cpu_inference_mem_gb(model_b, batch_size, prompt_tokens + new_tokens))
    gpus = _gpus_for(res, 2 * model_b, INFERENCE_OVERHEAD_GB, f"running a {model_b:g}B model")
    seconds = inference_work(model_b, examples, prompt_tokens, new_tokens, batch_size).gpu_wall_seconds(res, gpus)
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
