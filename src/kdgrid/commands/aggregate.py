"""`kdgrid aggregate`: join every checkpoint's scores.json and compare.json into the results table."""

from __future__ import annotations

HELP = "Build the results table (CSV and Parquet, a row per checkpoint and task) from scores.json and compare.json files."


def add_arguments(parser) -> None:
    parser.add_argument("--scores", nargs="+", required=True, metavar="FILE", help="scores.json of every evaluated checkpoint")
    parser.add_argument("--compare", nargs="*", default=[], metavar="FILE", help="compare.json of every student-teacher comparison")
    parser.add_argument("--records", nargs="*", default=[], metavar="FILE",
                        help="records.jsonl beside each scores.json: accuracy on each half of the test set (held-out temperature selection)")
    parser.add_argument("--sizes", nargs="*", default=[], metavar="NAME=BILLIONS",
                        help="model sizes in billions of parameters (default: the model registry)")
    parser.add_argument("--out-csv", required=True, metavar="FILE")
    parser.add_argument("--out-parquet", required=True, metavar="FILE")


def run(args) -> int:
    from ..analysis.table import build_table, parse_sizes, write_table

    table = build_table(args.scores, args.compare, parse_sizes(args.sizes), args.records)
    write_table(table, args.out_csv, args.out_parquet)
    print(f"kdgrid aggregate: {len(table)} rows from {len(args.scores)} checkpoints -> {args.out_csv}, {args.out_parquet}")
    return 0
