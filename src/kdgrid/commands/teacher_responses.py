"""`kdgrid teacher-responses`: the teacher's greedy responses to the training prompts, the data of
sequence-level KD in Kim & Rush's sense (`kdgrid train --mode distill --method seqkd`)."""

from __future__ import annotations

HELP = "Write the teacher's greedy responses to a training set's prompts as a new LLM-Adapters training set."


def add_arguments(p) -> None:
    p.add_argument("--teacher", required=True, help="teacher model: a local HF folder or a hub id")
    p.add_argument("--data", required=True, help="training set, LLM-Adapters JSON")
    p.add_argument("--out", required=True, help="output JSON (records with output = the teacher's response)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")


def run(args) -> int:
    import time

    from ..errors import KdgridError
    from ..io import write_json
    from ..records import load_records
    from ..training.responses import greedy_responses
    from ..usage import cost_line

    started = time.time()

    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise KdgridError("--max-new-tokens and --batch-size must be >= 1")
    records = load_records(args.data)
    responses = greedy_responses(args.teacher, records, args.max_new_tokens, args.batch_size, args.precision)
    write_json(args.out, [{**record, "output": response} for record, response in zip(records, responses)])
    print(f"kdgrid teacher-responses: wrote {len(records)} records to {args.out} | {cost_line(started, args.out)}")
    return 0
