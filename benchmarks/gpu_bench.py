"""The GPU benchmark (issue 21, part 2): kdgrid's training and evaluation paths at the real model
shapes on one GPU, in one call of about five minutes. `benchmarks/gpu.sh` runs it on the device
machine (it installs the carried wheels first); `--tiny` runs the same code on a CPU with tiny shapes.

Models are randomly initialised from the configs below (the shapes of Qwen2.5-0.5B, the student, and
Qwen2.5-3B / 7B, the teachers, as their config.json files give them): nothing is downloaded.

Sections, each with a time budget; the JSON is rewritten after every measurement, so a slow or failing
section never loses the others, and every section ends with numbers or a reason:
  machine      GPU, driver, library versions, the measured bf16 matrix-product rate;
  train_steps  optimizer steps (grad-accum micro-batches + clipping + AdamW) through KDTrainer as
               `kdgrid train` builds it: SFT, KD with each teacher online, KD from a teacher-output
               cache of each teacher; LoRA and full fine-tuning. tokens/s, MFU, peak GPU memory;
  fused_loss   kdgrid.losses.linear_kd_loss (the KD loss from hidden states) against the logits path
               (kd_loss on materialised logits): memory, time, loss and gradient agreement;
  zero3        a single-process DeepSpeed ZeRO-3 run (trainer.train) with the teacher sharded by
               kdgrid's zero3_inference_engine;
  generation   greedy generation on the evaluation path (batch 16, 256 new tokens): HF generate as
               lm-eval's HFLM calls it, and kdgrid.evaluation.runner.evaluate through lm-eval itself
               (a saved copy of the student with kdgrid's tokenizer, 16 items of a synthetic task).

FLOPs per token (MFU = FLOPs / step time / peak): student 6 N (full) or 4 N (LoRA: no weight gradients)
+ 12 L d T; teacher forward 2 N + 4 L d T; N = the weights of every Linear layer (output layer included,
tied or not), L layers, d hidden size, T sequence length. Peak: the GPU's dense bf16 rate from its
datasheet (H100/H200 SXM 989 TFLOP/s); the MFU against the matrix-product rate measured in `machine`
is reported beside it.

    python benchmarks/gpu_bench.py [--tiny] [--out PATH] [--sections a,b] [--budget SECTION=S ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_cost.py beside this file
from step_cost import QWEN2_SHAPES

# Qwen2.5 config.json values: hidden size, layers, attention heads, key-value heads, MLP width,
# vocabulary (logits width), tied embeddings. All three use rope_theta 1e6 and rms_norm_eps 1e-6.
# The tiny stand-ins keep the relations that matter to the code paths: the second teacher has a wider,
# untied output layer (as 7B's 152,064 against the student's 151,936).
MODEL_SHAPES = {
    **{name: QWEN2_SHAPES[name] for name in ("qwen2.5-0.5b", "qwen2.5-3b", "qwen2.5-7b")},
    "tiny-student": (64, 2, 4, 2, 128, 768, True),
    "tiny-teacher": (96, 2, 4, 2, 192, 768, True),
    "tiny-teacher-wide": (128, 2, 4, 2, 256, 896, False),
}
ROPE_THETA, RMS_NORM_EPS = 1_000_000.0, 1e-6
EOS_ID = 0  # kdgrid.tokenizer's <|endoftext|>: the saved evaluation model uses that tokenizer

# Dense bf16 peak of the GPUs we may meet, FLOP/s (vendor datasheets; SXM parts unless named).
PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12)]

SECTIONS = ("machine", "train_steps", "fused_loss", "zero3", "generation")
KD_METHODS = ("fkl", "rkl", "gkd", "skew_kl", "tvd")


@dataclass(frozen=True)
class Profile:
    device: str
    precision: str
    student: str
    teachers: tuple[str, ...]
    batch: int
    seq: int
    grad_accum: int
    warmup: int
    reps: int
    top_k: int
    tail_samples: int
    fused_shape: tuple[int, int, int, int, int]  # batch, seq, student H, teacher H, vocabulary
    fused_masked_prompt: int
    fused_reps: int
    zero3_teacher: str
    gen_batch: int
    gen_prompt: int
    gen_new_tokens: int
    matmul_n: int
    budgets: dict = field(default_factory=dict)


PROFILES = {
    "h200": Profile(device="cuda", precision="bf16", student="qwen2.5-0.5b", teachers=("qwen2.5-3b", "qwen2.5-7b"),
                    batch=4, seq=256, grad_accum=4, warmup=2, reps=5, top_k=64, tail_samples=64,
                    fused_shape=(4, 256, 896, 2048, 151_936), fused_masked_prompt=32, fused_reps=5,
                    zero3_teacher="qwen2.5-7b", gen_batch=16, gen_prompt=128, gen_new_tokens=256, matmul_n=8192,
                    budgets={"machine": 15, "train_steps": 100, "fused_loss": 50, "zero3": 60, "generation": 45}),
    "tiny": Profile(device="cpu", precision="fp32", student="tiny-student", teachers=("tiny-teacher-wide",),
                    batch=2, seq=16, grad_accum=2, warmup=1, reps=2, top_k=8, tail_samples=4,
                    fused_shape=(2, 16, 32, 48, 640), fused_masked_prompt=4, fused_reps=2,
                    zero3_teacher="tiny-teacher-wide", gen_batch=2, gen_prompt=12, gen_new_tokens=6, matmul_n=256,
                    budgets={"machine": 10, "train_steps": 90, "fused_loss": 30, "zero3": 120, "generation": 60}),
}


class Skip(Exception):
    """A section (or part of one) that cannot run here; the message says why."""


class OutOfTime(Exception):
    """The section's time budget is spent."""


