"""`kdgrid grid`: inspect the grid a config describes, without Snakemake.

    kdgrid grid summary [--config F]        cells per block, jobs per rule
    kdgrid grid teacher-cost [--config F]   teacher forward passes with and without the cache
    kdgrid grid cells [--config F]          one line per distillation cell (its results folder)
"""

from __future__ import annotations

HELP = "inspect the expanded grid of a config: cells per block, jobs per rule, teacher costs"


def add_arguments(parser) -> None:
    parser.add_argument("view", choices=["summary", "teacher-cost", "cells"], help="what to print")
    parser.add_argument("--config", default="config.yaml", help="the workflow config (default: config.yaml)")


def summary(grid) -> str:
    lines = ["cells per block (a cell named by several blocks runs once):"]
    seen: set = set()
    width = max(len(name) for name in grid.block_cells)
    for name, cells in grid.block_cells.items():
        new = [c for c in cells if c not in seen]
        seen.update(cells)
        overlap = f"  ({len(cells) - len(new)} already in earlier blocks)" if len(new) < len(cells) else ""
        lines.append(f"  {name:<{width}}  {len(cells):>5}{overlap}")
    lines.append(f"  {'distinct cells':<{width}}  {len(grid.cells):>5}")
    lines.append("")
    lines.append("jobs per rule:")
    counts = grid.job_counts()
    for rule, n in counts.items():
        lines.append(f"  {rule:<17}  {n:>5}")
    lines.append(f"  {'total':<17}  {sum(counts.values()):>5}")
    notes = grid.notes()
    if notes:
        lines += ["", "notes:", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def teacher_cost(grid) -> str:
    cost = grid.teacher_cost()
    saving = cost["without_cache"] / cost["with_cache"] if cost["with_cache"] else float("inf")
    enabled = "enabled" if grid.teacher_cache["enabled"] else "disabled in this config"
    return "\n".join([
        "teacher forward passes over training examples (examples x epochs), whole grid:",
        f"  without the cache  {cost['without_cache']:>12,}   (every KD cell runs its teacher)",
        (f"  with the cache     {cost['with_cache']:>12,}   ({cost['cache_passes']:,} in "
         f"{len(grid.teacher_outputs)} cache runs + {cost['online_teacher_cells']} cells that run the teacher)"),
        f"  ratio              {saving:>12.2f}x",
        (f"  cells reading the cache: {cost['cached_cells']} of {len(grid.cells)} (cache {enabled}, "
         f"top_k {grid.teacher_cache['top_k']})"),
        f"  seqkd teacher generations (either way): {cost['seqkd_generation']:,} examples",
    ])


def run(args) -> int:
    from ..grid import expand_grid, load_config

    grid = expand_grid(load_config(args.config))
    if args.view == "summary":
        print(summary(grid))
    elif args.view == "teacher-cost":
        print(teacher_cost(grid))
    else:
        for cell in grid.cells:
            print(cell.id)
    return 0
