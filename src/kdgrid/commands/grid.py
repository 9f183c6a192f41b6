"""`kdgrid grid`: inspect the grid a config describes, without Snakemake.

    kdgrid grid summary [--config F]        cells per block, jobs per rule
    kdgrid grid teacher-cost [--config F]   teacher forward passes with and without the cache
    kdgrid grid cells [--config F]          one line per distillation cell (its results folder)
    kdgrid grid cost [--config F]           estimated GPU-hours (CPU core-seconds) per rule, disk, cache saving
"""

from __future__ import annotations

HELP = "inspect the expanded grid of a config: cells per block, jobs per rule, teacher costs, estimated cost"


def add_arguments(parser) -> None:
    parser.add_argument("view", choices=["summary", "teacher-cost", "cells", "cost"], help="what to print")
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
    lines += hub_disk(grid)
    lines += ["", *cache_conditions(grid)]
    notes = grid.notes()
    if notes:
        lines += ["", "notes:", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def hub_disk(grid) -> list[str]:
    """What the grid's hub models take in models_dir: measured once fetched, estimated before."""
    from ..hub import format_bytes

    disk = grid.fetch_disk()
    if not disk["fetched"] and not disk["to_fetch"]:
        return []
    lines = ["", f"hub models in {grid.models_dir}/ (fetch_model):"]
    for name in grid.hub_models:
        if name in disk["fetched"]:
            lines.append(f"  {name:<17}  {format_bytes(disk['fetched'][name]):>9}  fetched")
        else:
            lines.append(f"  {name:<17}  {format_bytes(disk['to_fetch'][name]):>9}  to fetch (estimated: size_b x 2 bytes)")
    total = sum(disk["fetched"].values()) + sum(disk["to_fetch"].values())
    lines.append(f"  {'total':<17}  {format_bytes(total):>9}")
    return lines


def is_dry_run(argv: list[str]) -> bool:
    """Is this Snakemake command line a dry run (-n, -np, --dry-run)? The Snakefile then prints
    `cache_conditions` above the job table."""
    return any(a in ("--dry-run", "--dryrun") or (a[:1] == "-" and a[1:2] != "-" and "n" in a[1:]) for a in argv)


def cache_conditions(grid) -> list[str]:
    """Which cells may read the teacher-output cache, and the condition under which they do."""
    may: dict[str, list] = {}
    for cell in grid.cells:
        if grid.uses_cache(cell):
            may.setdefault(cell.method, []).append(cell)
    if not may:
        return [("teacher cache: no cell reads it (disabled, or no off-policy cell at temperature <= "
                 f"{grid.teacher_cache['max_temperature']:g})")]
    lines = [(f"teacher cache (top-{grid.teacher_cache['top_k']} + {grid.teacher_cache['tail_samples']} tail samples): "
              f"{sum(map(len, may.values()))} cells may read it; each measures it against its teacher on its "
              "first step and reads it only if its loss error is within the tolerance, else runs the teacher online:")]
    for method, cells in may.items():
        temps = ", ".join(sorted({format(c.temperature, "g") for c in cells}, key=float))
        lines.append(f"  {method:<8} {len(cells):>4} cells (temperature {temps}): if |error| <= "
                     f"{grid.cache_tolerance(method):.2%}")
    return lines


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
        (f"  if every rkl/gkd cell fails its check (the cache serves them only a biased bucket value): "
         f"{cost['with_cache_biased_refused']:,} with the cache"),
        (f"  cells that may read the cache: {cost['cached_cells']} of {len(grid.cells)} (cache {enabled}, "
         f"top_k {grid.teacher_cache['top_k']})"),
        f"  seqkd teacher generations (either way): {cost['seqkd_generation']:,} examples",
        (f"  of the cached cells' passes, {cost['check_passes']:,} are their first-step checks against the "
         "online teacher (a cell whose check fails runs the teacher for all its steps)"),
        (f"  cache size: {cost['cache_bytes_per_token']} bytes per token (top-{grid.teacher_cache['top_k']}, "
         f"{grid.teacher_cache['tail_samples']} tail samples, one temperature); "
         f"{len(grid.teacher_outputs)} caches, at most {cost['cache_bytes_grid'] / 2**30:,.1f} GiB for the grid "
         "(every example at the cutoff)"),
    ])


def run(args) -> int:
    from ..grid import expand_grid, load_config

    grid = expand_grid(load_config(args.config))
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
