"""Read the paper's published result tables into the results table, so that the same statistics and
plots run on them as on our own grid.

The layout (LCS2-IIITD/KD_generalization, results/):
- RESULT_FILES: accuracy (%), columns Teacher, Student, Method, one per task, Average; Teacher `-` for
  BaseModel/SFT rows; a teacher name may carry a checkpoint suffix after `_` (`Qwen2.5-3B_ckpt2400`);
  Method BaseModel, SFT, student_KD_temp_T, student_RevKD_temp_T, student_GKD_temp_T,
  student_KD_base_teacher_temp_T (forward KL from the task-unaware base teacher).
- AGREEMENT_FILES (EM1*.csv) and FIDELITY_FILES (BLEU.csv): per (Teacher, Student) pair, Method SFT or
  KD. The KD row applies to every KD method and temperature of the pair with the SFT teacher (not to
  the base-teacher ablation); the SFT row becomes sft_agreement / sft_bleu of those rows.
The published Average (the rounded mean of the tasks) is kept as is. There is one run per cell: seed empty.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import KdgridError
from ..provenance import table_columns as provenance_columns
from .splits import SPLIT_COLUMNS, SPLIT_COUNT_COLUMNS
from .table import AVERAGE, TABLE_COLUMNS, sort_table, warn

RESULT_FILES = {
    "math_results_main.csv": "math",
    "llama_math_results.csv": "math",
    "cs_results_main.csv": "commonsense",
    "llama_cs_results.csv": "commonsense",
}
AGREEMENT_FILES = {"EM1.csv": "math", "EM1_cs.csv": "commonsense"}
FIDELITY_FILES = {"BLEU.csv": "math"}
METHOD_OF_PAPER_LABEL = {"KD": "fkl", "RevKD": "rkl", "GKD": "gkd"}  # the paper tables' method labels
KEY_COLUMNS = ("Teacher", "Student", "Method")
_KD_METHOD = re.compile(r"^student_(KD|RevKD|GKD)(_base_teacher)?_temp_([0-9]+(?:\.[0-9]+)?)$")
_SIZE = re.compile(r"-([0-9]+(?:\.[0-9]+)?)B$")


def size_from_name(name: str) -> float:
    """`Qwen2.5-0.5B` -> 0.5, `Llama-3.2-1B` -> 1.0."""
    match = _SIZE.search(name)
    if not match:
        raise KdgridError(f"model name {name!r}: cannot read a size like '-0.5B' from it")
    return float(match.group(1))


def teacher_name(raw: str) -> str:
    """Drop a checkpoint suffix: `Qwen2.5-3B_ckpt2400` -> `Qwen2.5-3B`."""
    return raw.split("_")[0]


def _read_csv(path: Path):
    import pandas as pd

    frame = pd.read_csv(path, dtype={c: str for c in KEY_COLUMNS})
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise KdgridError(f"{path}: no column {', '.join(missing)}")
    for column in KEY_COLUMNS:
        frame[column] = frame[column].str.strip()
    return frame


def _task_columns(frame, path: Path) -> list[str]:
    tasks = [c for c in frame.columns if c not in (*KEY_COLUMNS, "Pair", AVERAGE)]
    if not tasks:
        raise KdgridError(f"{path}: no task column")
    for task in tasks:
        if frame[task].dtype.kind not in "fi":
            raise KdgridError(f"{path}: column {task!r} is not numeric")
    return tasks


def _identity(method: str, teacher: str, student: str, path: Path, line: int) -> dict:
    if method in ("BaseModel", "SFT"):
        return {"role": "base" if method == "BaseModel" else "sft", "model": student, "teacher": None,
                "student": None, "method": None, "temperature": None, "noise_sigma": None, "teacher_kind": None}
    match = _KD_METHOD.match(method)
    if not match:
        raise KdgridError(f"{path}, line {line}: unknown Method {method!r}; expected BaseModel, SFT or "
                          "student_{KD,RevKD,GKD}[_base_teacher]_temp_T")
    if teacher in ("", "-"):
        raise KdgridError(f"{path}, line {line}: KD row {method!r} has no Teacher")
    return {"role": "kd", "model": student, "teacher": teacher_name(teacher), "student": student,
            "method": METHOD_OF_PAPER_LABEL[match.group(1)], "temperature": float(match.group(3)), "noise_sigma": 0.0,
            "teacher_kind": "base" if match.group(2) else "sft"}


def _result_rows(path: Path, family: str) -> list[dict]:
    frame = _read_csv(path)
    tasks = _task_columns(frame, path)
    if AVERAGE not in frame.columns:
        raise KdgridError(f"{path}: no column {AVERAGE!r}")
    rows = []
    for line, record in enumerate(frame.to_dict("records"), start=2):
        ident = _identity(record["Method"], record["Teacher"], record["Student"], path, line)
        cell = "/".join(str(v) for v in (family, ident["role"], ident["teacher"] or "-", record["Student"], record["Method"]))
        for task in tasks + [AVERAGE]:
            rows.append({**ident, "family": family, "task": task, "cell": cell, "seed": None,
                         "accuracy": record[task], "n_items": None})
    return rows


def _pair_measures(directory: Path, files: dict[str, str], column: str) -> dict:
    """(family, teacher, student, SFT|KD) -> {task: value} from EM1*/BLEU files present in `directory`."""
    measures = {}
    for name, family in files.items():
        path = directory / name
        if not path.is_file():
            warn(f"{path}: not found; {column} is left empty for family {family!r}")
            continue
        frame = _read_csv(path)
        tasks = _task_columns(frame, path)
        for line, record in enumerate(frame.to_dict("records"), start=2):
            if record["Method"] not in ("SFT", "KD"):
                raise KdgridError(f"{path}, line {line}: Method {record['Method']!r}; expected SFT or KD")
            key = (family, teacher_name(record["Teacher"]), record["Student"], record["Method"])
            if key in measures:
                raise KdgridError(f"{path}, line {line}: a second {record['Method']} row for "
                                  f"{record['Teacher']} -> {record['Student']}")
            measures[key] = {task: record[task] for task in tasks}
    return measures


def import_paper(directory):
    """The paper's published tables in `directory` -> the results table (TABLE_COLUMNS)."""
    import pandas as pd

    directory = Path(directory)
    if not directory.is_dir():
        raise KdgridError(f"{directory}: not a directory")
    present = [name for name in RESULT_FILES if (directory / name).is_file()]
    if not present:
        raise KdgridError(f"{directory}: none of the paper's result files ({', '.join(RESULT_FILES)})")
    for name in RESULT_FILES:
        if name not in present:
            warn(f"{directory / name}: not found; its rows are left out")
    rows = [row for name in present for row in _result_rows(directory / name, RESULT_FILES[name])]
    table = pd.DataFrame(rows)
    duplicated = table.duplicated(["family", "role", "model", "teacher", "method", "temperature", "teacher_kind", "task"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise KdgridError(f"{directory}: {first['model']} ({first['cell']}) appears twice in family {first['family']!r}")

    per_pair = {"agreement": _pair_measures(directory, AGREEMENT_FILES, "agreement"),
                "bleu": _pair_measures(directory, FIDELITY_FILES, "bleu")}
    for measure, values in per_pair.items():
        kd, sft = [], []
        for row in table.itertuples():
            key = (row.family, row.teacher, row.student)
            applies = row.role == "kd" and row.teacher_kind == "sft"
            kd.append(_pair_value(values, key + ("KD",), row.task) if applies else None)
            sft.append(_pair_value(values, key + ("SFT",), row.task) if applies else None)
        table[measure], table[f"sft_{measure}"] = kd, sft
    for column in ("embedding_similarity", "sft_embedding_similarity", *SPLIT_COLUMNS, *SPLIT_COUNT_COLUMNS):  # not published
        table[column] = None
    table["data_verified"] = None  # published numbers: kdgrid checked no data of theirs
    # what kdgrid records of its own runs (revisions, cache decisions, the code that scored them): the
    # paper published none
    for column in ("model_revision", "teacher_revision", "teacher_signal", "cache_decision_reason",
                   "cache_loss_error", *provenance_columns()):
        table[column] = None

    sizes = {name: size_from_name(name) for name in set(table["model"]) | set(table["teacher"].dropna())}
    table["student_size_b"] = table["model"].map(sizes)
    table["teacher_size_b"] = table["teacher"].map(sizes)
    family_tasks = {f: list(dict.fromkeys(table.loc[table["family"] == f, "task"])) for f in table["family"].unique()}
    return sort_table(table[TABLE_COLUMNS], family_tasks)


def _pair_value(values: dict, key: tuple, task: str):
    """A per-pair measure for one task; Average is the mean over the pair's tasks."""
    by_task = values.get(key)
    if by_task is None:
        return None
    if task == AVERAGE:
        return sum(by_task.values()) / len(by_task)
    return by_task.get(task)
