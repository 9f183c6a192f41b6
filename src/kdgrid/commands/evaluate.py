"""`kdgrid evaluate`: score one checkpoint on the tasks of a family through lm-eval."""

from __future__ import annotations

HELP = "Score a model on a family's test sets through lm-eval (writes scores.json and records.jsonl)."


def add_arguments(parser) -> None:
    from ..evaluation.evaluate_options import EvaluateOptions
    from ..options import add_arguments

    add_arguments(parser, EvaluateOptions)


def run(args) -> int:
    import time

    from ..evaluation.evaluate_options import EvaluateOptions
    from ..evaluation.lmeval_tasks import GenerationSettings
    from ..evaluation.meta import parse_meta
    from ..evaluation.runner import evaluate
    from ..family_data import read_data_verified
    from ..options import check, from_args
    from ..usage import cost_line

    started = time.time()
    opts = from_args(EvaluateOptions, args)
    check(opts)
    meta = parse_meta(opts.meta)
    verified = read_data_verified(opts.data_dir)  # None for synthetic data: no key
    if verified is not None:
        meta.setdefault("data_verified", verified)
    if verified is False:
        print(f"kdgrid evaluate: the test sets in {opts.data_dir} are UNVERIFIED data (data.verify: false)")
    scores = evaluate(
        opts.model,
        opts.data_dir,
        opts.family,
        opts.out,
        tasks=opts.task_list,
        settings=GenerationSettings(max_new_tokens=opts.max_new_tokens, sampling=opts.sampling),
        batch_size=opts.batch_size,
        seed=opts.seed,
        limit=opts.limit,
        device=opts.device,
        dtype=opts.dtype,
        rule=opts.rule,
        meta=meta,
        threads=opts.threads,
    )
    for task, accuracy in scores["accuracy"].items():
        print(f"{task}\t{accuracy:.2f}")
    print(f"kdgrid evaluate: {cost_line(started, opts.out)}")
    return 0