class Stopped(BaseException):
    """SIGTERM (the wrapper's time limit): record what was running, write, stop."""


# --- models -------------------------------------------------------------------------------------------

def model_config(name: str):
    from transformers import Qwen2Config

    hidden, layers, heads, kv_heads, mlp, vocab, tied = MODEL_SHAPES[name]
    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, intermediate_size=mlp, tie_word_embeddings=tied,
                       rms_norm_eps=RMS_NORM_EPS, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
                       max_position_embeddings=32768, use_sliding_window=False, bos_token_id=EOS_ID,
                       eos_token_id=EOS_ID, pad_token_id=EOS_ID, architectures=["Qwen2ForCausalLM"])


def build_model(name: str, dtype, device: str | None, seed: int = 0):
    """A randomly initialised model of a named shape, built on `device` (None: where ZeRO-3 puts it)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device) if device else contextlib.nullcontext():
        model = AutoModelForCausalLM.from_config(model_config(name), dtype=dtype)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = EOS_ID
    return model.eval()


def student_dtype(precision: str, finetune: str, zero_stage: int = 0):
    """The rule of kdgrid.training.model_io.load_student: half-precision weights under LoRA or DeepSpeed,
    float32 weights for plain full fine-tuning (autocast computes in half precision)."""
    import torch

    from kdgrid.training.model_io import torch_dtype

    half = precision != "fp32" and (finetune == "lora" or zero_stage > 0)
    return torch_dtype(precision) if half else torch.float32


def flops_per_token(model, seq: int, kind: str) -> float:
    """kind: 'full' / 'lora' (a training step of the student) or 'forward' (the teacher)."""
    from step_cost import matmul_params

    n = matmul_params(model)
    attention = model.config.num_hidden_layers * model.config.hidden_size * seq
    return {"full": 6 * n + 12 * attention, "lora": 4 * n + 12 * attention, "forward": 2 * n + 4 * attention}[kind]


# --- measuring --------------------------------------------------------------------------------------------

class Context:
    """What the sections share: the profile, a scratch folder, `save()` (rewrite the JSON), timing and
    memory helpers, and the peak FLOP/s for the MFU (set by the machine section)."""

    def __init__(self, profile_name: str, workdir: Path, save):
        import torch

        self.profile_name, self.profile = profile_name, PROFILES[profile_name]
        self.workdir, self.save = workdir, save
        self.cuda = self.profile.device == "cuda"
        self.torch = torch
        self.peak = None
        self.measured_matmul = None

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_memory(self) -> float | None:
        """Start a peak-memory window; returns the memory allocated now (MiB) on a GPU."""
        if not self.cuda:
            return None  # (no per-variant memory figure on a CPU, and gc.collect costs seconds there)
        gc.collect()
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated() / 2**20

    def peak_memory(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None

    def free(self) -> None:
        if self.cuda:
            gc.collect()
            self.torch.cuda.empty_cache()

    def timed(self, step, warmup: int, reps: int) -> list[float]:
        for _ in range(warmup):
            step()
        seconds = []
        for _ in range(reps):
            self.synchronize()
            started = time.perf_counter()
            step()
            self.synchronize()
            seconds.append(time.perf_counter() - started)
        return seconds

    def rates(self, seconds: list[float], tokens: int, flops: float) -> dict:
        median = statistics.median(seconds)
        return {"median_ms": median * 1e3, "min_ms": min(seconds) * 1e3, "max_ms": max(seconds) * 1e3,
                "all_ms": [round(s * 1e3, 3) for s in seconds], "tokens_per_step": tokens,
                "tokens_per_s": tokens / median, "model_flops_per_step": flops,
                "mfu": flops / median / self.peak if self.peak else None,
                "mfu_of_measured_matmul": flops / median / self.measured_matmul if self.measured_matmul else None}


class Budget:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise OutOfTime(f"the section's budget of {self.seconds:g} s was spent before {what}")


def run_parts(results: dict, parts: list, budget: Budget, save) -> None:
    """Run (name, fn) parts in order, each result saved as it comes; past the budget the rest are
    recorded as not run, and a part that fails records its error (the section is then 'partial')."""
    for name, fn in parts:
        try:
            budget.check(name)
            results[name] = fn()
        except (OutOfTime, Skip) as e:
            results[name] = {"skipped": str(e)}
        except Exception as e:  # noqa: BLE001 (one variant's failure must not lose the others)
            results[name] = {"failed": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        save()


# --- sections ---------------------------------------------------------------------------------------------

def section_machine(ctx: Context, results: dict, budget: Budget) -> None:
    from importlib.metadata import PackageNotFoundError, version

    torch = ctx.torch
    results["python"] = platform.python_version()
    results["platform"] = platform.platform()
    results["cpu_count"] = os.cpu_count()
    for package in ("torch", "transformers", "peft", "accelerate", "deepspeed", "lm_eval", "datasets", "evaluate",
                    "numpy", "pandas", "pyarrow", "fsspec", "huggingface_hub", "tokenizers", "safetensors"):
        try:
            results[package] = version(package)
        except PackageNotFoundError:
            results[package] = None
    results["cuda_available"] = torch.cuda.is_available()
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        results.update(gpu=torch.cuda.get_device_name(), gpu_memory_mib=props.total_memory / 2**20,
                       multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                       torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=False)
            results["nvidia_smi"] = smi.stdout.strip()
        ctx.peak = next((peak for key, peak in PEAK_BF16 if key in results["gpu"]), None)
    results["peak_flops_assumed"] = ctx.peak
    results["peak_source"] = ("dense bf16 from the vendor datasheet for this GPU name" if ctx.peak else
                              "none: no known dense bf16 peak for this device; MFU is not reported")
    n = ctx.profile.matmul_n
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=ctx.profile.device)
    b = torch.randn(n, n, dtype=dtype, device=ctx.profile.device)
    seconds = ctx.timed(lambda: a @ b, warmup=3, reps=10)
    rate = 2 * n**3 / statistics.median(seconds)
    results["matmul"] = {"n": n, "dtype": str(dtype).removeprefix("torch."), "median_ms": statistics.median(seconds) * 1e3,
                         "flops_per_s": rate}
    if ctx.cuda:
        ctx.measured_matmul = rate
    a = b = None  # freed before the next section
    ctx.free()


def _examples(profile: Profile, vocab: int) -> list[dict]:
    from step_cost import random_examples

    return random_examples(profile.grad_accum * profile.batch, profile.seq, vocab)


def _micro_batches(profile: Profile, examples: list[dict]) -> list[dict]:
    from kdgrid.training.batches import Collator, ExampleDataset

    data, collate = ExampleDataset(examples), Collator(pad_token_id=EOS_ID)
    return [collate([data[i] for i in range(start, start + profile.batch)])
            for start in range(0, len(examples), profile.batch)]


def _train_config(ctx: Context, cell: str, finetune: str, teacher: str | None = None, cache: str | None = None,
                  zero_stage: int = 0, **extra):
    from kdgrid.training.config import TrainConfig

    p = ctx.profile
    common = {"model": p.student, "data": str(ctx.workdir / "unused.json"), "out": str(ctx.workdir / cell),
              "finetune": finetune, "micro_batch_size": p.batch, "grad_accum": p.grad_accum, "cutoff": max(8, p.seq),
              "precision": p.precision, "cell": cell, "zero_stage": zero_stage, **extra}
    if teacher is None and cache is None:
        return TrainConfig(mode="sft", **common)
    return TrainConfig(mode="distill", method="fkl", temperature=1.0, teacher=teacher, teacher_cache=cache, **common)


def measure_train_step(ctx: Context, cfg, teacher=None, examples=None, batches=None, teacher_name=None) -> dict:
    """One variant: a fresh student, a KDTrainer as `kdgrid train` sets it up, timed optimizer steps."""
    from step_cost import make_trainer, optimizer_step

    p = ctx.profile
    start_mib = ctx.reset_memory()
    student = build_model(p.student, student_dtype(p.precision, cfg.finetune), p.device)
    n_flops = flops_per_token(student, p.seq, cfg.finetune)
    trainer = make_trainer(cfg, student, ctx.workdir, p.precision, teacher=teacher, examples=examples)
    resident = ctx.torch.cuda.memory_allocated() / 2**20 if ctx.cuda else None

    def step():
        for batch in batches:
            trainer.training_step(trainer.model, dict(batch))
        optimizer_step(trainer)

    seconds = ctx.timed(step, p.warmup, p.reps)
    tokens = p.grad_accum * p.batch * p.seq
    if teacher is not None and cfg.teacher_source == "model":
        n_flops += flops_per_token(teacher, p.seq, "forward")
    row = {"finetune": cfg.finetune, "teacher_source": cfg.teacher_source, "teacher": teacher_name,
           "fused_loss": getattr(cfg, "fused_loss", False),
           **ctx.rates(seconds, tokens, n_flops * tokens), "micro_batches_per_step": p.grad_accum,
           "memory_before_mib": start_mib, "memory_models_resident_mib": resident, "peak_memory_mib": ctx.peak_memory(),
           "trainable_params": sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)}
    trainer = student = None  # freed before the next variant
    ctx.free()
    return row


def section_train_steps(ctx: Context, results: dict, budget: Budget) -> None:
    from kdgrid.teacher_cache import compute_teacher_outputs
    from kdgrid.training.model_io import torch_dtype

    p = ctx.profile
    student_vocab = MODEL_SHAPES[p.student][5]
    results["setup"] = {"student": p.student, "teachers": list(p.teachers), "batch": p.batch, "seq": p.seq,
                        "grad_accum": p.grad_accum, "tokens_per_optimizer_step": p.grad_accum * p.batch * p.seq,
                        "warmup_steps": p.warmup, "timed_steps": p.reps, "precision": p.precision, "method": "fkl",
                        "temperature": 1.0, "top_k": p.top_k, "tail_samples": p.tail_samples,
                        "step": "grad_accum x KDTrainer.training_step, then clip 1.0 + AdamW + zero_grad",
                        "flops_formula": "student (6 N full | 4 N LoRA) + 12 L d T, teacher online 2 N + 4 L d T "
                                         "per token; N = Linear weights incl. the output layer"}
    examples = _examples(p, student_vocab)
    batches = _micro_batches(p, examples)
    parts = [(f"sft_{finetune}", lambda ft=finetune: measure_train_step(
        ctx, _train_config(ctx, f"sft-{ft}", ft), examples=examples, batches=batches)) for finetune in ("lora", "full")]
    for teacher_name in p.teachers:
        teacher_vocab = MODEL_SHAPES[teacher_name][5]
        examples = _examples(p, min(student_vocab, teacher_vocab))
        batches = _micro_batches(p, examples)
        state: dict = {}

        def build_teacher(teacher_name=teacher_name, examples=examples, teacher_vocab=teacher_vocab, state=state):
            ctx.reset_memory()
            started = time.perf_counter()
            teacher = build_model(teacher_name, torch_dtype(p.precision), p.device)
            teacher.requires_grad_(False)  # as kdgrid.training.model_io.load_teacher
            built = time.perf_counter() - started
            ctx.synchronize()
            started = time.perf_counter()
            cache = compute_teacher_outputs(teacher, [e["input_ids"] for e in examples], p.top_k, [1.0],
                                            batch_size=p.batch, device=p.device,
                                            widths=sorted({min(student_vocab, teacher_vocab), teacher_vocab}),
                                            tail_samples=p.tail_samples)
            ctx.synchronize()
            cache_s = time.perf_counter() - started
            path = ctx.workdir / f"cache-{teacher_name}.pt"
            cache.save(path)
            state.update(teacher=teacher, cache=str(path))
            return {"params": sum(x.numel() for x in teacher.parameters()), "build_s": built,
                    "cache_build_s": cache_s, "cache_tokens_per_s": len(examples) * p.seq / cache_s,
                    "cache_file_mib": path.stat().st_size / 2**20, "peak_memory_mib": ctx.peak_memory()}

        def online(finetune, teacher_name=teacher_name, examples=examples, batches=batches, state=state):
            if "teacher" not in state:
                raise Skip(f"teacher {teacher_name} was not built")
            cfg = _train_config(ctx, f"kd-online-{finetune}-{teacher_name}", finetune, teacher=teacher_name)
            return measure_train_step(ctx, cfg, teacher=state["teacher"], examples=examples, batches=batches,
                                      teacher_name=teacher_name)

        def drop_teacher(state=state):
            state.pop("teacher", None)
            ctx.free()
            return {"freed": True}

        def cached(finetune, teacher_name=teacher_name, examples=examples, batches=batches, state=state):
            if "cache" not in state:
                raise Skip(f"no cache of teacher {teacher_name}")
            cfg = _train_config(ctx, f"kd-cache-{finetune}-{teacher_name}", finetune, teacher=None, cache=state["cache"])
            return measure_train_step(ctx, cfg, examples=examples, batches=batches, teacher_name=teacher_name)

        parts += [(f"teacher_{teacher_name}", build_teacher),
                  *[(f"kd_online_{ft}_{teacher_name}", lambda ft=ft, f=online: f(ft)) for ft in ("lora", "full")],
                  (f"free_{teacher_name}", drop_teacher),
                  *[(f"kd_cache_{ft}_{teacher_name}", lambda ft=ft, f=cached: f(ft)) for ft in ("lora", "full")]]
    run_parts(results, parts, budget, ctx.save)
    for key in [k for k in results if k.startswith("free_")]:
        del results[key]
    # the cached KD step against the SFT step (issue 7's goal <= 1.15x), per fine-tuning
    ratios = {}
    for finetune in ("lora", "full"):
        sft = results.get(f"sft_{finetune}", {}).get("median_ms")
        for teacher_name in p.teachers:
            for source in ("cache", "online"):
                kd = results.get(f"kd_{source}_{finetune}_{teacher_name}", {}).get("median_ms")
                if sft and kd:
                    ratios[f"kd_{source}_{finetune}_{teacher_name}_over_sft"] = kd / sft
    results["ratios"] = ratios


def _linear_kd_loss():
    from kdgrid import losses

    fn = getattr(losses, "linear_kd_loss", None)
    if fn is None:
        raise Skip("kdgrid.losses.linear_kd_loss is not in this kdgrid (the fused loss, issue 21 part 1, is "
                   "not merged here): nothing to compare with the logits path")
    return fn


def section_fused_loss(ctx: Context, results: dict, budget: Budget) -> None:
    """(a) The loss alone at the issue's sizes (float32, output layers frozen): linear_kd_loss against
    kd_loss on materialised logits, with the teacher as its (hidden, head) pair, as logits, and as the
    cache's SparseTeacher; every method. (b) Training steps through KDTrainer with TrainConfig.fused_loss
    on (the default, what train_steps measures) and off (the logits path), LoRA, the first teacher."""
    linear_kd_loss = _linear_kd_loss()
    torch = ctx.torch
    from kdgrid.losses import kd_loss
    from kdgrid.teacher_cache import compute_teacher_outputs

    p = ctx.profile
    batch, seq, h_student, h_teacher, vocab = p.fused_shape
    device = p.device
    g = torch.Generator(device=device).manual_seed(0)
    results["setup"] = {"batch": batch, "seq": seq, "student_hidden": h_student, "teacher_hidden": h_teacher,
                        "vocab": vocab, "dtype": "float32", "masked_prompt_tokens": p.fused_masked_prompt,
                        "output_layers": "frozen", "temperature": 1.0, "reps": p.fused_reps,
                        "top_k": p.top_k, "tail_samples": p.tail_samples,
                        "logits_path": "student logits = hidden @ W.T materialised, then kdgrid.losses.kd_loss "
                                       "(with the teacher's logits, or the SparseTeacher)",
                        "fused_path": "kdgrid.losses.linear_kd_loss(hidden, W, teacher, mask, method)",
                        "peak_added": "peak GPU memory of one forward + backward above what was allocated before"}
    weight = torch.randn(vocab, h_student, device=device, generator=g) * 0.02
    hidden0 = torch.randn(batch, seq, h_student, device=device, generator=g)
    t_weight = torch.randn(vocab, h_teacher, device=device, generator=g) * 0.02
    t_hidden = torch.randn(batch, seq, h_teacher, device=device, generator=g)
    mask = torch.ones(batch, seq, device=device)
    mask[:, : p.fused_masked_prompt] = 0
    with torch.no_grad():
        t_logits = t_hidden @ t_weight.T

    class RowsOfTeacher(torch.nn.Module):  # example i (its ids all i) -> row i of the teacher's logits
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": t_logits[input_ids[:, 0]]})

    cache = compute_teacher_outputs(RowsOfTeacher(), [[i] * seq for i in range(batch)], p.top_k, [1.0],
                                    batch_size=batch, device=device, tail_samples=p.tail_samples)
    sparse = cache.batch(list(range(batch)), seq, 1.0, device, width=vocab)
    teachers = {"pair": ((t_hidden, t_weight), t_logits), "logits": (t_logits, t_logits), "sparse": (sparse, sparse)}

    def run(path: str, method: str, teacher_form: str):
        hidden = hidden0.clone().requires_grad_(True)
        fused_teacher, logits_teacher = teachers[teacher_form]
        if path == "logits":
            loss = kd_loss(method, hidden @ weight.T, logits_teacher, mask)
        else:
            loss = linear_kd_loss(hidden, weight, fused_teacher, mask, method)
        loss.backward()
        return loss.detach(), hidden.grad

    def compare(method: str, teacher_form: str) -> dict:
        row = {}
        outputs = {}
        for path in ("logits", "fused"):
            before = ctx.reset_memory()
            outputs[path] = run(path, method, teacher_form)
            row[f"{path}_peak_added_mib"] = ctx.peak_memory() - before if ctx.cuda else None
            seconds = ctx.timed(lambda path=path: run(path, method, teacher_form), warmup=1, reps=p.fused_reps)
            row[f"{path}_median_ms"] = statistics.median(seconds) * 1e3
        (l_ref, g_ref), (l_fused, g_fused) = outputs["logits"], outputs["fused"]
        row["loss_logits"], row["loss_fused"] = float(l_ref), float(l_fused)
        row["loss_rel_diff"] = abs(float(l_fused - l_ref)) / max(abs(float(l_ref)), 1e-30)
        row["grad_max_abs_diff"] = float((g_fused - g_ref).abs().max())
        row["grad_max_abs"] = float(g_ref.abs().max())
        if ctx.cuda:
            row["memory_ratio_fused_over_logits"] = row["fused_peak_added_mib"] / row["logits_peak_added_mib"]
        row["time_ratio_fused_over_logits"] = row["fused_median_ms"] / row["logits_median_ms"]
        return row

    parts = [(f"loss_{method}_teacher_{form}", lambda m=method, f=form: compare(m, f))
             for form in ("pair", "sparse", "logits") for method in KD_METHODS]
    run_parts(results, parts, budget, ctx.save)
    weight = hidden0 = t_weight = t_hidden = t_logits = sparse = cache = teachers = None  # freed for (b)
    ctx.free()

    from kdgrid.training.config import TrainConfig

    if not hasattr(TrainConfig, "fused_loss"):
        results["trainer"] = {"skipped": "TrainConfig has no fused_loss switch in this kdgrid"}
        return
    run_parts(results, _trainer_fused_parts(ctx), budget, ctx.save)
    results.pop("trainer_free_teacher", None)


def _trainer_fused_parts(ctx: Context) -> list:
    """KDTrainer steps with the fused loss on and off, same student, batch and (first) teacher."""
    from kdgrid.teacher_cache import compute_teacher_outputs
    from kdgrid.training.model_io import torch_dtype

    p = ctx.profile
    teacher_name = p.teachers[0]
    student_vocab, teacher_vocab = MODEL_SHAPES[p.student][5], MODEL_SHAPES[teacher_name][5]
    examples = _examples(p, min(student_vocab, teacher_vocab))
    batches = _micro_batches(p, examples)
    state: dict = {}

    def build_teacher():
        teacher = build_model(teacher_name, torch_dtype(p.precision), p.device)
        teacher.requires_grad_(False)
        cache = compute_teacher_outputs(teacher, [e["input_ids"] for e in examples], p.top_k, [1.0],
                                        batch_size=p.batch, device=p.device,
                                        widths=sorted({min(student_vocab, teacher_vocab), teacher_vocab}),
                                        tail_samples=p.tail_samples)
        path = ctx.workdir / f"fused-cache-{teacher_name}.pt"
        cache.save(path)
        state.update(teacher=teacher, cache=str(path))
        return {"teacher": teacher_name, "params": sum(x.numel() for x in teacher.parameters())}

    def pair(variant: str) -> dict:
        if "cache" not in state:
            raise Skip(f"teacher {teacher_name} was not built")
        rows = {}
        for fused in (False, True):
            cell = f"fused-{variant}-{'on' if fused else 'off'}"
            if variant == "sft":
                cfg = _train_config(ctx, cell, "lora", fused_loss=fused)
            elif variant == "kd_online":
                cfg = _train_config(ctx, cell, "lora", teacher=teacher_name, fused_loss=fused)
            else:
                cfg = _train_config(ctx, cell, "lora", cache=state["cache"], fused_loss=fused)
            rows["fused" if fused else "logits"] = measure_train_step(
                ctx, cfg, teacher=state.get("teacher") if variant == "kd_online" else None, examples=examples,
                batches=batches, teacher_name=None if variant == "sft" else teacher_name)
        logits, fused_row = rows["logits"], rows["fused"]
        out = {"finetune": "lora", "teacher": None if variant == "sft" else teacher_name, **rows,
               "time_ratio_fused_over_logits": fused_row["median_ms"] / logits["median_ms"]}
        if ctx.cuda:
            out["peak_memory_ratio_fused_over_logits"] = fused_row["peak_memory_mib"] / logits["peak_memory_mib"]
        return out

    def drop_teacher():
        state.pop("teacher", None)
        ctx.free()
        return {"freed": True}

    return [("trainer_teacher", build_teacher), ("trainer_kd_online_lora", lambda: pair("kd_online")),
            ("trainer_free_teacher", drop_teacher), ("trainer_kd_cache_lora", lambda: pair("kd_cache")),
            ("trainer_sft_lora", lambda: pair("sft"))]


def section_zero3(ctx: Context, results: dict, budget: Budget) -> None:
    """In a process of its own (DeepSpeed's global state, the distributed environment of one rank, and a
    hard time limit): the worker below, `--zero3-worker`."""
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # any import failure is the reason to skip
        raise Skip(f"deepspeed does not import here ({type(e).__name__}: {e})") from e
    out = ctx.workdir / "zero3.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    command = [sys.executable, "-u", __file__, "--zero3-worker", str(out), "--profile-name", ctx.profile_name,
               "--workdir", str(ctx.workdir)]
    timeout = max(5.0, budget.left())
    log = ctx.workdir / "zero3.log"
    with open(log, "w") as f:  # its own session, so that a timeout ends its children (compilers) too
        worker = subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # past the budget, or this process stopped (Stopped): the worker must not outlive it
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    tail = log.read_text(errors="replace")[-3000:]
    results.update(json.loads(out.read_text()) if out.is_file() else {})
    if code is None:
        raise OutOfTime(f"the ZeRO-3 worker ran past the section's budget ({timeout:.0f} s) and was killed; "
                        f"its output ended:\n{tail}")
    results["worker_exit_code"] = code
    if code != 0:
        raise RuntimeError(f"the ZeRO-3 worker failed (exit {code}); its output ended:\n{tail}")


class _StepTimer:
    """A TrainerCallback: wall time of each optimizer step (synchronised on a GPU)."""

    def __init__(self, synchronize):
        self.synchronize, self.seconds, self._start = synchronize, [], None

    def __getattr__(self, name):  # every other callback event: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kwargs):
        self.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def zero3_worker(out: Path, profile_name: str, workdir: Path) -> int:
    """One ZeRO-3 training run of the student with the teacher online and sharded, as `kdgrid train
    --zero-stage 3` runs it: TrainingArguments with kdgrid's DeepSpeed config first (so the models are
    built partitioned), KDTrainer (whose _prepare_teacher shards the teacher), trainer.train()."""
    import torch

    from kdgrid.io import write_json

    p = PROFILES[profile_name]
    results: dict = {}
    try:
        import deepspeed
    except Exception as e:  # noqa: BLE001 (any import failure is the reason to skip)
        write_json(out, {"skipped": f"deepspeed does not import ({type(e).__name__}: {e})"})
        return 0
    from kdgrid.training.batches import Collator, ExampleDataset
    from kdgrid.training.engine import training_arguments
    from kdgrid.training.model_io import torch_dtype
    from kdgrid.training.trainer import KDTrainer

    ctx = Context(profile_name, workdir, lambda: write_json(out, results))
    cfg = _train_config(ctx, "zero3-kd-online-full", "full", teacher=p.zero3_teacher, zero_stage=3,
                        max_steps=p.warmup + p.reps, warmup_steps=0, save_steps=10**6)
    cfg.validate()
    args = training_arguments(cfg, p.precision, workdir / "zero3-checkpoints")
    from transformers.trainer_utils import SaveStrategy

    args.save_strategy = SaveStrategy.NO  # the Trainer would save a checkpoint after the last step: not what is measured
    _ = args.device  # the one-rank process group
    if not ctx.cuda:
        # DeepSpeed's CPU accelerator compiles a shared-memory all-reduce for several ranks on one host
        # (minutes on a busy machine, once per machine); one rank never uses it.
        import importlib

        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed()
    start = ctx.reset_memory()
    device = None  # ZeRO-3 places the partitions
    student = build_model(p.student, student_dtype(p.precision, "full", zero_stage=3), device)
    student.config.use_cache = False
    n_flops = flops_per_token(student, p.seq, "full")
    teacher = build_model(p.zero3_teacher, torch_dtype(p.precision), device)
    teacher.requires_grad_(False)
    n_flops += flops_per_token(teacher, p.seq, "forward")
    vocab = min(MODEL_SHAPES[p.student][5], MODEL_SHAPES[p.zero3_teacher][5])
    from step_cost import random_examples

    examples = random_examples(cfg.max_steps * p.grad_accum * p.batch, p.seq, vocab)
    timer = _StepTimer(ctx.synchronize)
    trainer = KDTrainer(model=student, args=args, train_dataset=ExampleDataset(examples),
                        data_collator=Collator(EOS_ID), callbacks=[timer], cfg=cfg, teacher=teacher,
                        teacher_cache=None, student_width=MODEL_SHAPES[p.student][5], pad_token_id=EOS_ID,
                        eos_token_id=EOS_ID)
    results["setup"] = {"student": p.student, "teacher": p.zero3_teacher, "finetune": "full", "zero_stage": 3,
                        "world_size": args.world_size, "teacher_sharded": type(trainer.teacher).__name__,
                        "deepspeed": deepspeed.__version__, "steps": cfg.max_steps, "warmup_steps_dropped": p.warmup,
                        "run": "KDTrainer.train (kdgrid's DeepSpeed config, teacher by zero3_inference_engine)"}
    ctx.save()
    started = time.perf_counter()
    trainer.train()
    results["train_wall_s"] = time.perf_counter() - started
    tokens = p.grad_accum * p.batch * p.seq
    seconds = timer.seconds[p.warmup:] or timer.seconds
    results["kd_online_full"] = {**ctx.rates(seconds, tokens, n_flops * tokens), "memory_before_mib": start,
                                 "peak_memory_mib": ctx.peak_memory(),
                                 "all_steps_ms": [round(s * 1e3, 3) for s in timer.seconds]}
    ctx.save()
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()
    return 0


def section_generation(ctx: Context, results: dict, budget: Budget) -> None:
    torch = ctx.torch
    from kdgrid.training.model_io import torch_dtype

    p = ctx.profile
    dtype = torch_dtype(p.precision)
    model = build_model(p.student, dtype, p.device)
    model.config.use_cache = True
    results["setup"] = {"model": p.student, "batch": p.gen_batch, "max_new_tokens": p.gen_new_tokens,
                        "decoding": "greedy", "dtype": p.precision}

    def hf_generate() -> dict:
        """HF generate on a left-padded batch, greedy, KV cache on: the call lm-eval's HFLM makes, without
        its stop-sequence check, every row decoding the full length."""
        g = torch.Generator().manual_seed(0)
        vocab = model.config.vocab_size
        lengths = [p.gen_prompt - (i % 4) * (p.gen_prompt // 8) for i in range(p.gen_batch)]
        width = max(lengths)
        ids = torch.full((p.gen_batch, width), EOS_ID, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            ids[row, width - n:] = torch.randint(1, vocab, (n,), generator=g)
            attention[row, width - n:] = 1
        ids, attention = ids.to(p.device), attention.to(p.device)

        def generate(new_tokens):
            with torch.no_grad():
                return model.generate(input_ids=ids, attention_mask=attention, max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                                      pad_token_id=EOS_ID)

        generate(4)  # warm-up
        ctx.reset_memory()
        ctx.synchronize()
        started = time.perf_counter()
        out = generate(p.gen_new_tokens)
        ctx.synchronize()
        seconds = time.perf_counter() - started
        new = out.shape[1] - width
        return {"prompt_tokens": lengths, "new_tokens_per_row": new, "seconds": seconds,
                "new_tokens_per_s": p.gen_batch * new / seconds, "ms_per_decode_step": seconds / new * 1e3,
                "peak_memory_mib": ctx.peak_memory(),
                "note": "min_new_tokens = max_new_tokens: every row decodes the full length"}

    def lm_eval_path() -> dict:
        """kdgrid.evaluation.runner.evaluate on a saved copy of the model, through lm-eval's HFLM."""
        try:
            import lm_eval  # noqa: F401
        except Exception as e:
            raise Skip(f"lm_eval does not import here ({type(e).__name__}: {e})") from e
        import random

        from kdgrid.evaluation import runner
        from kdgrid.evaluation.lmeval_tasks import GenerationSettings
        from kdgrid.io import write_json
        from kdgrid.synthetic import syn_arith
        from kdgrid.tokenizer import build_tokenizer

        folder, data = ctx.workdir / "eval-model", ctx.workdir / "eval-data"
        model.save_pretrained(folder, safe_serialization=True)
        build_tokenizer().save_pretrained(folder)
        rng = random.Random(0)
        write_json(data / "test" / "syn_arith.json", [syn_arith(rng) for _ in range(p.gen_batch)])
        lm = runner._load_hf_model(str(folder), p.device, p.gen_batch, {"bf16": "bfloat16"}.get(p.precision, "float32"))
        calls = []
        original = lm._model_generate

        def counted(context, max_length, stop, **kwargs):
            ctx.synchronize()
            started = time.perf_counter()
            out = original(context, max_length, stop, **kwargs)
            ctx.synchronize()
            new = out[:, context.shape[1]:]
            calls.append((time.perf_counter() - started, context.shape[0], int((new != EOS_ID).sum())))
            return out

        lm._model_generate = counted
        ctx.reset_memory()
        started = time.perf_counter()
        scores = runner.evaluate(lm, data, "math", ctx.workdir / "eval-out", tasks=["syn_arith"],
                                 settings=GenerationSettings(max_new_tokens=p.gen_new_tokens), batch_size=p.gen_batch)
        wall = time.perf_counter() - started
        gen_s = sum(c[0] for c in calls)
        generated = sum(c[2] for c in calls)
        return {"items": p.gen_batch, "evaluate_wall_s": wall, "generate_calls": len(calls),
                "generate_batch_sizes": [c[1] for c in calls], "generate_s": gen_s, "generated_tokens": generated,
                "generated_tokens_per_s": generated / gen_s if gen_s else None, "items_per_s": p.gen_batch / wall,
                "peak_memory_mib": ctx.peak_memory(), "lm_eval": scores["settings"]["lm_eval"],
                "note": "generated tokens = non-eos ids after the prompt; lm-eval stops a row at its stop "
                        "sequences or max_gen_toks, so rows of a random model may end early"}

    run_parts(results, [("hf_generate", hf_generate), ("lm_eval_evaluate", lm_eval_path)], budget, ctx.save)
    model = None  # freed before the next section
    ctx.free()


