"""`kdgrid evaluate`: score one checkpoint on the tasks of a family through lm-eval."""

from __future__ import annotations

HELP = "Score a model on a family's test sets through lm-eval (writes scores.json and records.jsonl)."


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder, hub model name or hub id")
    parser.add_argument("--data-dir", required=True, help="the family's data folder (holds test/<task>.json)")
    parser.add_argument("--family", required=True, choices=["math", "commonsense"])
    parser.add_argument("--tasks", help="comma-separated tasks (default: every test set of the family)")
    parser.add_argument("--out", required=True, help="evaluation folder to write")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sampling", action="store_true",
                        help="the paper's sampling (temperature 1, top_p 1, top_k 0) instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--limit", type=int, help="score only the first N items of each task (for tests)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--dtype", default="auto", help="model dtype for HFLM (auto, bfloat16, float32...)")
    parser.add_argument("--rule", default="paper", choices=["paper", "strict"],
                        help="answer rule for letter tasks: the paper's first A-E (default) or a stricter one")
    parser.add_argument("--meta", nargs="*", default=[], metavar="KEY=VALUE", help="labels copied into scores.json")


def run(args) -> int:
    import time

    from ..evaluation.lmeval_tasks import GenerationSettings
    from ..evaluation.meta import parse_meta
    from ..evaluation.runner import evaluate
    from ..family_data import read_data_verified
    from ..usage import cost_line

    started = time.time()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    meta = parse_meta(args.meta)
    verified = read_data_verified(args.data_dir)  # None for synthetic data: no key
    if verified is not None:
        meta.setdefault("data_verified", verified)
    if verified is False:
        print(f"kdgrid evaluate: the test sets in {args.data_dir} are UNVERIFIED data (data.verify: false)")
    scores = evaluate(
        args.model,
        args.data_dir,
        args.family,
        args.out,
        tasks=tasks,
        settings=GenerationSettings(max_new_tokens=args.max_new_tokens, sampling=args.sampling),
        batch_size=args.batch_size,
        seed=args.seed,
        limit=args.limit,
        device=args.device,
        dtype=args.dtype,
        rule=args.rule,
        meta=meta,
        threads=args.threads,
    )
    for task, accuracy in scores["accuracy"].items():
        print(f"{task}\t{accuracy:.2f}")
    print(f"kdgrid evaluate: {cost_line(started, args.out)}")
    return 0
