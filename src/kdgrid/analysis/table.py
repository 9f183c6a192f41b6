"""The results table: one tidy row per (checkpoint, task), built from the `scores.json` of every
evaluated checkpoint and the `compare.json` of every student-teacher comparison.

Columns (TABLE_COLUMNS):
- family, task (the family's tasks, then `Average`, the mean of the checkpoint's tasks), role (base|sft|kd),
  cell (the checkpoint's cell id), model (the evaluated model; the student for KD rows),
  teacher, student, method, temperature, noise_sigma, teacher_kind (kdgrid.methods.TEACHER_KINDS), seed: from
  the cell's meta;
- accuracy (%), n_items (test items scored);
- accuracy_split1, accuracy_split2: accuracy (%) on each fixed half of the test set (`splits`), from the
  checkpoint's records.jsonl (`--records`); empty without records. Held-out temperature selection uses them.
- n_items_split1, n_items_split2: the number of items in each half, from the same records (empty for Average,
  as n_items is); the held-out selection weights the halves by them.
- agreement (%), bleu, embedding_similarity: the KD student against its own teacher (KD rows only);
- sft_agreement, sft_bleu, sft_embedding_similarity: the same measures for the student's own SFT
  checkpoint against the same teacher (from the SFT student's compare.json for that teacher), so a
  KD row carries both sides of the SFT-vs-KD comparison. SFT rows themselves have no teacher.
- student_size_b (size of `model` for base/sft rows, of the student for KD rows), teacher_size_b,
  in billions of parameters.
- data_verified: meta.data_verified of the evaluation (true: the family's LLM-Adapters files matched
  the pinned commit's git blob ids; false: declared unverified; empty: synthetic data).
- model_revision, teacher_revision: the hub commits `model` and (KD rows) its teacher were fetched at
  (`kdgrid.hub`; empty for tiny and `path:` models), from the evaluation's meta.
- teacher_signal (cache|online), cache_decision_reason, cache_loss_error (KD rows, CACHE_COLUMNS): what the
  cell trained on and why, from the `teacher_signal` event of its train_log.jsonl (beside its eval/
  folder): a cell that may read the teacher-output cache measures it on its first step and reads it
  only within its tolerance (docs/teacher_cache.md). Empty where the cell has no such log or event.
- kdgrid_version, kdgrid_commit, torch_version, transformers_version, peft_version, deepspeed_version,
  lm_eval_version: the code that evaluated the checkpoint (kdgrid.provenance; empty where unknown).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import KdgridError
from ..io import atomic_path, read_json
from ..methods import TEACHER_KINDS
from ..provenance import as_columns, table_columns
from .splits import SPLIT_COLUMNS, SPLIT_COUNT_COLUMNS, split_accuracies

AVERAGE = "Average"
ROLES = ("base", "sft", "kd")
METRICS = ("agreement", "bleu", "embedding_similarity")
SFT_METRICS = tuple(f"sft_{m}" for m in METRICS)
TABLE_COLUMNS = [
    "family", "task", "role", "cell", "model", "teacher", "student", "method", "temperature",
    "noise_sigma", "teacher_kind", "seed", "accuracy", "n_items", *SPLIT_COLUMNS, *SPLIT_COUNT_COLUMNS, *METRICS,
    *SFT_METRICS, "student_size_b", "teacher_size_b", "data_verified", "model_revision", "teacher_revision", *table_columns(),
]
REVISION_COLUMNS = ("model_revision", "teacher_revision")
CACHE_COLUMNS = ["teacher_signal", "cache_decision_reason", "cache_loss_error"]
TABLE_COLUMNS += CACHE_COLUMNS


def warn(message: str) -> None:
    print(f"kdgrid: warning: {message}", file=sys.stderr)


def parse_sizes(items: list[str] | None) -> dict[str, float]:
    """`["Qwen2.5-0.5B=0.5", ...]` -> {"Qwen2.5-0.5B": 0.5}."""
    sizes = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            sizes[name] = float(value)
        except ValueError:
            raise KdgridError(f"--sizes {item!r}: expected NAME=BILLIONS, e.g. Qwen2.5-0.5B=0.5") from None
    return sizes


def model_size(name: str, sizes: dict[str, float]) -> float:
    """A model's size in billions: from `sizes` first (the config's models), else a tiny model's own."""
    if name in sizes:
        return sizes[name]
    from ..models import get_model

    try:
        return get_model(name).size_b
    except (KdgridError, ImportError):
        raise KdgridError(f"no size for model {name!r}: pass --sizes {name}=BILLIONS") from None


def _number(value, path, key, kind=float):
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise KdgridError(f"{path}: {key} = {value!r} is not a number") from None
    if isinstance(number, float) and math.isnan(number):
        return None
    return number


