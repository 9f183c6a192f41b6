"""`kdgrid data`: list the task families, tasks and data sources; prepare a family's data directory."""

from __future__ import annotations

HELP = "List the data families, tasks and sources, or prepare a family's data directory (train.json, test/<task>.json)."


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="families, their tasks per source, and the sources")
    d = sub.add_parser("prepare", help="write OUT/train.json and OUT/test/<task>.json for one family")
    d.add_argument("--family", required=True, help="math or commonsense")
    d.add_argument("--source", required=True, help="synthetic (embedded tasks) or llm-adapters (the paper's data)")
    d.add_argument("--local", help="llm-adapters only: read the files from this folder instead of downloading")
    d.add_argument("--no-verify", dest="verify", action="store_false",
                   help="llm-adapters with --local only: the folder is knowingly not the pinned files "
                        "(excerpts, your own data); read them unchecked and mark the data unverified")
    d.add_argument("--download-dir", help="llm-adapters only: where downloads live, with the sha256 lock file of "
                                          "files the pinned table lacks (default $KDGRID_DATA_CACHE or "
                                          "~/.cache/kdgrid/llm-adapters/<commit>)")
    d.add_argument("--seed", type=int, default=0, help="synthetic: generator seed; llm-adapters: subsample seed")
    d.add_argument("--n-train", type=int, help="training records (synthetic default 600; llm-adapters: all)")
    d.add_argument("--n-test", type=int, help="test records per task (synthetic default 100; llm-adapters: all)")
    d.add_argument("--tasks", help="comma-separated test tasks (default: all of the family's tasks for the source)")
    d.add_argument("--limit-test", type=int, help="keep only the first N records of every test set")
    d.add_argument("--out", required=True, help="the family's data directory to write")


def _list() -> int:
    from ..family_data import SOURCES, family_tasks
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
    from ..family_data import prepare_family, read_data_verified
    from ..io import read_json

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    out = prepare_family(args.family, args.source, args.out, seed=args.seed, n_train=args.n_train,
                         n_test=args.n_test, tasks=tasks, local=args.local, limit_test=args.limit_test,
                         download_dir=args.download_dir, verify=args.verify)
    print(f"wrote {args.family} data ({args.source}) to {out}")
    if args.source == "llm-adapters":
        details = read_json(out / "source.json")["details"]
        for path, how in details["verification"].items():
            print(f"  {path}: git blob {details['git_blob'][path]}, {how}")
        print("  data verified against the pinned commit's git blob ids" if read_data_verified(out) else
              "  UNVERIFIED data: not every file was checked against the pinned commit's git blob ids")
    return 0


def run(args) -> int:
    return _list() if args.action == "list" else _prepare(args)
