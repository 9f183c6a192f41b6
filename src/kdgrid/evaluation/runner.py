"""Score one checkpoint on the tasks of a family through lm-eval, and write its evaluation folder.

One job loads the model once (lm-eval's HFLM) and runs every task of the family, batched. The
evaluation folder holds
- `scores.json`: `{"meta", "model", "family", "accuracy": {task: %, "Average": %}, "n": {task: n},
  "settings"}`, accuracies in percent like the paper's tables;
- `records.jsonl`: one row per item: task, doc_id, prompt, generation, extracted, gold, correct.
Both appear together, and only when the whole evaluation succeeded.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import KdgridError
from ..hub import revisions_of
from ..io import atomic_dir, read_json, write_json, write_jsonl
from ..options import field_of, problem
from ..records import record_at
from ..tasks import get_task, tasks_of
from .evaluate_options import EvaluateOptions
from .lmeval_tasks import FILTER_NAME, METRIC, GenerationSettings, write_task_configs

SCORES_FILE = "scores.json"
RECORDS_FILE = "records.jsonl"


HUB_ID_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+"


def resolve_model(model: str) -> str:
    """What HFLM loads for `model`: a Hugging Face folder (a checkpoint, or a hub model the workflow
    fetched), or any hub id `owner/name` (read from the local hub cache: evaluation runs offline).
    """
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise KdgridError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    if re.fullmatch(HUB_ID_REGEX, model):
        return model
    raise KdgridError(f"{model}: checkpoint folder not found, and not a hub id (owner/name)")


def find_test_sets(data_dir, family: str, tasks: list[str] | None = None) -> dict[str, Path]:
    """`{task: DATA_DIR/test/<task>.json}` for the requested tasks, or every test set of the family."""
    family_tasks = [t.name for t in tasks_of(family)]
    test_dir = Path(data_dir) / "test"
    if tasks is None:
        tasks = [t for t in family_tasks if (test_dir / f"{t}.json").is_file()]
        if not tasks:
            raise KdgridError(f"{test_dir}: no test set of a {family} task (expected <task>.json)")
    found = {}
    for task in tasks:
        if get_task(task).family != family:
            raise KdgridError(f"task {task!r} is not a {family} task; {family} tasks: {', '.join(family_tasks)}")
        found[task] = test_dir / f"{task}.json"
        _check_test_set(found[task])
    return found


def _check_test_set(path: Path) -> None:
    records = read_json(path)
    if not isinstance(records, list):
        raise KdgridError(f"{path}: a test set must be a JSON list of records")
    if not records:
        raise KdgridError(f"{path}: empty test set")
    for i, record in enumerate(records):
        for key in ("instruction", "answer"):
            if not isinstance(record, dict) or key not in record:
                raise KdgridError(f"{record_at(path, i)}: missing key {key!r}")


def _load_hf_model(model: str, device: str | None, batch_size: int, dtype: str):
    import torch
    from lm_eval.models.huggingface import HFLM

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return HFLM(pretrained=resolve_model(model), device=device, batch_size=batch_size, dtype=dtype)
    except (OSError, ValueError) as e:
        raise KdgridError(f"{model}: cannot load the model ({e})") from e


def _records(task: str, samples: list[dict]) -> list[dict]:
    rows = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        extracted = sample["filtered_resps"][0]
        rows.append({
            "task": task,
            "doc_id": sample["doc_id"],
            "prompt": sample["arguments"][0][0],
            "generation": sample["resps"][0][0],
            "extracted": extracted or None,
            "gold": sample["doc"]["answer"],
            "correct": bool(sample[METRIC]),
        })
    return rows


def evaluate(
    model,
    data_dir,
    family: str,
    out_dir,
    tasks: list[str] | None = None,
    settings: GenerationSettings | None = None,
    batch_size: int = EvaluateOptions.batch_size,
    seed: int = EvaluateOptions.seed,
    limit: int | None = None,
    device: str | None = None,
    dtype: str = EvaluateOptions.dtype,
    rule: str = EvaluateOptions.rule,
    meta: dict | None = None,
    threads: int | None = None,
) -> dict:
    """Evaluate `model` (a model name/folder for HFLM, or an lm-eval LM object) and write `out_dir`.

    `threads` sets torch's CPU threads (on a busy CPU, 1 is often fastest for tiny models).
    Returns the scores written to `out_dir/scores.json`.
    """
    settings = settings or GenerationSettings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    for name, value in (("limit", limit), ("threads", threads), ("batch_size", batch_size)):
        why = problem(field_of(EvaluateOptions, name), value)
        if why:
            raise KdgridError(f"{name} {value!r}: {why}")
    test_files = find_test_sets(data_dir, family, tasks)
    if isinstance(model, str):
        model_name = model
        resolve_model(model)  # a bad name fails here, before lm-eval is imported
    else:
        model_name = type(model).__name__

    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    if threads is not None:
        torch.set_num_threads(threads)

    lm = _load_hf_model(model, device, batch_size, dtype) if isinstance(model, str) else model
    with tempfile.TemporaryDirectory(prefix="kdgrid-lmeval-") as config_dir:
        names = write_task_configs(test_files, Path(config_dir), settings, rule)
        task_manager = TaskManager(include_path=config_dir, include_defaults=False)
        with quiet_git_hash():
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(names.values()),
                task_manager=task_manager,
                num_fewshot=0,
                limit=limit,
                log_samples=True,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                bootstrap_iters=0,
            )

    accuracy, counts, records = {}, {}, []
    for task, name in names.items():
        accuracy[task] = 100.0 * results["results"][name][f"{METRIC},{FILTER_NAME}"]
        counts[task] = len(results["samples"][name])
        records += _records(task, results["samples"][name])
    accuracy["Average"] = sum(accuracy[t] for t in names) / len(names)

    from ..provenance import provenance

    revisions = revisions_of(model if isinstance(model, str) else None)
    scores = {
        "meta": {**dict(meta or {}), **revisions, "provenance": provenance()},
        "model": model_name,
        "family": family,
        "accuracy": accuracy,
        "n": counts,
        "settings": {
            **settings.to_dict(),
            "rule": rule,
            "seed": seed,
            "batch_size": batch_size,
            "limit": limit,
            "device": str(lm.device) if hasattr(lm, "device") else device,
            "dtype": dtype,
            "threads": torch.get_num_threads(),
            "lm_eval": lm_eval.__version__,
        },
    }
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / SCORES_FILE, scores)
        write_jsonl(tmp / RECORDS_FILE, records)
    return scores


def _git_describe_quietly() -> str | None:
    """lm-eval's `get_git_commit_hash` (the commit of the working directory, if it is a git checkout)
    without git's `fatal: not a git repository` on stderr outside one."""
    import subprocess
    import sys

    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    if done.returncode != 0:
        if "not a git repository" not in done.stderr:
            sys.stderr.write(done.stderr)  # any other failure of git is still reported
        return None
    return done.stdout.strip() or None


@contextmanager
def quiet_git_hash():
    """lm-eval records the git commit of the working directory by running `git describe` with stderr
    left on the job's log, where outside a checkout git writes `fatal: not a git repository` into every
    evaluation log. Only that call is replaced; every other message of lm-eval and git stays."""
    import lm_eval.evaluator

    original = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = _git_describe_quietly
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = original
