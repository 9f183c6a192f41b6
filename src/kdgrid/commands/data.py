"""`kdgrid data`: list the task families, tasks and data sources; prepare a family's data directory."""

from __future__ import annotations

HELP = "List the data families, tasks and sources, or prepare a family's data directory (train.json, test/<task>.json)."


def add_arguments(p) -> None:
    from ..data_options import DataOptions
    from ..options import add_arguments

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="families, their tasks per source, and the sources")
    prepare = sub.add_parser("prepare", help="write OUT/train.json and OUT/test/<task>.json for one family")
    add_arguments(prepare, DataOptions)


def _list() -> int:
    from ..data_options import SOURCES
    from ..family_data import family_tasks
    from ..realdata import source_pin
    from ..tasks import FAMILIES

    for family in FAMILIES:
        print(f"{family}:")
        for source in SOURCES:
            print(f"  {source}: {', '.join(family_tasks(family, source))}")
    pin = source_pin()
    print("sources:")
    print("  synthetic: generated locally from a seed (kdgrid.synthetic)")
    print(f"  llm-adapters: github.com/{pin['repository']} at {pin['commit']} (or --local DIR)")
    return 0


def _prepare(args) -> int:
    from ..data_options import DataOptions
    from ..family_data import prepare_family, read_data_verified
    from ..io import read_json
    from ..options import from_args

    opts = from_args(DataOptions, args)
    out = prepare_family(opts.family, opts.source, opts.out, seed=opts.seed, n_train=opts.n_train,
                         n_test=opts.n_test, tasks=opts.task_list, local=opts.local, limit_test=opts.limit_test,
                         download_dir=opts.download_dir, verify=opts.verify)
    print(f"wrote {opts.family} data ({opts.source}) to {out}")
    if opts.source == "llm-adapters":
        details = read_json(out / "source.json")["details"]
        for path, how in details["verification"].items():
            print(f"  {path}: git blob {details['git_blob'][path]}, {how}")
        print("  data verified against the pinned commit's git blob ids" if read_data_verified(out) else
              "  UNVERIFIED data: not every file was checked against the pinned commit's git blob ids")
    return 0


def run(args) -> int:
    return _list() if args.action == "list" else _prepare(args)
