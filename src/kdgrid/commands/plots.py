"""`kdgrid plots`: the paper's figures from a results table."""

from __future__ import annotations

HELP = "Draw the paper's figures (PNG and PDF, with caption files) from a results table."


def add_arguments(parser) -> None:
    parser.add_argument("--table", required=True, metavar="FILE", help="results table (.csv or .parquet) from `kdgrid aggregate`")
    parser.add_argument("--out-dir", required=True, metavar="DIR",
                        help="where fig1_accuracy.png ... fig8_cost.pdf and captions/<figure>.rst go")
    parser.add_argument("--cost", metavar="FILE", help="the cost ledger (tables/cost.csv from kdgrid aggregate) for fig8_cost")


def run(args) -> int:
    from ..analysis.figures import draw_all
    from ..analysis.table import read_table

    cost = None
    if args.cost:
        from ..analysis.cost import read_cost

        cost = read_cost(args.cost)
    written, empty = draw_all(read_table(args.table), args.out_dir, cost)
    print(f"kdgrid plots: {len(written)} files -> {args.out_dir}" + (f" ({len(empty)} figure(s) without data)" if empty else ""))
    return 0
