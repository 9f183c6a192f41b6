#!/usr/bin/env bash
# The wheels benchmarks/gpu.sh installs on the GPU machine, which has no network: what kdgrid's
# training and evaluation paths import that its image lacks (deepspeed, lm-eval, datasets and their
# pure-Python needs; torch, transformers, peft, accelerate, numpy, pandas, pyarrow ... are there, as
# /work/.library/device/KINDS.md lists them). Each is pinned to the version kdgrid's own environment
# runs, fetched for CPython 3.12 on x86-64 Linux (the machine's python3), without its dependencies
# (--no-deps: each one it needs is named here). Projects that publish no wheel (deepspeed, rouge-score,
# sqlitedict, word2number) are built into one here; deepspeed's build imports torch, so it is built
# with DS_BUILD_OPS=0 (no compiled ops: DeepSpeed compiles what it needs with nvcc at run time).
#
#     benchmarks/gpu_wheels.sh [DIR]     # default .gpu-wheels (ignored by git); about 18 MB
#
# Then name DIR in the device call's carry list (benchmarks/README.md has the call).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu-wheels}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"

PINNED=(
  deepspeed==0.19.8 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5
  lm-eval==0.4.13 evaluate==0.4.6 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 httpx2==2.16.2
  httpcore2==2.16.2 truststore==0.10.5 more-itertools==11.2.1 nltk==3.10.4 rouge-score==0.1.2
  sqlitedict==2.1.0 word2number==1.1 pytablewriter==1.2.1 dataproperty==1.1.1 mbstrdecoder==1.1.5
  pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1
  defusedxml==0.7.1 pytz==2026.6
)
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

for spec in "${PINNED[@]}"; do
  name=${spec%%==*}
  stem=$(echo "$name" | tr '-' '_')
  if compgen -G "$DIR/${stem}-${spec##*==}-*.whl" >/dev/null || compgen -G "$DIR/${name}-${spec##*==}-*.whl" >/dev/null; then
    continue
  fi
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$DIR" "$spec" 2>/dev/null; then
    echo "gpu_wheels: $spec publishes no wheel for CPython 3.12 / x86-64; building one" >&2
    DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" "$spec"
  fi
done
"$PYTHON" - "$DIR" "${PINNED[@]}" <<'PY'
import sys
from pathlib import Path
from packaging.utils import canonicalize_name, parse_wheel_filename

folder, wanted = Path(sys.argv[1]), {canonicalize_name(s.split("==")[0]): s.split("==")[1] for s in sys.argv[2:]}
found = {}
for wheel in folder.glob("*.whl"):
    name, version, _, tags = parse_wheel_filename(wheel.name)
    found.setdefault(name, []).append(str(version))
    if not any(t.interpreter in ("py3", "cp312", "py2.py3") or t.interpreter.startswith("py3") for t in tags):
        sys.exit(f"gpu_wheels: {wheel.name} does not install on CPython 3.12")
extra = sorted(set(found) - set(wanted))
twice = sorted(n for n, v in found.items() if len(v) > 1)
missing = sorted(set(wanted) - set(found))
if extra or twice or missing:
    sys.exit(f"gpu_wheels: {folder}: not pinned here {extra}, two versions {twice}, missing {missing}")
size = sum(w.stat().st_size for w in folder.glob("*.whl"))
print(f"gpu_wheels: {len(found)} wheels in {folder}, {size / 2**20:.1f} MiB")
PY
