"""Benchmark: the error of the top-k teacher-output cache against the full teacher distribution.

A tiny teacher (tiny-m, briefly fine-tuned on the synthetic math data so its distributions are
peaked like a trained model's) and a tiny student (tiny-s, at initialisation and after a short SFT:
the two ends of a distillation run). For every k, temperature and loss, the loss computed from the
cache (`compute_teacher_outputs` -> `TeacherCache.batch`, float16 storage included) is compared with
the loss on the dense teacher logits: relative error of the value, cosine similarity of the
gradients w.r.t. the student logits, and the teacher's mean rest mass r_T outside the top-k.

    python benchmarks/topk_error.py [--out benchmarks/out/topk_error.json] [--teacher-steps 300]
        [--teacher HF_FOLDER --student HF_FOLDER]   # measure trained models instead (their tokenizer)
        [--data RECORDS_JSON]                       # on these records (e.g. a prepared test set)
        [--ks 8,64] [--temperatures 1,2]            # fewer cells

Given models are measured with their own tokenizer (teacher and student must agree), given data as it
is (its first --n-eval records); without them, the tiny world's models, tokenizer and synthetic math.

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


def sft(model, examples, steps: int, batch_size: int, lr: float, seed: int, pad_token_id: int):
    """A few plain cross-entropy steps, to give a randomly initialised tiny model peaked outputs."""
    import torch

    from kdgrid.training.batches import Collator

    collate = Collator(pad_token_id=pad_token_id)
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


def measure(student, teacher, eval_examples, student_label: str, pad_token_id: int, ks=KS,
            temperatures=TEMPERATURES) -> list[dict]:
    import torch

    from kdgrid.losses import kd_loss
    from kdgrid.teacher_cache import TeacherCache, compute_teacher_outputs
    from kdgrid.training.batches import Collator

    batch = Collator(pad_token_id=pad_token_id)([{**e, "index": i} for i, e in enumerate(eval_examples)])
    mask = batch["kd_mask"].float()
    ids, attention = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=ids, attention_mask=attention).logits.float()
        student_logits = student(input_ids=ids, attention_mask=attention).logits.float()
    width = min(student_logits.shape[-1], teacher_logits.shape[-1])
    token_ids = [e["input_ids"] for e in eval_examples]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            path = os.path.join(tmp, f"topk{k}.pt")
            compute_teacher_outputs(teacher, token_ids, k, temperatures, batch_size=8,
                                    widths=sorted({width, teacher_logits.shape[-1]})).save(path)
            cache = TeacherCache.load(path)
            for tau in temperatures:
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
    parser.add_argument("--data", help="a JSON list of LLM-Adapters records to measure on (default: synthetic math)")
    parser.add_argument("--n-eval", type=int, default=16)
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="comma-separated top-k sizes")
    parser.add_argument("--temperatures", default=",".join(map(str, TEMPERATURES)))
    args = parser.parse_args(argv)
    if bool(args.teacher) != bool(args.student):
        parser.error("give both --teacher and --student (their tokenizer is the one measured with), or neither")
    ks = [int(k) for k in args.ks.split(",")]
    temperatures = [float(t) for t in args.temperatures.split(",")]

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from kdgrid.io import write_json
    from kdgrid.synthetic import generate_family
    from kdgrid.tiny_models import build_tiny_model
    from kdgrid.tokenizer import build_tokenizer
    from kdgrid.training.batches import tokenize_records

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.manual_seed(0)
    started = time.perf_counter()
    if args.teacher:
        from kdgrid.training.model_io import check_tokenizers_agree, load_tokenizer

        tokenizer = load_tokenizer(args.teacher)
        check_tokenizers_agree(load_tokenizer(args.student), tokenizer, args.student, args.teacher)
    else:
        tokenizer = build_tokenizer()
    train, tests = generate_family("math", seed=0, n_train=400, n_test=args.n_eval)  # the tiny world's data
    if args.data:
        from kdgrid.records import load_records

        eval_records = load_records(args.data)[:args.n_eval]
        data_label = args.data
    else:
        eval_records = [r for task_records in tests.values() for r in task_records][:args.n_eval]
        data_label = "synthetic math (kdgrid.synthetic, seed 0)"
    eval_examples = tokenize_records(eval_records, tokenizer, CUTOFF, "all")
    pad = tokenizer.pad_token_id

    if args.teacher:
        from transformers import AutoModelForCausalLM

        teacher = AutoModelForCausalLM.from_pretrained(args.teacher).eval()
        teacher_label = args.teacher
        students = [(args.student, AutoModelForCausalLM.from_pretrained(args.student).eval())]
    else:
        examples = tokenize_records(train, tokenizer, CUTOFF, "all")
        teacher = sft(build_tiny_model("tiny-m"), examples, args.teacher_steps, 16, 3e-3, seed=1, pad_token_id=pad)
        teacher_label = f"tiny-m after {args.teacher_steps} SFT steps"
        students = [("tiny-s at init", build_tiny_model("tiny-s"))]
        students.append((f"tiny-s after {args.student_steps} SFT steps",
                         sft(build_tiny_model("tiny-s"), examples, args.student_steps, 16, 3e-3, seed=2,
                             pad_token_id=pad)))

    rows = []
    for label, student in students:
        rows += measure(student, teacher, eval_examples, label, pad, ks, temperatures)

    print(f"top-k error: teacher {teacher_label}; {len(eval_examples)} eval sequences of {data_label}; vocabulary "
          f"{len(tokenizer)} tokens (teacher rows {teacher.config.vocab_size}, student {students[0][1].config.vocab_size})")
    for label, _ in students:
        print(f"\nstudent: {label}")
        print(f"{'k':>4} {'tau':>4} {'r_T mean':>9} | " + " | ".join(f"{m:>16}" for m in METHODS))
        print(f"{'':>4} {'':>4} {'':>9} | " + " | ".join(f"{'rel.err  cos':>16}" for _ in METHODS))
        for k in ks:
            for tau in temperatures:
                cells = [r for r in rows if r["student"] == label and r["k"] == k and r["temperature"] == tau]
                by_method = {r["method"]: r for r in cells}
                line = " | ".join(f"{by_method[m]['rel_error']:>8.1e} {by_method[m]['grad_cosine']:>7.4f}" for m in METHODS)
                print(f"{k:>4} {tau:>4g} {cells[0]['teacher_rest_mass_mean']:>9.2e} | {line}")
    write_json(args.out, {
        "benchmark": "topk_error", "teacher": teacher_label, "students": [label for label, _ in students],
        "data": data_label, "n_eval_sequences": len(eval_examples), "tokenizer": tokenizer.name_or_path,
        "tokenizer_length": len(tokenizer), "ks": ks, "temperatures": temperatures, "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    })
    print(f"\nwrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
