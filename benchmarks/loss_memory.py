"""Benchmark: peak memory of a KD loss's forward + backward at a real vocabulary.

Logits for 4 x 256 tokens x 151,936 entries (Qwen2.5's output width), float32, every token counted.
For each method, `kdgrid.losses` (chunked, gradient computed on the fly) against the straightforward
formulas (full float32 softmax / log-softmax tensors under autograd, as the study's trainer did).

Each variant runs in a fresh subprocess; its peak is the process's RSS high-water mark
(getrusage ru_maxrss) minus its RSS once the inputs are allocated, so it counts everything the loss
and its backward allocate, the student-logits gradient included (which both variants must produce).

    python benchmarks/loss_memory.py [--out benchmarks/out/loss_memory.json] [--methods fkl,rkl,...]

Goal (issue 7): ours at most a quarter of the straightforward peak, the same values to 1e-5 relative.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

BATCH, SEQ, VOCAB = 4, 256, 151_936
TEMPERATURE = 2.0
METHODS = ["fkl", "rkl", "gkd", "skew_kl", "tvd"]
MiB = 1 << 20


def straightforward(method: str, student_logits, teacher_logits, mask, temperature: float):
    """The formulas written the obvious way: several [tokens, vocab] float32 tensors alive at once."""
    import torch

    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    log_q, log_p = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    q, p = log_q.exp(), log_p.exp()
    if method == "fkl":
        per_token = (p * (log_p - log_q)).sum(-1)
    elif method == "rkl":
        per_token = (q * (log_q - log_p)).sum(-1)
    elif method == "gkd":
        log_m = (0.5 * q + 0.5 * p).log()
        per_token = 0.5 * (p * (log_p - log_m)).sum(-1) + 0.5 * (q * (log_q - log_m)).sum(-1)
    elif method == "skew_kl":
        per_token = (p * (log_p - (0.1 * p + 0.9 * q).log())).sum(-1)
    elif method == "tvd":
        per_token = 0.5 * (p - q).abs().sum(-1)
    else:
        raise ValueError(method)
    mask = mask.float()
    if method == "gkd":
        return (per_token * mask).sum() / mask.sum() * temperature**2
    per_sequence = (per_token * mask).sum(1) / mask.sum(1)
    return per_sequence.mean() * temperature**2


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(method: str, variant: str) -> dict:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    g = torch.Generator().manual_seed(0)
    student = torch.randn(BATCH, SEQ, VOCAB, generator=g).mul_(3).requires_grad_(True)
    teacher = torch.randn(BATCH, SEQ, VOCAB, generator=g).mul_(3)
    mask = torch.ones(BATCH, SEQ)
    baseline = current_rss()
    started = time.perf_counter()
    if variant == "ours":
        from kdgrid.losses import kd_loss

        loss = kd_loss(method, student, teacher, mask, temperature=TEMPERATURE)
    else:
        loss = straightforward(method, student, teacher, mask, TEMPERATURE)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    grad = student.grad
    return {
        "method": method, "variant": variant, "value": loss.item(), "peak_added_mib": (peak - baseline) / MiB,
        "seconds": seconds, "grad_sum": grad.double().sum().item(), "grad_abs_sum": grad.double().abs().sum().item(),
        "grad_sample": grad[0, :2, :8].flatten().tolist(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/out/loss_memory.json")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0

    tensor_mib = BATCH * SEQ * VOCAB * 4 / MiB
    rows = []
    for method in args.methods.split(","):
        pair = {}
        for variant in ("straightforward", "ours"):
            done = subprocess.run([sys.executable, __file__, "--worker", method, variant],
                                  capture_output=True, text=True, check=True)
            pair[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        ours, ref = pair["ours"], pair["straightforward"]
        rows.append({
            "method": method,
            "straightforward_peak_mib": round(ref["peak_added_mib"], 1),
            "ours_peak_mib": round(ours["peak_added_mib"], 1),
            "peak_ratio": round(ours["peak_added_mib"] / ref["peak_added_mib"], 3),
            "straightforward_s": round(ref["seconds"], 2),
            "ours_s": round(ours["seconds"], 2),
            "value_straightforward": ref["value"],
            "value_ours": ours["value"],
            "value_rel_diff": abs(ours["value"] - ref["value"]) / abs(ref["value"]),
            "grad_abs_sum_rel_diff": abs(ours["grad_abs_sum"] - ref["grad_abs_sum"]) / ref["grad_abs_sum"],
            "grad_sample_max_abs_diff": max(abs(a - b) for a, b in zip(ours["grad_sample"], ref["grad_sample"])),
        })

    print(f"loss memory: logits {BATCH} x {SEQ} x {VOCAB} float32 (one such tensor = {tensor_mib:.0f} MiB), "
          f"temperature {TEMPERATURE}, forward + backward")
    print(f"{'method':8} {'straightforward MiB':>20} {'ours MiB':>9} {'ratio':>6} {'time s (sf / ours)':>19} "
          f"{'value rel diff':>15}")
    for r in rows:
        print(f"{r['method']:8} {r['straightforward_peak_mib']:>20.0f} {r['ours_peak_mib']:>9.0f} "
              f"{r['peak_ratio']:>6.3f} {r['straightforward_s']:>9.1f} / {r['ours_s']:<7.1f} "
              f"{r['value_rel_diff']:>15.2e}")
    ok = all(r["peak_ratio"] <= 0.25 and r["value_rel_diff"] <= 1e-5 for r in rows)
    print(f"goal (ratio <= 0.25, value rel diff <= 1e-5): {'met' if ok else 'NOT met'}")

    import torch

    from kdgrid.io import write_json

    write_json(args.out, {
        "benchmark": "loss_memory", "shape": [BATCH, SEQ, VOCAB], "dtype": "float32", "temperature": TEMPERATURE,
        "one_tensor_mib": round(tensor_mib, 1), "goal": {"max_peak_ratio": 0.25, "max_value_rel_diff": 1e-5},
        "goal_met": ok, "rows": rows,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": max(1, min(2, os.cpu_count() or 1))},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
