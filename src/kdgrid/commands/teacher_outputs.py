"""`kdgrid teacher-outputs`: run a teacher once over a training set and cache its top-k outputs."""

from __future__ import annotations

from ..errors import KdgridError

HELP = "Run a teacher once over a training set and cache its top-k logits per token (for off-policy KD)."


def add_arguments(p) -> None:
    p.add_argument("--teacher", required=True, help="the teacher: a local Hugging Face folder or a hub id")
    p.add_argument("--data", required=True, help="the training set (LLM-Adapters JSON) the students train on")
    p.add_argument("--top-k", type=int, required=True, help="how many of the largest logits to keep per token")
    p.add_argument("--temperatures", default="1", help="comma-separated temperatures the students use (default 1)")
    p.add_argument("--tail-samples", type=int, default=64,
                   help="ids per token drawn from the teacher's distribution outside the top-k (default 64; 0: "
                        "top-k only, biased for every loss)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tail sampling (default 0)")
    p.add_argument("--out", required=True, help="the cache file to write (.pt)")
    p.add_argument("--fidelity-out", help="also write the cache's fidelity figures here (JSON; default: none)")
    p.add_argument("--cutoff", type=int, default=256, help="tokens per example, as in training (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per teacher forward pass (default 8)")
    p.add_argument("--token-scope", default="all", choices=["all", "response"],
                   help="tokenisation as in training (the cache keeps every position either way)")
    p.add_argument("--widths", default="auto",
                   help="comma-separated logits widths of the students that will read the cache; 'auto': the "
                        "teacher's width and every multiple of 128 from the tokenizer's length up to it")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="teacher weights' precision (auto: bf16 on a GPU that has it, fp32 on CPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")


def _parse_list(text: str, kind, what: str) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise KdgridError(f"--{what} {text!r}: not a comma-separated list of numbers") from e
    if not values:
        raise KdgridError(f"--{what} is empty")
    return values


def run(args) -> int:
    import os
    import time

    from ..usage import cost_line

    job_started = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from ..teacher_cache import compute_teacher_outputs, default_widths
    from ..training.batches import load_tokenized, tokenizer_fingerprint
    from ..training.model_io import (
        check_finite_weights,
        load_causal_lm,
        load_tokenizer,
        resolve_precision,
        torch_dtype,
    )

    temperatures = _parse_list(args.temperatures, float, "temperatures")
    if args.top_k < 1:
        raise KdgridError(f"--top-k must be at least 1, got {args.top_k}")
    if args.tail_samples < 0:
        raise KdgridError(f"--tail-samples must be >= 0, got {args.tail_samples}")
    if args.batch_size < 1:
        raise KdgridError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(args.precision)

    tokenizer = load_tokenizer(args.teacher)
    examples, _ = load_tokenized(args.data, tokenizer, args.cutoff, args.token_scope)
    model = load_causal_lm(args.teacher, torch_dtype(precision), "teacher").to(device).eval()
    check_finite_weights(model, f"teacher {args.teacher}")
    if args.top_k > model.get_output_embeddings().weight.shape[0]:
        raise KdgridError(f"--top-k {args.top_k}: more than the {model.get_output_embeddings().weight.shape[0]} "
                          f"logits of teacher {args.teacher} (config key teacher_cache.top_k)")
    vocab_width = model.get_output_embeddings().weight.shape[0]
    if args.widths == "auto":
        widths = default_widths(vocab_width, len(tokenizer))
    else:
        widths = _parse_list(args.widths, int, "widths")
        if any(not 0 < w <= vocab_width for w in widths):
            raise KdgridError(f"--widths {args.widths}: each must lie between 1 and the teacher's {vocab_width} logits")

    started = time.perf_counter()
    cache = compute_teacher_outputs(model, [e["input_ids"] for e in examples], args.top_k, temperatures,
                                    args.batch_size, device, widths=widths, pad_token_id=tokenizer.pad_token_id,
                                    tail_samples=args.tail_samples, seed=args.seed)
    cache.meta.update(
        teacher=str(args.teacher), tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), data=str(args.data),
        cutoff=args.cutoff, token_scope=args.token_scope, precision=precision,
    )
    cache.save(args.out)
    print(f"teacher-outputs: {len(cache)} examples, {cache.meta['n_tokens']} tokens, top-{args.top_k} + "
          f"{args.tail_samples} tail samples at temperatures {temperatures}, widths {cache.widths}, "
          f"{cache.meta['bytes_per_token']} bytes per token, in {time.perf_counter() - started:.1f} s -> {args.out}")
    for t, figures in cache.meta["fidelity"].items():
        print(f"teacher-outputs: at temperature {t} the teacher's mass outside its top-{args.top_k}: "
              + ", ".join(f"{key.removeprefix('teacher_rest_mass_')} {value:.4g}" for key, value in figures.items()))
    if args.fidelity_out:
        from ..io import write_json

        write_json(args.fidelity_out, {"cache": str(args.out), "k": args.top_k, "tail_samples": args.tail_samples,
                                       "bytes_per_token": cache.meta["bytes_per_token"],
                                       "n_tokens": cache.meta["n_tokens"], "fidelity": cache.meta["fidelity"]})
    print(f"kdgrid teacher-outputs: {cost_line(job_started, args.out)}")
    return 0
