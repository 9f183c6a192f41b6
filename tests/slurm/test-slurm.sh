#!/usr/bin/env bash
# `make test-slurm`: install and start the throwaway SLURM cluster, run tests/test_slurm.py against it,
# stop the cluster whatever happened. Needs root (apt-get, the daemons).
set -euo pipefail
cd "$(dirname "$0")/../.."
export KDGRID_SLURM_PARTITION=${KDGRID_SLURM_PARTITION:-kdgrid-ci} KDGRID_SLURM_ACCOUNT=${KDGRID_SLURM_ACCOUNT:-kdgrid-ci}
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "test-slurm: SKIPPED: the throwaway SLURM cluster needs root and apt-get (Debian/Ubuntu); this machine has not" >&2
    exit 0
fi
started=$(date +%s)
tests/slurm/cluster.sh install
trap 'tests/slurm/cluster.sh stop' EXIT
tests/slurm/cluster.sh start
python -m pytest -q -m slurm tests/test_slurm.py -s -p no:cacheprovider --basetemp="${TMPDIR:-/tmp}/kdgrid-test-slurm" "$@"
echo "test-slurm: $(( $(date +%s) - started )) s in all"
