"""`kdgrid models`: the models of a grid; materialise a tiny model; fetch a hub model."""

from __future__ import annotations

import os
from pathlib import Path

HELP = ("List a grid's models, write a tiny model as a Hugging Face folder, or fetch a hub model at a pinned "
        "revision.")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="a config's models (size, source, revision, fetched or not) and the tiny models")
    ls.add_argument("--config", default="config.yaml", help="the workflow config (default: config.yaml)")
    m = sub.add_parser("materialise", help="write a tiny model (tiny-xs ... tiny-l) as a Hugging Face folder")
    m.add_argument("name", help="a tiny model name")
    m.add_argument("--out", required=True, help="the folder to write (replaced atomically)")
    m.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    f = sub.add_parser("fetch", help="download a hub model's config, safetensors weights and tokenizer at one "
                                     "revision (what the fetch_model rule runs)")
    f.add_argument("name", help="the model's name in config (for messages and the fetch record)")
    f.add_argument("--hub-id", required=True, help="owner/name on the hub")
    f.add_argument("--revision", help="the pinned commit (default: the default branch, checked against --lock)")
    f.add_argument("--lock", required=True, help="the lock file of commits fetched without a pinned revision")
    f.add_argument("--out", required=True, help="the folder to write (atomically; nothing is left on failure)")


def _source(grid, name: str) -> tuple[str, str]:
    """(where the weights come from, its revision and state) of one config model."""
    from ..hub import fetch_record, format_bytes, read_lock

    spec = grid.models[name]
    if spec.tiny:
        return "tiny: built locally (kdgrid models materialise)", "-"
    if spec.path:
        return f"path: {spec.path}", "-"
    record = fetch_record(grid.hub_model_dir(name))
    locked = read_lock(Path(grid.hub_lock_file)).get(spec.hub_id)
    revision = f"pinned {spec.revision}" if spec.revision else (f"locked {locked}" if locked else "unpinned")
    state = f"fetched {format_bytes(record['bytes'])}" if record else "not fetched"
    return f"hub: {spec.hub_id}", f"{revision}, {state}"


def _list(args) -> int:
    from ..grid import grid_of_file
    from ..models import known_models
    from ..tiny_models import tiny_param_count

    rows = [("name", "size", "source", "revision")]
    if os.path.isfile(args.config):
        grid = grid_of_file(args.config)
        for name, spec in grid.models.items():
            rows.append((name, f"{spec.size_b:g}B", *_source(grid, name)))
        print(f"models of {args.config} (models_dir: {grid.models_dir}):")
    else:
        print(f"no {args.config} here (pass --config): the tiny models only")
    listed = {r[0] for r in rows}
    rows += [(name, f"{tiny_param_count(name) / 1e6:.3g}M ({tiny_param_count(name)})",
              "tiny: built locally (kdgrid models materialise)", "-")
             for name in known_models() if name not in listed]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _materialise(args) -> int:
    from ..models import get_model
    from ..tiny_models import materialise

    get_model(args.name)  # an unknown name fails here, naming the tiny models
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = materialise(args.name, args.out, seed=args.seed)
    print(f"wrote {args.name} (seed {args.seed}) to {out}")
    return 0


def _fetch(args) -> int:
    from ..hub import fetch_model, format_bytes

    record = fetch_model(args.name, args.hub_id, args.out, lock_file=args.lock, revision=args.revision)
    pinned = "pinned" if args.revision else f"locked in {args.lock}"
    print(f"fetched {args.name} ({args.hub_id}) at {record['revision']} ({pinned}): {len(record['files'])} files, "
          f"{format_bytes(record['bytes'])} -> {args.out}")
    return 0


def run(args) -> int:
    return {"list": _list, "materialise": _materialise, "fetch": _fetch}[args.action](args)
