"""`kdgrid teacher-outputs`: run a teacher once over a training set and cache its top-k outputs."""

from __future__ import annotations

from ..errors import KdgridError

HELP = "Run a teacher once over a training set and cache its top-k logits per token (for off-policy KD)."


def add_arguments(p) -> None:
    from ..options import add_arguments
    from ..teacher_options import TeacherOutputsOptions

    add_arguments(p, TeacherOutputsOptions)


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
    from ..options import check, from_args
    from ..teacher_cache import cache_teacher_outputs
    from ..teacher_options import TeacherOutputsOptions

    check(from_args(TeacherOutputsOptions, args))
    temperatures = _parse_list(args.temperatures, float, "temperatures")
    widths = None if args.widths == "auto" else _parse_list(args.widths, int, "widths")
    started = time.perf_counter()
    cache = cache_teacher_outputs(args.teacher, args.data, args.top_k, temperatures, tail_samples=args.tail_samples,
                                  seed=args.seed, cutoff=args.cutoff, batch_size=args.batch_size,
                                  token_scope=args.token_scope, widths=widths, precision=args.precision,
                                  device=args.device)
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
