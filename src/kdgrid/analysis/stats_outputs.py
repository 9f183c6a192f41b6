"""The files of the hypothesis tests (`kdgrid stats`, `kdgrid analyze`): hypotheses.csv, the Markdown
summary and, if asked, the per-cell improvements."""

from __future__ import annotations

import sys


def write_stats(table, source: str, out_csv, out_md, out_cells=None, verdict: str = "permutation"):
    """Run the tests and write their outputs atomically; not-computable tests are reported on stderr."""
    from ..io import atomic_path, write_text
    from .hypotheses import not_computable, run_hypotheses
    from .improvement import seed_improvements
    from .summary import summary_markdown

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
