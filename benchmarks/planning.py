"""How long `snakemake -n` takes to plan the paper grid as its seeds grow (issue 21, part 3).

    python benchmarks/planning.py [--seeds 1,21,84] [--config config.yaml] [--out benchmarks/out/planning.json]

For each size, config.yaml with `seeds: [1..n]` (everything else as it is) is dry-run in a private copy
of the workflow, whose results folder is empty: every job is planned. Prints jobs, wall seconds, CPU
seconds of the snakemake process and milliseconds per job, and whether the cost per job stays flat
(linear planning: the largest size within 1.5x of the smallest per-job cost of the sizes above 1000
jobs) and the goal (under 30 s and under 1 ms a job at the largest size) is met. The machine's load
average is recorded before and after: on a shared machine the wall time is only comparable at the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_support import copy_workflow  # the suite's private copy of the workflow

GOAL_S, GOAL_MS_PER_JOB = 30.0, 1.0


def total_jobs(output: str) -> int:
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3:]:
                parts = row.split()
                if len(parts) == 2 and parts[0] == "total":
                    return int(parts[1])
    raise RuntimeError("snakemake -n printed no job stats:\n" + output[-2000:])


def dry_run(workdir: Path, config: dict, seeds: int) -> dict:
    config = dict(config, seeds=list(range(1, seeds + 1)), teacher_seed=None)
    path = workdir / f"seeds{seeds}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), "--cores", "1"],
                         cwd=workdir, env=env, text=True, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"snakemake -n with {seeds} seeds failed:\n{run.stderr[-3000:]}")
    jobs = total_jobs(run.stdout + run.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seeds": seeds, "jobs": jobs, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "ms_per_job": round(1000 * wall / jobs, 3), "cpu_ms_per_job": round(1000 * cpu / jobs, 3)}


def run(args) -> dict:
    config = yaml.safe_load(Path(args.config).read_text())
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kdgrid-planning-") as tmp:
        workdir = Path(tmp)
        copy_workflow(workdir)
        config["outdir"] = "results"  # inside the copy: nothing of it exists yet
        for seeds in args.seeds:
            rows.append(dry_run(workdir, config, seeds))
            print(f"{rows[-1]['seeds']:>5} seeds  {rows[-1]['jobs']:>6} jobs  {rows[-1]['wall_s']:>7.1f} s  "
                  f"{rows[-1]['cpu_s']:>7.1f} CPU s  {rows[-1]['ms_per_job']:>6.2f} ms/job", flush=True)
    large = [r for r in rows if r["jobs"] >= 1000]
    linear = (max(r["ms_per_job"] for r in large) <= 1.5 * min(r["ms_per_job"] for r in large)) if len(large) > 1 else None
    biggest = rows[-1]
    return {"rows": rows, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(), "linear": linear,
            "goal": f"the largest size under {GOAL_S:g} s and {GOAL_MS_PER_JOB:g} ms a job",
            "goal_met": biggest["wall_s"] < GOAL_S and biggest["ms_per_job"] < GOAL_MS_PER_JOB}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,21,84", type=lambda s: sorted(int(x) for x in s.split(",")),
                        help="grid sizes: the number of seeds of each dry run (default 1,21,84)")
    parser.add_argument("--config", default=str(ROOT / "config.yaml"), help="the grid to grow (default config.yaml)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out/planning.json"), help="where the JSON goes")
    args = parser.parse_args(argv)
    result = run(args)
    print(f"load average before {result['load_before']}, after {result['load_after']} ({result['cpus']} CPUs); "
          f"linear: {result['linear']}; goal ({result['goal']}): {'met' if result['goal_met'] else 'not met'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