SECTION_FUNCTIONS = {"machine": section_machine, "train_steps": section_train_steps, "fused_loss": section_fused_loss,
                     "zero3": section_zero3, "generation": section_generation}


# --- the report ---------------------------------------------------------------------------------------------

def run(profile_name: str, out: Path, sections: list[str], budgets: dict) -> dict:
    import torch

    from kdgrid.io import write_json

    profile = PROFILES[profile_name]
    report = {"benchmark": "gpu_bench", "profile": profile_name,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "settings": {**asdict(profile), "budgets": {**profile.budgets, **budgets}},
              "model_shapes": {name: dict(zip(("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "tied"),
                                              MODEL_SHAPES[name]))
                               for name in {profile.student, *profile.teachers, profile.zero3_teacher}},
              "sections": {name: {"status": "not run", "reason": "not reached yet"} for name in sections}}

    def save() -> None:
        write_json(out, report)

    if profile.device == "cuda" and not torch.cuda.is_available():
        for name in sections:
            report["sections"][name] = {"status": "skipped", "reason": "no CUDA device is visible (use --tiny on a CPU)"}
        save()
        return report
    if profile.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(1)

    def stop(signum, frame):
        raise Stopped(f"stopped by signal {signum} (the wrapper's time limit)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with tempfile.TemporaryDirectory(prefix="kdgrid-gpu-bench-") as tmp:
            ctx = Context(profile_name, Path(tmp), save)
            stopped = None
            for name in sections:
                section = report["sections"][name] = {"status": "running", "results": {}}
                seconds = float({**profile.budgets, **budgets}[name])
                section["budget_s"] = seconds
                if stopped:
                    section.update(status="not run", reason=stopped)
                    del section["results"]
                    continue
                save()
                started = time.perf_counter()
                try:
                    SECTION_FUNCTIONS[name](ctx, section["results"], Budget(seconds))
                    parts = [v for v in section["results"].values() if isinstance(v, dict)]
                    section["status"] = "partial" if any("skipped" in v or "failed" in v for v in parts) else "done"
                except (Skip, OutOfTime) as e:
                    section.update(status="skipped", reason=str(e))
                except Stopped as e:
                    section.update(status="stopped", reason=str(e))
                    stopped = f"not reached: {e}"
                except Exception as e:  # noqa: BLE001 (a failing section must not lose the others)
                    section.update(status="failed", reason=f"{type(e).__name__}: {e}",
                                   traceback=traceback.format_exc()[-4000:])
                section["seconds"] = time.perf_counter() - started
                ctx.free()
                save()
                print(f"gpu_bench: {name}: {section['status']} in {section['seconds']:.1f} s"
                      + (f" ({section['reason'][:300]})" if section.get("reason") else ""), flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    save()
    return report


def summary_lines(report: dict) -> list[str]:
    """A few lines for the log: the headline figure of each section."""
    lines = []
    for name, section in report["sections"].items():
        results = section.get("results", {})
        figures = []
        for key, row in results.items():
            if isinstance(row, dict) and "tokens_per_s" in row:
                mfu = f", MFU {row['mfu']:.1%}" if row.get("mfu") else ""
                mem = f", peak {row['peak_memory_mib']:,.0f} MiB" if row.get("peak_memory_mib") else ""
                figures.append(f"{key}: {row['tokens_per_s']:,.0f} tokens/s{mfu}{mem}")
            elif isinstance(row, dict) and "new_tokens_per_s" in row:
                figures.append(f"{key}: {row['new_tokens_per_s']:,.0f} new tokens/s")
            elif isinstance(row, dict) and "generated_tokens_per_s" in row and row["generated_tokens_per_s"]:
                figures.append(f"{key}: {row['generated_tokens_per_s']:,.0f} generated tokens/s")
            elif isinstance(row, dict) and "time_ratio_fused_over_logits" in row:
                ratio = row.get("memory_ratio_fused_over_logits")
                figures.append(f"{key}: time x{row['time_ratio_fused_over_logits']:.2f}"
                               + (f", memory x{ratio:.2f}" if ratio is not None else ""))
            elif isinstance(row, dict) and "skipped" in row:
                figures.append(f"{key}: skipped")
        lines.append(f"[{name}] {section['status']}" + (f": {section['reason'][:200]}" if section.get("reason") else ""))
        lines += [f"    {f}" for f in figures]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the same sections on a CPU, tiny shapes (seconds)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default $OUT/gpu_bench.json when OUT is set, else benchmarks/out/gpu_bench.json)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    parser.add_argument("--budget", action="append", default=[], metavar="SECTION=SECONDS",
                        help="override a section's time budget")
    parser.add_argument("--zero3-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile-name", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.zero3_worker:
        return zero3_worker(Path(args.zero3_worker), args.profile_name, Path(args.workdir))
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    if "machine" not in sections:
        sections.insert(0, "machine")  # the MFU needs its peak
    budgets = {}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in SECTIONS or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--budget {item!r}: expected SECTION=SECONDS with SECTION one of {', '.join(SECTIONS)}")
        budgets[name] = float(seconds)
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT")
                                           else Path("benchmarks/out/gpu_bench.json"))
    report = run("tiny" if args.tiny else "h200", out, sections, budgets)
    print("\n".join(summary_lines(report)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
