"""`kdgrid compare`: a student's answers and rationales against its teacher's, task by task."""

from __future__ import annotations

HELP = "Compare a student's evaluation with its teacher's: answer agreement, BLEU, embedding similarity."


def add_arguments(parser) -> None:
    from ..evaluation.compare_options import CompareOptions
    from ..options import add_arguments

    add_arguments(parser, CompareOptions)


def run(args) -> int:
    import time

    from ..evaluation.compare_options import CompareOptions
    from ..evaluation.meta import parse_meta
    from ..evaluation.student_vs_teacher import compare
    from ..options import from_args
    from ..usage import cost_line

    started = time.time()
    opts = from_args(CompareOptions, args)
    result = compare(opts.student, opts.teacher, opts.out, opts.embedding_model, parse_meta(opts.meta))
    for task in result["agreement"]:
        similarity = result["embedding_similarity"][task]
        print(f"{task}\tagreement {result['agreement'][task]:.2f}\tBLEU {result['bleu'][task]:.2f}"
              + ("" if similarity is None else f"\tembedding {similarity:.3f}"))
    print(f"kdgrid compare: {cost_line(started)}")
    return 0
