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
    parser.add_argument("--out-cost", metavar="FILE", help="also write the cost ledger, one row per checkpoint "
                        "(tables/cost.csv; needs --grid-config)")
    parser.add_argument("--out-cost-jobs", metavar="FILE", help="and one row per job (tables/cost_jobs.csv)")
    parser.add_argument("--grid-config", metavar="JSON", help="the workflow's config as JSON (what the grid and "
                        "the cost estimate follow from); benchmarks are read from <outdir>/benchmarks")


def run(args) -> int:
    from ..analysis.table import build_table, parse_sizes, write_table

    table = build_table(args.scores, args.compare, parse_sizes(args.sizes), args.records)
    write_table(table, args.out_csv, args.out_parquet)
    print(f"kdgrid aggregate: {len(table)} rows from {len(args.scores)} checkpoints -> {args.out_csv}, {args.out_parquet}")
    if args.out_cost:
        from ..analysis.cost import grid_from_json, write_cost_tables

        if not (args.grid_config and args.out_cost_jobs):
            from ..errors import KdgridError

            raise KdgridError("--out-cost needs --grid-config and --out-cost-jobs")
        cost, jobs = write_cost_tables(grid_from_json(args.grid_config), args.out_cost, args.out_cost_jobs)
        print(f"kdgrid aggregate: cost of {len(cost)} checkpoints, {len(jobs)} jobs "
              f"({int(jobs['wall_s'].isna().sum())} without a benchmark) -> {args.out_cost}, {args.out_cost_jobs}")
    return 0