def _metric_dict(obj, path, key, required=True) -> dict[str, float | None]:
    values = obj.get(key)
    if values is None and not required:
        return {}
    if not isinstance(values, dict):
        raise KdgridError(f"{path}: key {key!r} must be an object {{task: value}}, got {type(values).__name__}")
    return {task: _number(v, path, f"{key}.{task}") for task, v in values.items() if task != AVERAGE}


def _checkpoint(path: Path, obj) -> dict:
    """One evaluated checkpoint from its scores.json: its identity and per-task accuracy."""
    if not isinstance(obj, dict):
        raise KdgridError(f"{path}: expected a JSON object")
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        raise KdgridError(f"{path}: missing key 'meta'")
    for key in ("cell", "role"):
        if not meta.get(key):
            raise KdgridError(f"{path}: missing meta.{key}")
    family = meta.get("family") or obj.get("family")
    if not family:
        raise KdgridError(f"{path}: missing meta.family")
    role = meta["role"]
    if role not in ROLES:
        raise KdgridError(f"{path}: meta.role = {role!r}; expected one of {', '.join(ROLES)}")
    model = meta.get("model") or obj.get("model") or meta.get("student")
    student = meta.get("student")
    teacher = meta.get("teacher")
    method = meta.get("method")
    teacher_kind = meta.get("teacher_kind")
    if role == "kd":
        student = student or model
        for key, value in (("teacher", teacher), ("student", student), ("method", method)):
            if not value:
                raise KdgridError(f"{path}: a KD checkpoint needs meta.{key}")
        model = student
        teacher_kind = teacher_kind or "sft"
        if teacher_kind not in TEACHER_KINDS:
            raise KdgridError(f"{path}: meta.teacher_kind = {teacher_kind!r}; expected {' or '.join(TEACHER_KINDS)}")
    else:
        teacher = method = teacher_kind = None
    if not model:
        raise KdgridError(f"{path}: missing meta.model")
    accuracy = _metric_dict(obj, path, "accuracy")
    if not accuracy:
        raise KdgridError(f"{path}: 'accuracy' has no task")
    n_items = obj.get("n") if isinstance(obj.get("n"), dict) else {}
    noise = _number(meta.get("noise_sigma"), path, "meta.noise_sigma")
    return {
        "path": str(path), "family": family, "role": role, "cell": meta["cell"], "model": model,
        "provenance": meta.get("provenance"),
        "teacher": teacher, "student": student, "method": method,
        "temperature": _number(meta.get("temperature"), path, "meta.temperature") if role == "kd" else None,
        "noise_sigma": (noise or 0.0) if role == "kd" else None,
        "teacher_kind": teacher_kind,
        "seed": _number(meta.get("seed"), path, "meta.seed", int),
        "data_verified": meta.get("data_verified"),
        "accuracy": accuracy,
        "n_items": {t: _number(v, path, f"n.{t}", int) for t, v in n_items.items() if t != AVERAGE},
        "compare": {},
        "sft_compare": {},
        "model_revision": meta.get("model_revision"),
        "teacher_revision": meta.get("teacher_revision") if role == "kd" else None,
        **(_teacher_signal(path) if role == "kd" else {}),
    }


def _teacher_signal(scores_path: Path) -> dict:
    """CACHE_COLUMNS of a KD checkpoint, from the train log of its cell (<cell>/eval/scores.json ->
    <cell>/train_log.jsonl)."""
    from ..io import read_jsonl

    log = scores_path.parent.parent / "train_log.jsonl"
    signals = [r for r in read_jsonl(log) if r.get("event") == "teacher_signal"] if log.is_file() else []
    if not signals:
        return {}
    last = signals[-1]
    return {"teacher_signal": last.get("teacher_signal"), "cache_decision_reason": last.get("reason"),
            "cache_loss_error": last.get("loss_error")}


def _comparison(path: Path, obj) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("meta"), dict):
        raise KdgridError(f"{path}: missing key 'meta'")
    meta = obj["meta"]
    for key in ("cell", "role", "teacher"):
        if not meta.get(key):
            raise KdgridError(f"{path}: missing meta.{key}")
    if meta["role"] not in ("sft", "kd"):
        raise KdgridError(f"{path}: meta.role = {meta['role']!r}; a comparison is for an sft or kd student")
    return {
        "path": str(path), "cell": meta["cell"], "role": meta["role"], "teacher": meta["teacher"],
        "family": meta.get("family"), "student": meta.get("student") or meta.get("model"),
        "seed": _number(meta.get("seed"), path, "meta.seed", int),
        "metrics": {m: _metric_dict(obj, path, m, required=m != "embedding_similarity") for m in METRICS},
    }


