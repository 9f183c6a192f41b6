"""`kdgrid stats`: the paper's hypothesis tests (H1-H5) on a results table."""

from __future__ import annotations

HELP = "Run the hypothesis tests H1-H5 on a results table; write hypotheses.csv and a Markdown summary."


def add_arguments(parser) -> None:
    parser.add_argument("--table", required=True, metavar="FILE", help="results table (.csv or .parquet) from `kdgrid aggregate`")
    parser.add_argument("--out-csv", required=True, metavar="FILE", help="hypotheses.csv")
    parser.add_argument("--out-md", required=True, metavar="FILE", help="summary.md")
    parser.add_argument("--out-cells", metavar="FILE", help="also write the per-cell improvements (CSV)")
    parser.add_argument("--cost", metavar="FILE", help="the cost ledger (tables/cost.csv): adds a Cost section to the summary")
    parser.add_argument("--cost-jobs", metavar="FILE", help="its per-job table (tables/cost_jobs.csv), with --cost")
    parser.add_argument("--verdict", choices=("permutation", "asymptotic"), default="permutation",
                        help="p-values that decide the verdicts: permutation (default) or asymptotic (the paper's)")


def run(args) -> int:
    from ..analysis.stats_outputs import write_stats
    from ..analysis.table import read_table

    table = read_table(args.table)
    results = write_stats(table, args.table, args.out_csv, args.out_md, args.out_cells, args.verdict)
    if args.cost:
        from ..analysis.cost import append_cost_section

        append_cost_section(args.out_md, table, args.cost, args.cost_jobs)
    print(f"kdgrid stats: {results['statistic'].notna().sum()} of {len(results)} tests computed -> {args.out_csv}, {args.out_md}")
    return 0
