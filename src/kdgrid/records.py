"""LLM-Adapters records: load a JSON list of {instruction, input, output, answer} and check every one.

The real data is not perfectly uniform: some records have no `input`, and some answers are
numbers (`576.0`) rather than strings. `normalise_record` fixes exactly those two things and
rejects anything else, naming the file and the record index at fault.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import KdgridError

FIELDS = ("instruction", "input", "output", "answer")


def record_at(source, index: int) -> str:
    """How an error names a record of a JSON list: its file and its index, which counts from 0."""
    return f"{source}, record {index} (counting from 0)"


def normalise_record(record, where: str) -> dict:
    """The record as four strings; `where` (`record_at`) prefixes any error."""
    if not isinstance(record, dict):
        raise KdgridError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    out = {}
    for field in FIELDS:
        value = record.get(field)
        if value is None and field == "input":
            value = ""
        if isinstance(value, bool):
            raise KdgridError(f"{where}: field {field!r} must be a string, got {value!r}")
        if isinstance(value, (int, float)) and field == "answer":
            value = str(value)
        if value is None:
            raise KdgridError(f"{where}: field {field!r} is null" if field in record else f"{where}: missing field {field!r}")
        if not isinstance(value, str):
            raise KdgridError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        out[field] = value
    if not out["instruction"].strip():
        raise KdgridError(f"{where}: field 'instruction' is empty")
    if not out["answer"].strip():
        raise KdgridError(f"{where}: field 'answer' is empty")
    return out


def validate_records(records, source: str, allow_empty: bool = False) -> list[dict]:
    """Every record of `records` (read from `source`) normalised; an error names the record index."""
    if not isinstance(records, list):
        raise KdgridError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    if not records and not allow_empty:
        raise KdgridError(f"{source}: no records")
    return [normalise_record(r, record_at(source, i)) for i, r in enumerate(records)]


def load_records(path: str | os.PathLike, allow_empty: bool = False) -> list[dict]:
    """The validated records of an LLM-Adapters JSON file; an empty file is an error unless allowed."""
    from .io import read_json

    path = Path(path)
    return validate_records(read_json(path), str(path), allow_empty=allow_empty)
