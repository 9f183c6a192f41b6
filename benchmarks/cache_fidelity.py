"""Benchmark: how close a teacher-output cache's loss is to the online teacher's, on real models.

For a teacher and a student (HF folders sharing a tokenizer) and some LLM-Adapters records, the
student's loss on one batch (the first step of a distillation run: the student at initialisation)
is computed with the teacher online (dense logits) and from caches of several formats:
`top<k>` (k ids per token and a rest bucket) and `top<k>+s<S>` (plus S ids sampled from the
teacher's distribution over the rest: `kdgrid.losses` then estimates the rest without bias for fkl,
skew_kl and tvd). Reported per format, temperature and method: online and cached loss, relative
error, gradient cosine, the teacher's mass outside the top-k, and the cache's bytes per token. It also
reports how many ids per token an adaptive k would need to cover a target share of the teacher's mass.

    python benchmarks/cache_fidelity.py --teacher T --student S --data a.json [b.json ...]
        [--n-records 32] [--cutoff 256] [--temperatures 1] [--formats top64,top64+s64,...]
        [--methods fkl,rkl,gkd,skew_kl,tvd] [--seeds 0,1,2] [--out benchmarks/out/cache_fidelity.json]

With no --teacher/--student it builds the real SmolLM2 pair of the test suite (tests/real_checkpoint.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

DEFAULT_FORMATS = "top64,top256,top1024,top64+s16,top64+s64,top64+s256"
COVER = (0.9, 0.99, 0.999)


def parse_format(text: str) -> tuple[int, int]:
    head, _, tail = text.partition("+s")
    if not head.startswith("top"):
        raise SystemExit(f"--formats: {text!r} is not top<k> or top<k>+s<S>")
    return int(head[3:]), int(tail or 0)


def load_records(paths: list[str], n: int) -> list[dict]:
    records = []
    for path in paths:
        records += json.loads(Path(path).read_text(encoding="utf-8"))
    if len(records) < n:
        print(f"note: {len(records)} records available, fewer than --n-records {n}")
    return records[:n]


def coverage(teacher_logits, mask, temperature: float) -> dict:
    """Ids per token an adaptive k needs to cover each share of the teacher's mass (quantiles over tokens)."""
    import torch

    probs = torch.softmax(teacher_logits[mask > 0] / temperature, -1)
    sorted_probs = probs.sort(-1, descending=True).values.cumsum(-1)
    out = {}
    for target in COVER:
        needed = (sorted_probs < target).sum(-1).double() + 1
        q = torch.quantile(needed, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
        out[str(target)] = {"mean": float(needed.mean()), "p50": float(q[0]), "p90": float(q[1]),
                            "p99": float(q[2]), "max": float(needed.max())}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher")
    parser.add_argument("--student")
    parser.add_argument("--data", nargs="+", required=True, help="LLM-Adapters JSON files (records are concatenated)")
    parser.add_argument("--n-records", type=int, default=32)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--temperatures", default="1")
    parser.add_argument("--formats", default=DEFAULT_FORMATS)
    parser.add_argument("--methods", default="fkl,rkl,gkd,skew_kl,tvd")
    parser.add_argument("--seeds", default="0", help="tail-sampling seeds (the spread of a sampled cache's error)")
    parser.add_argument("--batch-size", type=int, default=8, help="records per teacher/student forward pass")
    parser.add_argument("--out", default="benchmarks/out/cache_fidelity.json")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdgrid.io import write_json
    from kdgrid.losses import kd_loss
    from kdgrid.teacher_cache import compute_teacher_outputs
    from kdgrid.training.batches import Collator, tokenize_records

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    started = time.perf_counter()
    if not (args.teacher and args.student):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from real_checkpoint import ensure

        pair = ensure()
        args.teacher, args.student = args.teacher or str(pair.teacher), args.student or str(pair.student)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    formats = [parse_format(f) for f in args.formats.split(",")]
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    examples = tokenize_records(load_records(args.data, args.n_records), tokenizer, args.cutoff, "all")
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
    student = AutoModelForCausalLM.from_pretrained(args.student, dtype=torch.float32).eval()
    batch = Collator(tokenizer.pad_token_id)([{**e, "index": i} for i, e in enumerate(examples)])
    ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["kd_mask"].float()
    with torch.no_grad():
        teacher_logits = torch.cat([teacher(input_ids=ids[i:i + args.batch_size],
                                            attention_mask=attention[i:i + args.batch_size]).logits
                                    for i in range(0, len(examples), args.batch_size)]).float()
        student_logits = torch.cat([student(input_ids=ids[i:i + args.batch_size],
                                            attention_mask=attention[i:i + args.batch_size]).logits
                                    for i in range(0, len(examples), args.batch_size)]).float()
    width = min(student_logits.shape[-1], teacher_logits.shape[-1])
    token_ids = [e["input_ids"] for e in examples]

    def loss_and_grad(method, teacher_side, tau):
        s = student_logits.clone().requires_grad_(True)
        loss = kd_loss(method, s, teacher_side, mask, temperature=tau)
        loss.backward()
        return loss.item(), s.grad.flatten().double()

    class Replay:  # hands the teacher's logits, computed once above, to compute_teacher_outputs batch by batch
        def __init__(self):
            self.start = 0

        def __call__(self, input_ids, attention_mask):
            n = input_ids.shape[0]
            logits = teacher_logits[self.start:self.start + n, :input_ids.shape[1]]
            self.start += n
            return type("Out", (), {"logits": logits})

    dense = {(m, t): loss_and_grad(m, teacher_logits, t) for m in methods for t in temperatures}
    print(f"online losses done ({time.perf_counter() - started:.0f} s)", flush=True)
    rows = []
    for k, samples in formats:
        for seed in (seeds if samples else seeds[:1]):
            cache = compute_teacher_outputs(Replay(), token_ids, k, temperatures, batch_size=args.batch_size,
                                            widths=sorted({width, teacher_logits.shape[-1]}),
                                            pad_token_id=tokenizer.pad_token_id, tail_samples=samples, seed=seed)
            for tau in temperatures:
                sparse = cache.batch(range(len(examples)), ids.shape[1], tau, width=width, input_ids=token_ids)
                rest = (sparse.rest_lse - sparse.lse).exp()[mask > 0]
                for method in methods:
                    online, online_grad = dense[(method, tau)]
                    cached, cached_grad = loss_and_grad(method, sparse, tau)
                    rows.append({
                        "format": f"top{k}" + (f"+s{samples}" if samples else ""), "k": k, "tail_samples": samples,
                        "seed": seed, "temperature": tau, "method": method, "online": online, "cached": cached,
                        "rel_error": (cached - online) / abs(online),
                        "grad_cosine": torch.nn.functional.cosine_similarity(cached_grad, online_grad, dim=0).item(),
                        "teacher_rest_mass_mean": rest.mean().item(), "teacher_rest_mass_max": rest.max().item(),
                        "bytes_per_token": cache.meta["bytes_per_token"],
                    })
                    print(f"top{k}+s{samples} seed {seed} t{tau:g} {method}: {100 * rows[-1]['rel_error']:+.3f}% "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
    cover = {str(t): coverage(teacher_logits, mask, t) for t in temperatures}

    print(f"cache fidelity: teacher {args.teacher}, student {args.student} (at initialisation); "
          f"{len(examples)} records, {int(mask.sum())} loss tokens, vocabulary width {width}")
    print(f"{'format':>14} {'seed':>4} {'tau':>4} {'B/token':>7} {'r_T mean':>8} | "
          + " | ".join(f"{m:>15}" for m in methods))
    keys = sorted({(r["format"], r["seed"], r["temperature"]) for r in rows},
                  key=lambda x: (parse_format(x[0]), x[1], x[2]))
    for fmt, seed, tau in keys:
        by = {r["method"]: r for r in rows if (r["format"], r["seed"], r["temperature"]) == (fmt, seed, tau)}
        first = next(iter(by.values()))
        print(f"{fmt:>14} {seed:>4} {tau:>4g} {first['bytes_per_token']:>7} {first['teacher_rest_mass_mean']:>8.4f} | "
              + " | ".join(f"{100 * by[m]['rel_error']:>+7.2f}% {by[m]['grad_cosine']:>6.4f}" for m in methods))
    print("online losses: " + ", ".join(f"{m} t{t:g} {dense[(m, t)][0]:.4f}" for m in methods for t in temperatures))
    for tau, c in cover.items():
        print(f"ids to cover the teacher's mass at tau {tau}: "
              + "; ".join(f"{target}: mean {v['mean']:.0f}, p90 {v['p90']:.0f}, p99 {v['p99']:.0f}, max {v['max']:.0f}"
                          for target, v in c.items()))
    write_json(args.out, {
        "benchmark": "cache_fidelity", "teacher": args.teacher, "student": args.student, "data": args.data,
        "n_records": len(examples), "loss_tokens": int(mask.sum()), "cutoff": args.cutoff, "width": width,
        "online": {f"{m}@{t:g}": dense[(m, t)][0] for m in methods for t in temperatures},
        "rows": rows, "coverage": cover, "seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    })
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
