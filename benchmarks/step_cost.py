"""Benchmark 1 (issue 7): the cost of one KD training step against one SFT step.

The same student (same initial weights, LoRA as in the study) and the same batch, four ways:
  (a) sft       our trainer's SFT step: KDTrainer.training_step (forward, cross-entropy, backward);
  (b) kd_cache  our KD step reading the teacher-output cache: a real `kdgrid.teacher_cache` file
                computed for these examples, opened as `kdgrid train` opens it;
  (c) kd_online our KD step with the teacher run online (KDTrainer.teacher_outputs);
  (d) study     a plain re-implementation of the study's trainer step: teacher forward every step,
                full float32 log-softmax / softmax tensors over the vocabulary, F.kl_div, * T^2.
Every variant is followed by the same optimizer step (gradient clipping at 1.0, AdamW from
`trainer.create_optimizer()`, zero_grad). (a)-(c) go through `KDTrainer.training_step`, which also
divides the loss by the accumulation steps as the Trainer does.

The variants are interleaved (one step of each per repetition) so that load changes on a shared
machine hit all of them alike; per variant we report the median and interquartile range of the
step time, tokens/s, and on a GPU the model FLOPs utilisation.

    python benchmarks/step_cost.py [--student-config tiny-s] [--teacher-config tiny-l] [--batch 4] [--seq 256]
        [--reps 20] [--warmup 3] [--threads N] [--device cpu|cuda] [--dtype fp32|bf16] [--top-k 64]
        [--finetune lora|full] [--out benchmarks/out/step_cost.json]

Model configs: the tiny models (`tiny-xs` ... `tiny-l`), CPU-sized Qwen2 shapes with a 32k vocabulary
(`cpu-s`, `cpu-l`) and the real Qwen2.5 shapes (`qwen2.5-0.5b` ... `qwen2.5-14b`), all initialised
randomly from a config: nothing is downloaded. Sequences are random token ids of exactly `--seq`
tokens (no padding), every token after the first a target (the study's token scope).

Goals (issue 7): (b) within 1.15x of (a); (b) at least 2x faster than (d) when the teacher has 4x or
more the student's parameters.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "sft": "(a) SFT step",
    "kd_cache": "(b) KD, teacher cache",
    "kd_online": "(c) KD, teacher online",
    "study": "(d) study's KD step",
}
GOAL_CACHE_OVER_SFT = 1.15
GOAL_STUDY_OVER_CACHE = 2.0
GOAL_MIN_TEACHER_RATIO = 4.0

# Qwen2 shapes: hidden, layers, attention heads, key-value heads, MLP width, vocabulary, tied embeddings.
QWEN2_SHAPES = {
    "cpu-s": (256, 4, 4, 2, 1024, 32_000, True),
    "cpu-l": (512, 8, 8, 2, 2048, 32_000, False),
    "qwen2.5-0.5b": (896, 24, 14, 2, 4864, 151_936, True),
    "qwen2.5-1.5b": (1536, 28, 12, 2, 8960, 151_936, True),
    "qwen2.5-3b": (2048, 36, 16, 2, 11008, 151_936, True),
    "qwen2.5-7b": (3584, 28, 28, 4, 18944, 152_064, False),
    "qwen2.5-14b": (5120, 48, 40, 8, 13824, 152_064, False),
}

# Dense bf16 peak of the GPUs we may meet, FLOP/s (vendor datasheets).
PEAK_BF16 = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12)]


# --- models and data ------------------------------------------------------------------------------

def build_model(name: str, dtype, device: str):
    """A randomly initialised causal LM of a named shape, built directly on `device` in `dtype`."""
    import torch

    from kdgrid.errors import KdgridError
    from kdgrid.tiny_models import TINY_SPECS, build_tiny_model

    if name in TINY_SPECS:
        return build_tiny_model(name).to(device=device, dtype=dtype)
    if name not in QWEN2_SHAPES:
        raise KdgridError(f"unknown model config {name!r}; known: {', '.join([*TINY_SPECS, *QWEN2_SHAPES])}")
    from transformers import AutoModelForCausalLM, Qwen2Config

    hidden, layers, heads, kv_heads, mlp, vocab, tied = QWEN2_SHAPES[name]
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=mlp, tie_word_embeddings=tied,
                         max_position_embeddings=4096, use_sliding_window=False, eos_token_id=0, pad_token_id=0,
                         bos_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def matmul_params(model) -> int:
    """Parameters that take part in a matrix product per token: every Linear weight (the output layer
    included, tied or not); the input embedding is a lookup."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def random_examples(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    """Tokenised examples as `kdgrid.training.batches.tokenize_records` makes them, with random ids."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (n, seq), generator=g).tolist()
    return [{"input_ids": row, "loss_mask": [0] + [1] * (seq - 1), "prompt_len": seq // 4} for row in ids]


# --- the four steps ---------------------------------------------------------------------------------

def make_trainer(cfg, student, workdir: Path, precision: str, teacher=None, examples=None):
    """A KDTrainer set up as `kdgrid.training.engine` sets it up (arguments, LoRA, teacher, cache)."""
    from kdgrid.training.engine import open_teacher_cache, training_arguments
    from kdgrid.training.model_io import apply_lora
    from kdgrid.training.trainer import KDTrainer

    cfg.validate()
    student.config.use_cache = False
    if cfg.finetune == "lora":
        student = apply_lora(student, cfg)
    width = student.config.vocab_size
    cache = open_teacher_cache(cfg, examples, None, width) if cfg.teacher_source == "cache" else None
    args = training_arguments(cfg, precision, workdir / f"checkpoints-{cfg.cell}")
    trainer = KDTrainer(model=student, args=args, cfg=cfg, teacher=teacher if cfg.teacher_source == "model" else None,
                        teacher_cache=cache, student_width=width, pad_token_id=student.config.pad_token_id or 0,
                        eos_token_id=student.config.eos_token_id or 0)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = cfg.grad_accum  # set by the Trainer's loop otherwise
    return trainer


def study_kd_loss(student_logits, teacher_logits, mask, temperature: float):
    """The study's loss, written the obvious way: full float32 tensors over the vocabulary."""
    import torch.nn.functional as F

    width = min(student_logits.shape[-1], teacher_logits.shape[-1])
    log_q = F.log_softmax(student_logits[..., :width].float() / temperature, dim=-1)
    p = F.softmax(teacher_logits[..., :width].float() / temperature, dim=-1)
    per_token = F.kl_div(log_q, p, reduction="none").sum(-1)
    return (per_token * mask).sum() / mask.sum() * temperature**2


def study_training_step(trainer, teacher, batch: dict, temperature: float):
    """(d): student forward, teacher forward (no grad), the plain loss, backward."""
    import torch

    model = trainer.model
    model.train()
    inputs = trainer._prepare_inputs(dict(batch))
    with trainer.compute_loss_context_manager():
        student_logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        with torch.no_grad():
            teacher_logits = teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        loss = study_kd_loss(student_logits, teacher_logits, inputs["kd_mask"].float(), temperature)
    trainer.accelerator.backward(loss / trainer.cfg.grad_accum)
    return loss.detach()


def optimizer_step(trainer) -> None:
    trainer.accelerator.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


# --- timing and reporting -----------------------------------------------------------------------------

def time_steps(steps: dict, warmup: int, reps: int, synchronize) -> dict[str, list[float]]:
    """Seconds per step of each variant, the variants interleaved within every repetition."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize()
    seconds = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            synchronize()
            started = time.perf_counter()
            step()
            synchronize()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def print_profiles(steps: dict, rows: int, device: str) -> None:
    """One more step of each variant under torch.profiler: the operators that took the most time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sort_by = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    for name, step in steps.items():
        with profile(activities=activities) as prof:
            step()
            if device == "cuda":
                torch.cuda.synchronize()
        print(f"--- profile of one step: {VARIANTS[name]}")
        print(prof.key_averages().table(sort_by=sort_by, row_limit=rows))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def peak_flops(device: str, dtype_name: str, override_tflops: float | None):
    if override_tflops:
        return override_tflops * 1e12
    if device != "cuda" or dtype_name != "bf16":
        return None
    import torch

    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int, load_at_start) -> dict:
    import torch
    import transformers

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": device, "load_average_at_start": list(load_at_start),
            "load_average_at_end": list(os.getloadavg())}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(result: dict) -> None:
    s = result["setup"]
    print(f"step cost: student {s['student']} ({s['student_params']:,} params) vs teacher {s['teacher']} "
          f"({s['teacher_params']:,} params, {s['teacher_over_student_params']:.1f}x); batch {s['batch']} x "
          f"{s['seq']} tokens, {s['finetune']}, {s['dtype']} on {s['device']} ({s['threads']} threads), "
          f"top-k {s['top_k']}, {s['reps']} reps")
    has_mfu = any(r.get("mfu") is not None for r in result["rows"])
    print(f"{'variant':26} {'ms/step':>9} {'IQR ms':>15} {'tokens/s':>10} {'x SFT':>6}" + (f" {'MFU':>6}" if has_mfu else ""))
    sft_ms = result["rows"][0]["median_ms"]
    for r in result["rows"]:
        line = (f"{r['label']:26} {r['median_ms']:>9.1f} {r['q1_ms']:>7.1f}-{r['q3_ms']:<7.1f} "
                f"{r['tokens_per_s']:>10.0f} {r['median_ms'] / sft_ms:>6.2f}")
        if has_mfu:
            line += f" {r['mfu']:>6.1%}" if r.get("mfu") is not None else f" {'-':>6}"
        print(line)
    ratios, goals = result["ratios"], result["goals"]
    print(f"(b)/(a) = {ratios['kd_cache_over_sft']:.3f}  (goal <= {GOAL_CACHE_OVER_SFT}: "
          f"{'met' if goals['kd_cache_within_1.15x_of_sft'] else 'NOT met'})")
    study_goal = goals["study_at_least_2x_kd_cache"]
    verdict = "met" if study_goal else ("NOT met" if study_goal is not None else "n/a: teacher < 4x the student")
    print(f"(d)/(b) = {ratios['study_over_kd_cache']:.2f}  (goal >= {GOAL_STUDY_OVER_CACHE}: {verdict})")
    print(f"(c)/(b) = {ratios['kd_online_over_kd_cache']:.2f}  (d)/(c) = {ratios['study_over_kd_online']:.2f}")


