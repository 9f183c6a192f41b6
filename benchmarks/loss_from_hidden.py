"""Benchmark: the KD loss from hidden states (kdgrid.losses.linear_kd_loss) at a real vocabulary.

Student hidden states [4, 256, 896] and output layer [151,936, 896] (Qwen2.5-0.5B's shapes), teacher
hidden states [4, 256, 2048] and output layer [151,936, 2048] (3B's), float32, output layers frozen,
the first 32 tokens of each row (the prompt) masked out, forward KL at temperature 1. Variants, each in a
fresh subprocess (peak = the process's RSS high-water mark minus its RSS once the inputs exist, as in
benchmarks/loss_memory.py; loss + backward to the student's hidden states):

- straightforward: both logits as hidden @ weight.T, log_softmax of both, the per-token KL, the
  per-sequence mean (issue 21's reference formula);
- logits_kd_loss: today's trainer path before the fused loss: the student's logits hidden @ weight.T,
  then kdgrid.losses.kd_loss on them and the teacher's logits (formed the same way);
- fused_online: linear_kd_loss with the teacher's (hidden, weight): neither side's logits exist;
- fused_cache: linear_kd_loss with the cache's SparseTeacher (top-64 + 64 tail samples, a real
  kdgrid.teacher_cache file made beforehand in its own process), reading the batch included;
- sft_fused / sft_logits: the SFT step's loss, linear_cross_entropy / causal_lm_loss on the logits.

    python benchmarks/loss_from_hidden.py [--out benchmarks/out/loss_from_hidden.json] [--threads 2] [--quick]

Goals (issue 21): fused peak <= 0.10 x straightforward; loss and gradient equal to 1e-4 (relative);
fused_cache <= 1.15 x sft_fused (time); fused_online no slower than logits_kd_loss (the loss's own speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = {"batch": 4, "seq": 256, "vocab": 151_936, "hidden": 896, "teacher_hidden": 2048, "prompt": 32,
        "top_k": 64, "tail_samples": 64}
QUICK = {"batch": 2, "seq": 16, "vocab": 1000, "hidden": 32, "teacher_hidden": 48, "prompt": 4,
         "top_k": 8, "tail_samples": 8}
VARIANTS = ["straightforward", "logits_kd_loss", "fused_online", "fused_cache", "sft_logits", "sft_fused"]
TEMPERATURE = 1.0
MiB = 1 << 20


def inputs(shape: dict):
    """The same random tensors in every process: hidden states scaled so the logits have spread ~3."""
    import torch

    g = torch.Generator().manual_seed(0)
    b, t = shape["batch"], shape["seq"]
    hidden = torch.randn(b, t, shape["hidden"], generator=g)
    weight = torch.randn(shape["vocab"], shape["hidden"], generator=g).mul_(3 / shape["hidden"] ** 0.5)
    teacher_hidden = torch.randn(b, t, shape["teacher_hidden"], generator=g)
    teacher_weight = torch.randn(shape["vocab"], shape["teacher_hidden"], generator=g).mul_(
        3 / shape["teacher_hidden"] ** 0.5)
    mask = torch.ones(b, t)
    mask[:, :shape["prompt"]] = 0
    labels = torch.randint(shape["vocab"], (b, t), generator=g).masked_fill(mask == 0, -100)
    labels = torch.cat([labels[:, :1], labels[:, :-1]], 1)  # position t predicts labels[t + 1]: the masked tokens
    return hidden, weight, teacher_hidden, teacher_weight, mask, labels


def straightforward(hidden, weight, teacher_hidden, teacher_weight, mask, temperature):
    import torch

    log_q = torch.log_softmax(hidden @ weight.T / temperature, -1)
    log_p = torch.log_softmax(teacher_hidden @ teacher_weight.T / temperature, -1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    per_sequence = (per_token * mask).sum(1) / mask.sum(1)
    return per_sequence.mean() * temperature**2


def make_cache(shape: dict, path: str) -> None:
    """The teacher-output cache of the benchmark's teacher (its logits formed an example at a time)."""
    import torch

    from kdgrid.teacher_cache import compute_teacher_outputs

    _, _, teacher_hidden, teacher_weight, _, _ = inputs(shape)

    class Teacher(torch.nn.Module):  # the examples come in order, one per call
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, input_ids, attention_mask):
            self.calls += 1
            return type("Out", (), {"logits": teacher_hidden[self.calls - 1:self.calls] @ teacher_weight.T})

    examples = [[1] * shape["seq"]] * shape["batch"]
    compute_teacher_outputs(Teacher(), examples, shape["top_k"], [TEMPERATURE], batch_size=1,
                            tail_samples=shape["tail_samples"]).save(path)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(variant: str, shape: dict, cache_path: str, grad_path: str, threads: int) -> dict:
    import torch

    from kdgrid import losses
    from kdgrid.teacher_cache import TeacherCache

    torch.set_num_threads(threads)
    hidden, weight, teacher_hidden, teacher_weight, mask, labels = inputs(shape)
    hidden.requires_grad_(True)
    cache = TeacherCache.load(cache_path) if variant == "fused_cache" else None
    if variant == "sft_logits":
        from kdgrid.training.trainer import causal_lm_loss
    baseline = current_rss()
    started = time.perf_counter()
    if variant == "straightforward":
        loss = straightforward(hidden, weight, teacher_hidden, teacher_weight, mask, TEMPERATURE)
    elif variant == "logits_kd_loss":
        with torch.no_grad():
            teacher_logits = teacher_hidden @ teacher_weight.T
        loss = losses.kd_loss("fkl", hidden @ weight.T, teacher_logits, mask, temperature=TEMPERATURE)
    elif variant == "fused_online":
        loss = losses.linear_kd_loss(hidden, weight, (teacher_hidden, teacher_weight), mask, "fkl", TEMPERATURE)
    elif variant == "fused_cache":
        sparse = cache.batch(range(shape["batch"]), shape["seq"], TEMPERATURE, width=shape["vocab"])
        loss = losses.linear_kd_loss(hidden, weight, sparse, mask, "fkl", TEMPERATURE)
    elif variant == "sft_logits":
        loss = causal_lm_loss(hidden @ weight.T, labels)
    elif variant == "sft_fused":
        loss = losses.linear_cross_entropy(hidden, weight, labels)
    else:
        raise ValueError(variant)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    torch.save(hidden.grad, grad_path)
    return {"variant": variant, "value": loss.item(), "peak_added_mib": (peak - baseline) / MiB, "seconds": seconds}


