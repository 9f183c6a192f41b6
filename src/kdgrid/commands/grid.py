"""`kdgrid grid`: inspect the grid a config describes, without Snakemake.

    kdgrid grid summary [--config F]        cells per block, jobs per rule
    kdgrid grid teacher-cost [--config F]   teacher forward passes with and without the cache
    kdgrid grid cells [--config F]          one line per distillation cell (its results folder)
    kdgrid grid cost [--config F]           estimated GPU-hours (CPU core-seconds) per rule, disk, cache saving
"""

from __future__ import annotations

HELP = "inspect the expanded grid of a config: cells per block, jobs per rule, teacher costs, estimated cost"


VIEWS = {
    "summary": "cells per block, jobs per rule, the hub models' disk, the teacher cache",
    "teacher-cost": "teacher forward passes with and without the cache",
    "cells": "one line per distillation cell (its results folder)",
    "cost": "estimated GPU-hours (CPU core-seconds) per rule, disk, the cache's saving",
}


def add_arguments(parser) -> None:
    parser.add_argument("view", choices=list(VIEWS), metavar="VIEW",
                        help="what to print: " + "; ".join(f"{view}: {what}" for view, what in VIEWS.items()))
    parser.add_argument("--config", default="config.yaml", help="the workflow config (default: config.yaml)")


def run(args) -> int:
    from ..grid import grid_of_file
    from ..grid_summary import summary, teacher_cost

    grid = grid_of_file(args.config)  # the file checked as the Snakefile checks it
    if args.view == "summary":
        print(summary(grid))
    elif args.view == "teacher-cost":
        print(teacher_cost(grid))
    elif args.view == "cost":
        from ..cost_plan import report

        print(report(grid))
    else:
        for cell in grid.cells:
            print(cell.id)
    return 0
