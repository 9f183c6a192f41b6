"""A grid in words: what `kdgrid grid` prints (summary, teacher-cost) and what the workflow shows before
its job table (the hub models' disk, and in a dry run which cells may read the teacher cache).
Nothing heavy is imported here: the Snakefile uses it at parse time."""

from __future__ import annotations

from .hub import BYTES_PER_PARAMETER, format_bytes


def summary(grid) -> str:
    """`kdgrid grid summary`: cells per block, jobs per rule, the hub models' disk, the cache, notes."""
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
    rule_width = max(len(rule) for rule in counts)
    for rule, n in counts.items():
        lines.append(f"  {rule:<{rule_width}}  {n:>5}")
    lines.append(f"  {'total':<{rule_width}}  {sum(counts.values()):>5}")
    hub = hub_disk(grid, per_model=True)
    if hub:
        lines += ["", *hub]
    lines += ["", *cache_conditions(grid)]
    notes = grid.notes()
    if notes:
        lines += ["", "notes:", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def hub_disk(grid, per_model: bool = False) -> list[str]:
    """What the grid's hub models take in models_dir, measured for the fetched ones and estimated for the
    others: the line of totals the workflow prints before its job table while some are still to fetch;
    with `per_model` (`kdgrid grid summary`), a line per model above it, fetched or not."""
    disk = grid.fetch_disk()
    fetched, to_fetch = disk["fetched"], disk["to_fetch"]
    if not to_fetch and not (per_model and fetched):
        return []
    if to_fetch:
        total = (f"{len(to_fetch)} hub model(s) to fetch into {grid.models_dir}/: about "
                 f"{format_bytes(sum(to_fetch.values()))} (estimated from size_b at {BYTES_PER_PARAMETER} bytes per "
                 "parameter)")
        if fetched:
            total += f"; {len(fetched)} fetched already: {format_bytes(sum(fetched.values()))}"
    else:
        total = f"{len(fetched)} hub model(s) fetched into {grid.models_dir}/: {format_bytes(sum(fetched.values()))}"
    if not per_model:
        return [total]
    rows = [f"  {name:<17}  {format_bytes({**to_fetch, **fetched}[name]):>9}  "
            f"{'fetched' if name in fetched else 'to fetch'}" for name in grid.hub_models]
    return ["hub models (fetch_model):", *rows, f"  {total}"]


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
    """`kdgrid grid teacher-cost`: the grid's teacher forward passes with and without the cache (Grid.teacher_cost)."""
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
