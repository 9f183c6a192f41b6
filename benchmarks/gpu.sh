#!/usr/bin/env bash
# The GPU benchmark in one call (issue 21): install the carried wheels (deepspeed, lm-eval, datasets
# and their needs, built by benchmarks/gpu_wheels.sh) into a private folder, put this checkout's
# src/ first on the path, and run benchmarks/gpu_bench.py under a hard time limit. The JSON goes to
# $OUT/gpu_bench.json when OUT is set (the device machine), else benchmarks/out/gpu_bench.json, and is
# rewritten after every measurement, so whatever was measured before a limit is kept.
#
#     benchmarks/gpu.sh [--tiny] [gpu_bench.py options]
#
# Environment: GPU_WHEELS (default .gpu-wheels; absent: nothing is installed), GPU_SITE (default
# /tmp/kdgrid-gpu-site), GPU_BENCH_LIMIT (seconds, default 330), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${GPU_WHEELS:-.gpu-wheels}
SITE=${GPU_SITE:-/tmp/kdgrid-gpu-site}
PYTHON=${PYTHON:-python3}
LIMIT=${GPU_BENCH_LIMIT:-330}

path="$PWD/src"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  started=$(date +%s)
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl; then
    echo "gpu.sh: installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE in $(( $(date +%s) - started )) s"
    path="$path:$SITE"
  else
    echo "gpu.sh: installing the wheels of $WHEELS failed; the sections that need them will say so" >&2
  fi
else
  echo "gpu.sh: no wheels in $WHEELS: using the packages this python already has"
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout --signal=TERM --kill-after=20 "$LIMIT" "$PYTHON" benchmarks/gpu_bench.py "$@"
code=$?
[ $code -eq 124 ] && echo "gpu.sh: stopped at the time limit of $LIMIT s; the JSON holds what was measured" >&2
exit $code
