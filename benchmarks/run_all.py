"""Run every benchmark of issue 7, each in its own process, and keep their JSON in one folder.

    python benchmarks/run_all.py [--out-dir benchmarks/out] [--config config.yaml] [--threads 1]
        [--only step_cost,step_cost_32k,loss_memory,topk_error,grid_cost] [--quick]

(`make bench` runs it with the defaults.) Each benchmark prints its own table; at the end a summary
lists what ran, how long it took, whether it stated its goal as met, and where its JSON is. The
summary itself goes to OUT_DIR/run_all.json. The exit status is 1 when a benchmark failed to run
(not when a goal is missed: that is a finding, reported in the tables and the JSON).

--quick is a smoke run of the harness: the step-cost runs at tiny sizes with one repetition, the
grid count; loss_memory and topk_error (whose sizes are their point) are left out. Its figures mean
nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def benchmarks(args) -> dict[str, list[str]]:
    """name -> command line. Benchmarks whose script is absent are left out."""
    out = Path(args.out_dir)
    py = sys.executable
    threads = ["--threads", str(args.threads)]
    if args.quick:
        step_small = ["--batch", "2", "--seq", "16", "--reps", "1", "--warmup", "0", "--top-k", "8"]
        step_large = step_small
    else:
        step_small = []
        step_large = ["--reps", "8", "--warmup", "2"]
    found = {
        "step_cost": [py, str(HERE / "step_cost.py"), "--student-config", "tiny-s", "--teacher-config", "tiny-l",
                      *threads, *step_small, "--out", str(out / "step_cost.json")],
        "step_cost_32k": [py, str(HERE / "step_cost.py"), "--student-config", "tiny-s" if args.quick else "cpu-s",
                          "--teacher-config", "tiny-l" if args.quick else "cpu-l", *threads, *step_large,
                          "--out", str(out / "step_cost_32k.json")],
        "loss_memory": [py, str(HERE / "loss_memory.py"), "--out", str(out / "loss_memory.json")],
        "topk_error": [py, str(HERE / "topk_error.py"), "--out", str(out / "topk_error.json")],
        "grid_cost": [py, str(Path(__file__).resolve()), "--grid-cost", args.config, str(out / "grid_cost.json")],
    }
    if args.quick:  # their sizes are the point (a 152k vocabulary, trained tiny models): nothing to shrink
        found.pop("loss_memory")
        found.pop("topk_error")
    present = {name: cmd for name, cmd in found.items() if Path(cmd[1]).is_file()}
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in found]
        if unknown:
            raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(found)}")
        present = {n: cmd for n, cmd in present.items() if n in wanted}
    return present


def grid_cost(config: str, out: str) -> int:
    """Teacher forward passes of the config's grid with and without the cache (`kdgrid grid teacher-cost`)."""
    from kdgrid.grid import expand_grid, load_config
    from kdgrid.grid_summary import teacher_cost
    from kdgrid.io import write_json

    grid = expand_grid(load_config(config))
    print(teacher_cost(grid))
    cost = grid.teacher_cost()
    write_json(out, {"benchmark": "grid_cost", "config": config, "cells": len(grid.cells),
                     "cache_runs": len(grid.teacher_outputs), "top_k": grid.teacher_cache["top_k"],
                     "cache_enabled": grid.teacher_cache["enabled"],
                     "ratio": cost["without_cache"] / cost["with_cache"] if cost["with_cache"] else None, **cost,
                     "unit": "teacher forward passes over training examples (examples x epochs)"})
    print(f"wrote {out}")
    return 0


def goal_verdict(path: Path):
    """What the benchmark's JSON says about its goal: True, False, None (no goal or no verdict)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if "goal_met" in result:
        return result["goal_met"]
    goals = result.get("goals")
    if isinstance(goals, dict):
        verdicts = [v for v in goals.values() if v is not None]
        return all(verdicts) if verdicts else None
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "out"))
    parser.add_argument("--config", default=str(ROOT / "config.yaml"), help="the grid for the teacher-cost count")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the step-cost runs (default 1)")
    parser.add_argument("--only", default="", help="comma-separated subset of the benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repetition")
    parser.add_argument("--grid-cost", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grid_cost:
        return grid_cost(*args.grid_cost)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    print(f"run_all: {platform.node()} ({os.cpu_count()} cores), load average {load_before[0]:.2f}, "
          f"output in {out_dir}", flush=True)
    runs = []
    for name, cmd in benchmarks(args).items():
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        began = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        seconds = time.perf_counter() - began
        json_path = Path(cmd[cmd.index("--out") + 1] if "--out" in cmd else cmd[-1])
        runs.append({"name": name, "command": cmd[1:], "returncode": rc, "seconds": round(seconds, 1),
                     "json": str(json_path), "goal_met": goal_verdict(json_path) if rc == 0 else None})

    print("\n=== summary")
    print(f"{'benchmark':15} {'status':7} {'seconds':>8} {'goal':>9}  json")
    for r in runs:
        goal = {True: "met", False: "NOT met", None: "-"}[r["goal_met"]]
        print(f"{r['name']:15} {'ok' if r['returncode'] == 0 else 'FAILED':7} {r['seconds']:>8.1f} {goal:>9}  {r['json']}")

    from kdgrid.io import write_json

    write_json(out_dir / "run_all.json", {
        "started": started_at, "quick": args.quick, "threads": args.threads,
        "machine": {"node": platform.node(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": list(load_before), "load_average_after": list(os.getloadavg())},
        "runs": runs,
    })
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