def run_variant(variant, shape, cache_path, grad_path, threads) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", variant, "--shape", json.dumps(shape),
                           "--cache", cache_path, "--grad", grad_path, "--threads", str(threads)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(a_path, b_path) -> dict:
    import torch

    a, b = torch.load(a_path), torch.load(b_path)
    return {"grad_max_abs_diff": (a - b).abs().max().item(),
            "grad_rel_diff": ((a - b).norm() / b.norm()).item()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/out/loss_from_hidden.json")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--reps", type=int, default=1, help="timed runs of each variant (each in a fresh process)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run of the script")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--grad", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.shape), args.cache, args.grad, args.threads)))
        return 0

    shape = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kdgrid-loss-from-hidden-") as tmp:
        cache_path = str(Path(tmp) / "teacher_outputs.pt")
        started = time.perf_counter()
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"import loss_from_hidden as b; b.make_cache({shape!r}, {cache_path!r})")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"making the teacher cache failed:\n{done.stderr[-3000:]}")
        cache_s = time.perf_counter() - started
        runs = {v: [] for v in VARIANTS}
        for rep in range(args.reps):
            for variant in VARIANTS:  # interleaved: load changes hit the variants alike
                runs[variant].append(run_variant(variant, shape, cache_path, str(Path(tmp) / f"{variant}.grad"),
                                                 args.threads))
        rows = {}
        for variant, reps in runs.items():
            rows[variant] = {"variant": variant, "value": reps[0]["value"],
                             "peak_added_mib": round(min(r["peak_added_mib"] for r in reps), 1),
                             "seconds": round(min(r["seconds"] for r in reps), 3),
                             "all_seconds": [round(r["seconds"], 3) for r in reps]}
        for variant, reference in [("logits_kd_loss", "straightforward"), ("fused_online", "straightforward"),
                                   ("fused_cache", "straightforward"), ("sft_fused", "sft_logits")]:
            row, ref = rows[variant], rows[reference]
            row["value_rel_diff"] = abs(row["value"] - ref["value"]) / abs(ref["value"])
            row.update(compare(Path(tmp) / f"{variant}.grad", Path(tmp) / f"{reference}.grad"))
            row["peak_ratio"] = round(row["peak_added_mib"] / ref["peak_added_mib"], 3)
    load_after = os.getloadavg()

    online, cached = rows["fused_online"], rows["fused_cache"]
    ratios = {"fused_online_peak_over_straightforward": online["peak_ratio"],
              "fused_cache_peak_over_straightforward": cached["peak_ratio"],
              "fused_cache_over_sft_fused_time": round(cached["seconds"] / rows["sft_fused"]["seconds"], 3),
              "fused_online_over_logits_kd_loss_time": round(online["seconds"] / rows["logits_kd_loss"]["seconds"], 3),
              "sft_fused_over_sft_logits_time": round(rows["sft_fused"]["seconds"] / rows["sft_logits"]["seconds"], 3)}
    goals = {
        "peak_at_most_0.10_of_straightforward": online["peak_ratio"] <= 0.10,
        "online_loss_and_grad_within_1e-4": online["value_rel_diff"] <= 1e-4 and online["grad_rel_diff"] <= 1e-4,
        "kd_cache_within_1.15x_of_sft": ratios["fused_cache_over_sft_fused_time"] <= 1.15,
        "loss_no_slower_than_logits_kd_loss": ratios["fused_online_over_logits_kd_loss_time"] <= 1.0,
    }
    b, t, v = shape["batch"], shape["seq"], shape["vocab"]
    print(f"loss from hidden states: {b} x {t} tokens ({shape['prompt']} per row masked), V {v:,}, student H "
          f"{shape['hidden']}, teacher H {shape['teacher_hidden']}, float32, frozen output layers, fkl, "
          f"{args.threads} thread(s), best of {args.reps}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'variant':16} {'peak MiB':>9} {'ratio':>6} {'seconds':>8} {'value rel diff':>15} {'grad rel diff':>14}")
    for r in rows.values():
        print(f"{r['variant']:16} {r['peak_added_mib']:>9.0f} {r.get('peak_ratio', float('nan')):>6.3f} "
              f"{r['seconds']:>8.2f} {r.get('value_rel_diff', float('nan')):>15.2e} {r.get('grad_rel_diff', float('nan')):>14.2e}")
    print("ratios: " + ", ".join(f"{k} {x}" for k, x in ratios.items()))
    print("goals: " + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in goals.items()))
    if not args.quick:
        print(f"(the teacher cache took {cache_s:.0f} s to make)")

    import torch

    from kdgrid.io import write_json

    write_json(args.out, {
        "benchmark": "loss_from_hidden", "shape": shape, "dtype": "float32", "method": "fkl",
        "temperature": TEMPERATURE, "quick": args.quick, "reps": args.reps, "rows": list(rows.values()),
        "ratios": ratios, "goals": goals, "load_average_before": load_before, "load_average_after": load_after,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
