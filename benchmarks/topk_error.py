"""Benchmark: the error of the top-k teacher-output cache against the full teacher distribution.

A tiny teacher (tiny-m, briefly fine-tuned on the synthetic math data so its distributions are
peaked like a trained model's) and a tiny student (tiny-s, at initialisation and after a short SFT:
the two ends of a distillation run). For every k, temperature and loss, the loss computed from the
cache (`compute_teacher_outputs` -> `TeacherCache.batch`, float16 storage included) is compared with
the loss on the dense teacher logits: relative error of the value, cosine similarity of the
gradients w.r.t. the student logits, and the teacher's mean rest mass r_T outside the top-k.

    python benchmarks/topk_error.py [--out benchmarks/out/topk_error.json] [--teacher-steps 300]
        [--teacher HF_FOLDER --student HF_FOLDER]   # measure trained models instead

Not a timed test; about 5 CPU-minutes (11 min wall on the shared 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

KS = [8, 16, 32, 64, 128]
TEMPERATURES = [1.0, 2.0, 5.0]
METHODS = ["fkl", "rkl", "gkd", "skew_kl", "tvd"]
CUTOFF = 128


def sft(model, examples, steps: int, batch_size: int, lr: float, seed: int):
    """A few plain cross-entropy steps, to give a randomly initialised tiny model peaked outputs."""
    import torch

    from kdgrid.training.data import Collator

    collate = Collator(pad_token_id=0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=g).tolist()
        batch = collate([{**examples[i], "index": i} for i in picks])
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval()


def measure(student, teacher, eval_examples, student_label: str) -> list[dict]:
    import torch

    from kdgrid.losses import kd_loss
    from kdgrid.teacher_cache import TeacherCache, compute_teacher_outputs
    from kdgrid.training.data import Collator

    batch = Collator(pad_token_id=0)([{**e, "index": i} for i, e in enumerate(eval_examples)])
    mask = batch["kd_mask"].float()
    ids, attention = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=ids, attention_mask=attention).logits.float()
        student_logits = student(input_ids=ids, attention_mask=attention).logits.float()
    width = min(student_logits.shape[-1], teacher_logits.shape[-1])
    token_ids = [e["input_ids"] for e in eval_examples]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in KS:
            path = os.path.join(tmp, f"topk{k}.pt")
            compute_teacher_outputs(teacher, token_ids, k, TEMPERATURES, batch_size=8,
                                    widths=sorted({width, teacher_logits.shape[-1]})).save(path)
            cache = TeacherCache.load(path)
            for tau in TEMPERATURES:
                sparse = cache.batch(range(len(eval_examples)), ids.shape[1], tau, width=width, input_ids=token_ids)
                rest_mass = (sparse.rest_lse - sparse.lse).exp()[mask > 0]
                for method in METHODS:
                    results = []
                    for teacher_side in (teacher_logits, sparse):
                        s = student_logits.clone().requires_grad_(True)
                        loss = kd_loss(method, s, teacher_side, mask, temperature=tau)
                        loss.backward()
                        results.append((loss.item(), s.grad.flatten().double()))
                    (dense_value, dense_grad), (sparse_value, sparse_grad) = results
                    rows.append({
                        "student": student_label, "k": k, "temperature": tau, "method": method,
                        "dense": dense_value, "sparse": sparse_value,
                        "rel_error": abs(sparse_value - dense_value) / abs(dense_value),
                        "grad_cosine": torch.nn.functional.cosine_similarity(sparse_grad, dense_grad, dim=0).item(),
                        "teacher_rest_mass_mean": rest_mass.mean().item(),
                        "teacher_rest_mass_max": rest_mass.max().item(),
                    })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/out/topk_error.json")
    parser.add_argument("--teacher", help="a trained teacher's HF folder (default: tiny-m, SFT here)")
    parser.add_argument("--student", help="a student's HF folder (default: tiny-s at init and after SFT)")
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--student-steps", type=int, default=100)
    parser.add_argument("--n-eval", type=int, default=16)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from kdgrid.io import write_json
    from kdgrid.synthetic import generate_family
    from kdgrid.tiny_models import build_tiny_model
    from kdgrid.tokenizer import build_tokenizer
    from kdgrid.training.data import tokenize_records

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.manual_seed(0)
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    train, tests = generate_family("math", seed=0, n_train=400, n_test=args.n_eval)
    examples = tokenize_records(train, tokenizer, CUTOFF, "all")
    eval_records = [r for task_records in tests.values() for r in task_records][:args.n_eval]
    eval_examples = tokenize_records(eval_records, tokenizer, CUTOFF, "all")

    if args.teacher:
        from transformers import AutoModelForCausalLM

        teacher = AutoModelForCausalLM.from_pretrained(args.teacher).eval()
        teacher_label = args.teacher
    else:
        teacher = sft(build_tiny_model("tiny-m"), examples, args.teacher_steps, 16, 3e-3, seed=1)
        teacher_label = f"tiny-m after {args.teacher_steps} SFT steps"
    if args.student:
        from transformers import AutoModelForCausalLM

        students = [(args.student, AutoModelForCausalLM.from_pretrained(args.student).eval())]
    else:
        students = [("tiny-s at init", build_tiny_model("tiny-s"))]
        students.append((f"tiny-s after {args.student_steps} SFT steps",
                         sft(build_tiny_model("tiny-s"), examples, args.student_steps, 16, 3e-3, seed=2)))

    rows = []
    for label, student in students:
        rows += measure(student, teacher, eval_examples, label)

    print(f"top-k error: teacher {teacher_label}; {len(eval_examples)} eval sequences; vocabulary "
          f"{len(tokenizer)} tokens (teacher rows {teacher.config.vocab_size}, student {students[0][1].config.vocab_size})")
    for label, _ in students:
        print(f"\nstudent: {label}")
        print(f"{'k':>4} {'tau':>4} {'r_T mean':>9} | " + " | ".join(f"{m:>16}" for m in METHODS))
        print(f"{'':>4} {'':>4} {'':>9} | " + " | ".join(f"{'rel.err  cos':>16}" for _ in METHODS))
        for k in KS:
            for tau in TEMPERATURES:
                cells = [r for r in rows if r["student"] == label and r["k"] == k and r["temperature"] == tau]
                by_method = {r["method"]: r for r in cells}
                line = " | ".join(f"{by_method[m]['rel_error']:>8.1e} {by_method[m]['grad_cosine']:>7.4f}" for m in METHODS)
                print(f"{k:>4} {tau:>4g} {cells[0]['teacher_rest_mass_mean']:>9.2e} | {line}")
    write_json(args.out, {
        "benchmark": "topk_error", "teacher": teacher_label, "students": [label for label, _ in students],
        "n_eval_sequences": len(eval_examples), "tokenizer_length": len(tokenizer), "ks": KS,
        "temperatures": TEMPERATURES, "rows": rows, "seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    })
    print(f"\nwrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
