"""The final analysis: one tidy results table, the paper's hypothesis tests, its figures, and an
importer for the paper's published tables. See docs/analysis.md.

Modules: `table` (schema, building it from scores/compare JSON, reading and writing it),
`paper_import` (the paper's CSV layout -> the table), `improvement` (best KD over temperatures minus
the student's SFT, per cell), `hypotheses` (H1-H5), `summary` (Markdown), `captions` (figure names
and captions, no heavy imports), `figures` (seaborn plots).
"""