def _mean_or_none(values):
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _attach_comparisons(checkpoints: dict[str, dict], comparisons: list[dict]) -> None:
    sft_by_pair: dict[tuple, list[dict]] = {}
    for comp in comparisons:
        ckpt = checkpoints.get(comp["cell"])
        if comp["role"] == "kd":
            if ckpt is None:
                raise KdgridError(f"{comp['path']}: cell {comp['cell']!r} has no scores.json among --scores")
            if ckpt["role"] != "kd":
                raise KdgridError(f"{comp['path']}: meta.role is kd but cell {comp['cell']!r} is a {ckpt['role']} checkpoint")
            if comp["teacher"] != ckpt["teacher"]:
                raise KdgridError(
                    f"{comp['path']}: compares with teacher {comp['teacher']!r} but cell {comp['cell']!r} "
                    f"was distilled from {ckpt['teacher']!r}"
                )
            if ckpt["compare"]:
                raise KdgridError(f"{comp['path']}: a second comparison for cell {comp['cell']!r} ({ckpt['compare']['path']})")
            ckpt["compare"] = comp
        else:
            family = comp["family"] or (ckpt or {}).get("family")
            student = comp["student"] or (ckpt or {}).get("model")
            seed = comp["seed"] if comp["seed"] is not None else (ckpt or {}).get("seed")
            if not family or not student:
                raise KdgridError(f"{comp['path']}: cannot tell the SFT student: give meta.family and meta.student "
                                  f"or a scores.json for cell {comp['cell']!r}")
            sft_by_pair.setdefault((family, student, comp["teacher"]), []).append({**comp, "seed": seed})

    used = set()
    for ckpt in checkpoints.values():
        if ckpt["role"] != "kd":
            continue
        key = (ckpt["family"], ckpt["student"], ckpt["teacher"])
        candidates = sft_by_pair.get(key, [])
        same_seed = [c for c in candidates if c["seed"] == ckpt["seed"]]
        chosen = same_seed or candidates  # no comparison at this seed: the mean over the SFT student's seeds
        used.update(c["path"] for c in chosen)
        tasks = {t for c in chosen for m in METRICS for t in c["metrics"][m]}
        ckpt["sft_compare"] = {
            m: {t: _mean_or_none(c["metrics"][m].get(t) for c in chosen) for t in tasks} for m in METRICS
        } if chosen else {}
    for comps in sft_by_pair.values():
        for comp in comps:
            if comp["path"] not in used:
                warn(f"{comp['path']}: SFT student {comp['student']!r} vs teacher {comp['teacher']!r} matches no KD "
                     "cell of that pair; it does not appear in the table")


def _splits_by_scores(scores_paths, records_paths) -> dict[str, dict]:
    """scores.json path -> per-task split accuracies of the records.jsonl in the same folder."""
    if not records_paths:
        return {}
    by_dir = {str(Path(p).parent): p for p in records_paths}
    found = {}
    for path in map(str, scores_paths):
        records = by_dir.get(str(Path(path).parent))
        if records is None:
            raise KdgridError(f"{path}: no records.jsonl among --records from the same folder")
        found[path] = split_accuracies(records)
    return found


