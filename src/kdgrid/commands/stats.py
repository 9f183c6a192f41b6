"""`kdgrid stats`: the paper's hypothesis tests (H1-H5) on a results table."""

from __future__ import annotations

import sys

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


def write_stats(table, source: str, out_csv, out_md, out_cells=None, verdict: str = "permutation"):
    """Run the tests and write their outputs atomically; not-computable tests are reported on stderr."""
    from ..analysis.hypotheses import not_computable, run_hypotheses
    from ..analysis.improvement import seed_improvements
    from ..analysis.summary import summary_markdown
    from ..io import atomic_path, write_text

    results, cells = run_hypotheses(table, source, verdict)
    runs = seed_improvements(table, cells) if cells is not None else None
    with atomic_path(out_csv) as tmp:
        results.to_csv(tmp, index=False)
    write_text(out_md, summary_markdown(results, cells, source, runs))
    if out_cells and cells is not None:
        with atomic_path(out_cells) as tmp:
            cells.to_csv(tmp, index=False)
    for line in not_computable(results):
        print(f"kdgrid stats: not computable: {line}", file=sys.stderr)
    return results


def run(args) -> int:
    from ..analysis.table import read_table

    table = read_table(args.table)
    results = write_stats(table, args.table, args.out_csv, args.out_md, args.out_cells, args.verdict)
    if args.cost:
        from ..analysis.cost import append_cost_section

        append_cost_section(args.out_md, table, args.cost, args.cost_jobs)
    print(f"kdgrid stats: {results['statistic'].notna().sum()} of {len(results)} tests computed -> {args.out_csv}, {args.out_md}")
    return 0
