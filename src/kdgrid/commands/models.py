"""`kdgrid models`: list the models the grid knows; materialise a tiny one as a Hugging Face folder."""

from __future__ import annotations

HELP = "List the known models, or write a tiny model as a Hugging Face folder (config, weights, tokenizer)."


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="the models: name, size, parameters and where their weights come from")
    m = sub.add_parser("materialise", help="write a tiny model (tiny-xs ... tiny-l) as a Hugging Face folder")
    m.add_argument("name", help="a tiny model name")
    m.add_argument("--out", required=True, help="the folder to write (replaced atomically)")
    m.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")


def _list() -> int:
    from ..models import HUB_MODELS, get_model, known_models

    rows = [("name", "size", "params", "source")]
    for name in known_models():
        info = get_model(name)
        if name in HUB_MODELS:
            rows.append((name, f"{info.size_b:g}B", "nominal", f"hub: {info.hub_id}"))
        else:
            from ..tiny_models import tiny_param_count

            count = tiny_param_count(name)
            rows.append((name, f"{count / 1e6:.3g}M", str(count), "tiny: built locally (kdgrid models materialise)"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _materialise(args) -> int:
    import os

    from ..errors import KdgridError, unknown
    from ..models import HUB_MODELS, known_models
    from ..tiny_models import TINY_SPECS, materialise

    if args.name in HUB_MODELS:
        raise KdgridError(f"{args.name} is a hub model: it is loaded by its hub id ({HUB_MODELS[args.name].hub_id}) "
                          f"or from a local mirror folder given in config, not materialised; "
                          f"tiny models are {', '.join(sorted(TINY_SPECS))}")
    if args.name not in TINY_SPECS:
        raise unknown("model", args.name, known_models())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = materialise(args.name, args.out, seed=args.seed)
    print(f"wrote {args.name} (seed {args.seed}) to {out}")
    return 0


def run(args) -> int:
    return _list() if args.action == "list" else _materialise(args)
