"""`--meta key=value` options: labels (cell, role, teacher, temperature...) copied into result files."""

from __future__ import annotations

import json

from ..errors import KdgridError


def parse_meta(items: list[str] | None) -> dict:
    """`["seed=1", "model=tiny-s"]` -> `{"seed": 1, "model": "tiny-s"}`: JSON values where they parse
    (numbers, true/false, null), strings otherwise."""
    meta = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KdgridError(f"--meta {item!r}: expected key=value")
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta
