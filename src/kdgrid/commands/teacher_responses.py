"""`kdgrid teacher-responses`: the teacher's greedy responses to the training prompts, the data of
sequence-level KD in Kim & Rush's sense (`kdgrid train --mode distill --method seqkd`)."""

from __future__ import annotations

HELP = "Write the teacher's greedy responses to a training set's prompts as a new LLM-Adapters training set."


def add_arguments(p) -> None:
    from ..options import add_arguments
    from ..teacher_options import TeacherResponsesOptions

    add_arguments(p, TeacherResponsesOptions)


def run(args) -> int:
    import time

    from ..io import write_json
    from ..options import check, from_args
    from ..records import load_records
    from ..teacher_options import TeacherResponsesOptions
    from ..training.responses import greedy_responses
    from ..usage import cost_line

    started = time.time()

    check(from_args(TeacherResponsesOptions, args))
    records = load_records(args.data)
    responses = greedy_responses(args.teacher, records, args.max_new_tokens, args.batch_size, args.precision)
    write_json(args.out, [{**record, "output": response} for record, response in zip(records, responses)])
    print(f"kdgrid teacher-responses: wrote {len(records)} records to {args.out} | {cost_line(started, args.out)}")
    return 0
