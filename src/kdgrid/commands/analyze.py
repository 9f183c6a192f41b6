"""`kdgrid analyze --import-paper`: rerun our statistics and plots on the paper's published tables."""

from __future__ import annotations

from pathlib import Path

HELP = "Import the paper's published result tables and run the same statistics and plots on them."


def add_arguments(parser) -> None:
    parser.add_argument("--import-paper", required=True, metavar="DIR",
                        help="folder with the paper's CSVs (math_results_main.csv, cs_results_main.csv, llama_*_results.csv, EM1*.csv, BLEU.csv)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="writes results.csv, results.parquet, hypotheses.csv, cells.csv, summary.md and plots/")


def run(args) -> int:
    from ..analysis.figures import draw_all
    from ..analysis.paper_import import import_paper
    from ..analysis.stats_outputs import write_stats
    from ..analysis.table import write_table

    out = Path(args.out)
    table = import_paper(args.import_paper)
    write_table(table, out / "results.csv", out / "results.parquet")
    # the paper's verdicts come from its asymptotic p-values; the permutation ones are reported beside them
    results = write_stats(table, args.import_paper, out / "hypotheses.csv", out / "summary.md", out / "cells.csv",
                          verdict="asymptotic")
    written, _ = draw_all(table, out / "plots")
    print(f"kdgrid analyze: {len(table)} rows, {results['statistic'].notna().sum()} tests, {len(written)} figure files -> {out}")
    return 0