def run(args) -> dict:
    import torch

    from kdgrid.errors import KdgridError
    from kdgrid.teacher_cache import compute_teacher_outputs
    from kdgrid.training.config import TrainConfig

    if args.device == "cuda" and not torch.cuda.is_available():
        raise KdgridError("--device cuda: no CUDA device is visible")
    if args.device == "cpu" and torch.cuda.is_available():
        raise KdgridError("--device cpu on a machine with a GPU: the trainer would still place models on it; "
                          "hide the GPU with CUDA_VISIBLE_DEVICES= to measure the CPU")
    load_at_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    precision = args.dtype
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    teacher = build_model(args.teacher_config, dtype, args.device)
    teacher.requires_grad_(False)  # as kdgrid.training.model_io.load_teacher
    students = {name: build_model(args.student_config, dtype, args.device) for name in VARIANTS}
    student_params = sum(p.numel() for p in students["sft"].parameters())
    teacher_params = sum(p.numel() for p in teacher.parameters())
    n_student, n_teacher = matmul_params(students["sft"]), matmul_params(teacher)  # before LoRA wraps the student
    student_width, teacher_width = students["sft"].config.vocab_size, teacher.config.vocab_size
    examples = random_examples(args.batch, args.seq, min(student_width, teacher_width))

    with tempfile.TemporaryDirectory(prefix="kdgrid-step-cost-") as tmp:
        workdir = Path(tmp)
        cache_path = workdir / "teacher_outputs.pt"
        started = time.perf_counter()
        cache = compute_teacher_outputs(teacher, [e["input_ids"] for e in examples], args.top_k, [args.temperature],
                                        batch_size=args.batch, device=args.device,
                                        widths=sorted({min(student_width, teacher_width), teacher_width}),
                                        tail_samples=args.tail_samples)
        cache.save(cache_path)
        cache_build_s = time.perf_counter() - started

        common = {"model": args.student_config, "data": str(cache_path), "out": str(workdir),
                  "finetune": args.finetune, "micro_batch_size": args.batch, "cutoff": max(8, args.seq),
                  "precision": precision}
        distill = {"mode": "distill", "method": "fkl", "temperature": args.temperature, "teacher": "benchmark-teacher"}
        configs = {
            "sft": TrainConfig(mode="sft", cell="sft", **common),
            "kd_cache": TrainConfig(**distill, teacher_cache=str(cache_path), cell="kd_cache", **common),
            "kd_online": TrainConfig(**distill, cell="kd_online", **common),
            "study": TrainConfig(mode="sft", cell="study", **common),  # its loss is study_kd_loss, not the trainer's
        }
        trainers = {name: make_trainer(cfg, students[name], workdir, precision, teacher=teacher, examples=examples)
                    for name, cfg in configs.items()}
        from kdgrid.training.batches import Collator, ExampleDataset

        batch = Collator(pad_token_id=0)([ExampleDataset(examples)[i] for i in range(len(examples))])

        def trainer_step(trainer):
            def step():
                trainer.training_step(trainer.model, dict(batch))
                optimizer_step(trainer)
            return step

        def study_step():
            study_training_step(trainers["study"], trainers["kd_online"].teacher, batch, args.temperature)
            optimizer_step(trainers["study"])

        teacher_source = {name: "cache" if t.teacher_cache is not None else "model" if t.teacher is not None else "none"
                          for name, t in trainers.items()}
        teacher_source["study"] = "model"
        steps = {name: trainer_step(trainers[name]) for name in ("sft", "kd_cache", "kd_online")}
        steps["study"] = study_step
        seconds = time_steps(steps, args.warmup, args.reps, synchronize)
        if args.profile:
            print_profiles(steps, args.profile, args.device)

    tokens = args.batch * args.seq

    def attention_flops(model, factor: int) -> float:
        c = model.config
        return factor * c.num_hidden_layers * c.hidden_size * args.seq

    student_flops = ((4 if args.finetune == "lora" else 6) * n_student + attention_flops(students["sft"], 12)) * tokens
    teacher_flops = (2 * n_teacher + attention_flops(teacher, 4)) * tokens
    peak = peak_flops(args.device, args.dtype, args.peak_tflops)
    rows = []
    for name, label in VARIANTS.items():
        q1, median, q3 = quartiles(seconds[name])
        flops = student_flops + (teacher_flops if name in ("kd_online", "study") else 0.0)
        rows.append({"variant": name, "label": label, "teacher_source": teacher_source[name], "median_ms": median * 1e3, "q1_ms": q1 * 1e3, "q3_ms": q3 * 1e3,
                     "iqr_ms": (q3 - q1) * 1e3, "tokens_per_s": tokens / median, "model_flops_per_step": flops,
                     "mfu": flops / median / peak if peak else None,
                     "all_ms": [round(s * 1e3, 3) for s in seconds[name]]})
    median = {r["variant"]: r["median_ms"] for r in rows}
    ratios = {
        "kd_cache_over_sft": median["kd_cache"] / median["sft"],
        "kd_online_over_sft": median["kd_online"] / median["sft"],
        "study_over_sft": median["study"] / median["sft"],
        "study_over_kd_cache": median["study"] / median["kd_cache"],
        "kd_online_over_kd_cache": median["kd_online"] / median["kd_cache"],
        "study_over_kd_online": median["study"] / median["kd_online"],
    }
    teacher_ratio = teacher_params / student_params
    return {
        "benchmark": "step_cost",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.device, args.threads, load_at_start),
        "setup": {"student": args.student_config, "teacher": args.teacher_config, "student_params": student_params,
                  "teacher_params": teacher_params, "teacher_over_student_params": teacher_ratio,
                  "student_matmul_params": n_student, "teacher_matmul_params": n_teacher,
                  "student_vocab": student_width, "teacher_vocab": teacher_width, "batch": args.batch,
                  "seq": args.seq, "tokens_per_step": tokens, "finetune": args.finetune, "dtype": args.dtype,
                  "device": args.device, "threads": args.threads, "top_k": args.top_k, "tail_samples": args.tail_samples,
                  "temperature": args.temperature, "method": "fkl", "grad_accum_scaling": configs["sft"].grad_accum,
                  "reps": args.reps, "warmup": args.warmup, "cache_build_s": cache_build_s,
                  "flops_formula": "student (4 N LoRA | 6 N full) + 12 L d T, teacher 2 N + 4 L d T, per token; "
                                   "N = Linear weights (output layer included)",
                  "peak_flops": peak},
        "rows": rows,
        "ratios": ratios,
        "goals": {
            "kd_cache_within_1.15x_of_sft": ratios["kd_cache_over_sft"] <= GOAL_CACHE_OVER_SFT,
            "study_at_least_2x_kd_cache": (ratios["study_over_kd_cache"] >= GOAL_STUDY_OVER_CACHE
                                           if teacher_ratio >= GOAL_MIN_TEACHER_RATIO else None),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student-config", default="tiny-s", help="student shape (tiny-*, cpu-*, qwen2.5-*)")
    parser.add_argument("--teacher-config", default="tiny-l", help="teacher shape (tiny-*, cpu-*, qwen2.5-*)")
    parser.add_argument("--batch", type=int, default=4, help="sequences per micro-batch (default 4, the study's)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence (default 256, the study's cutoff)")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions of each variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, the same for every variant (default 1: on a shared machine more "
                             "threads wait on each other whenever another process holds a core)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights and compute precision")
    parser.add_argument("--finetune", default="lora", choices=["lora", "full"])
    parser.add_argument("--top-k", type=int, default=64, help="teacher-cache k (default 64, the grid's)")
    parser.add_argument("--tail-samples", type=int, default=64, help="teacher-cache tail samples (default 64, the grid's)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak FLOP/s in TFLOP/s for the MFU (default: known GPUs at bf16)")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="after timing, profile one step of each variant and print its top ROWS operators")
    parser.add_argument("--out", default="benchmarks/out/step_cost.json")
    args = parser.parse_args(argv)
    if min(args.batch, args.seq, args.reps, args.threads) < 1 or args.seq < 2 or args.warmup < 0:
        parser.error("--batch, --reps, --threads must be >= 1, --seq >= 2, --warmup >= 0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kdgrid.io import write_json

    result = run(args)
    print_table(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