def build_table(scores_paths, compare_paths, sizes: dict[str, float], records_paths=None):
    """The results table (a pandas DataFrame with TABLE_COLUMNS) from scores.json and compare.json files
    (and the records.jsonl beside each scores.json, for the split accuracies)."""
    import pandas as pd

    splits = _splits_by_scores(scores_paths, records_paths)

    checkpoints: dict[str, dict] = {}
    for path in map(Path, scores_paths):
        ckpt = _checkpoint(path, read_json(path))
        if ckpt["cell"] in checkpoints:
            raise KdgridError(f"{path}: cell {ckpt['cell']!r} already read from {checkpoints[ckpt['cell']]['path']}")
        checkpoints[ckpt["cell"]] = ckpt
    _attach_comparisons(checkpoints, [_comparison(Path(p), read_json(p)) for p in compare_paths or []])

    family_tasks: dict[str, list[str]] = {}
    for ckpt in checkpoints.values():
        tasks = family_tasks.setdefault(ckpt["family"], [])
        tasks += [t for t in ckpt["accuracy"] if t not in tasks]

    rows = []
    for ckpt in checkpoints.values():
        tasks = family_tasks[ckpt["family"]]
        complete = set(ckpt["accuracy"]) == set(tasks)
        if not complete:
            missing = sorted(set(tasks) - set(ckpt["accuracy"]))
            warn(f"{ckpt['path']}: no score for task(s) {', '.join(missing)} of family {ckpt['family']!r}; "
                 f"its {AVERAGE} is left empty")
        own_tasks = [t for t in tasks if t in ckpt["accuracy"]]
        comp = ckpt["compare"]["metrics"] if ckpt["compare"] else {}
        sft_comp = ckpt["sft_compare"]
        ident = {k: ckpt[k] for k in ("family", "role", "cell", "model", "teacher", "student", "method",
                                      "temperature", "noise_sigma", "teacher_kind", "seed")}
        ident["student_size_b"] = model_size(ckpt["model"], sizes)
        ident["teacher_size_b"] = model_size(ckpt["teacher"], sizes) if ckpt["teacher"] else None
        ident["data_verified"] = ckpt["data_verified"]
        ident.update(model_revision=ckpt["model_revision"], teacher_revision=ckpt["teacher_revision"])
        ident.update({column: ckpt.get(column) for column in CACHE_COLUMNS})
        ident.update(as_columns(ckpt["provenance"]))  # which code scored it
        per_task = []
        for task in own_tasks:
            row = {**ident, "task": task, "accuracy": ckpt["accuracy"][task], "n_items": ckpt["n_items"].get(task),
                   **splits.get(ckpt["path"], {}).get(task, {})}
            for m in METRICS:
                row[m] = comp.get(m, {}).get(task)
                row[f"sft_{m}"] = sft_comp.get(m, {}).get(task)
            per_task.append(row)
        average = {**ident, "task": AVERAGE, "n_items": None, **dict.fromkeys(SPLIT_COUNT_COLUMNS)}
        for key in ("accuracy", *METRICS, *SFT_METRICS):
            average[key] = _mean_or_none(r[key] for r in per_task) if complete else None
        for key in SPLIT_COLUMNS:
            average[key] = _mean_or_none(r.get(key) for r in per_task) if complete else None
        rows += per_task + [average]

    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return sort_table(table, family_tasks)


def sort_table(table, family_tasks: dict[str, list[str]] | None = None):
    """Rows ordered by family, role (base, sft, kd), names, settings, then task (Average last)."""
    import pandas as pd

    family_tasks = family_tasks or {}
    task_rank = {(f, t): i for f, tasks in family_tasks.items() for i, t in enumerate(tasks)}
    table = table.assign(
        _role=table["role"].map({r: i for i, r in enumerate(ROLES)}),
        _task=[len(task_rank) + 1 if t == AVERAGE else task_rank.get((f, t), 0) for f, t in zip(table["family"], table["task"])],
    )
    keys = ["family", "_role", "model", "teacher", "method", "temperature", "noise_sigma", "teacher_kind", "seed", "_task", "task"]
    table = table.sort_values(keys, kind="stable", na_position="first").drop(columns=["_role", "_task"])
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    for column in ("temperature", "noise_sigma", "accuracy", "n_items", *SPLIT_COLUMNS, *SPLIT_COUNT_COLUMNS, *METRICS,
                   *SFT_METRICS, "student_size_b", "teacher_size_b", "cache_loss_error"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    table["data_verified"] = _nullable_bool(table["data_verified"])
    return table.reset_index(drop=True)


def _nullable_bool(column):
    """True / False / missing (synthetic data), the same read back from CSV (NaN) and Parquet (None)."""
    import pandas as pd

    return pd.array([None if pd.isna(v) else bool(v) for v in column], dtype="boolean")


def write_table(table, out_csv=None, out_parquet=None) -> None:
    """Write the table as CSV and/or Parquet, each atomically."""
    if out_csv:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
    if out_parquet:
        with atomic_path(out_parquet) as tmp:
            table.to_parquet(tmp, index=False)


def read_table(path):
    """Read a results table written by `write_table` (.csv or .parquet)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise KdgridError(f"{path}: file not found")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.suffix == ".csv":
        table = pd.read_csv(path, dtype={c: str for c in (*REVISION_COLUMNS, *table_columns())})  # "5.0" is a version
    else:
        raise KdgridError(f"{path}: expected a .csv or .parquet results table")
    if "seed" in table.columns:
        table["seed"] = pd.array(pd.to_numeric(table["seed"], errors="coerce"), dtype="Int64")
    if "data_verified" in table.columns:
        table["data_verified"] = _nullable_bool(table["data_verified"])
    for column in REVISION_COLUMNS:  # commits are text; an empty one is None in either format
        if column in table.columns:
            table[column] = table[column].astype(object).where(table[column].notna(), None)
    for column in ("teacher_signal", "cache_decision_reason"):  # text, possibly empty in every row
        if column in table.columns:
            table[column] = table[column].astype("object").where(table[column].notna(), None)
    return table
