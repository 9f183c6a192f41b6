"""A fixed split of every test set into two halves, for choosing the temperature on one half and
scoring it on the other (held-out selection, `improvement.kd_cells`).

An item's half depends only on its task and doc_id (the lowest bit of the first byte of
sha256("<task>/<doc_id>")), so it is the same for every checkpoint, every run and every machine, and
the results table stays deterministic. The per-half accuracies and item counts come from each
evaluation's records.jsonl (one row per scored item, with `task`, `doc_id` and `correct`). The halves
are rarely the same size (a hash bit per item), so whatever combines them weights each by its count.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import KdgridError

SPLITS = ("split1", "split2")
SPLIT_COLUMNS = tuple(f"accuracy_{s}" for s in SPLITS)
SPLIT_COUNT_COLUMNS = tuple(f"n_items_{s}" for s in SPLITS)


def split_of(task: str, doc_id) -> int:
    """1 or 2: the half of the test set the item belongs to."""
    return 1 + (hashlib.sha256(f"{task}/{doc_id}".encode()).digest()[0] & 1)


def split_accuracies(path) -> dict[str, dict[str, float | int | None]]:
    """{task: {"accuracy_split1": %, "accuracy_split2": %, "n_items_split1": n1, "n_items_split2": n2}} from
    one records.jsonl (accuracy None for an empty half)."""
    path = Path(path)
    if not path.is_file():
        raise KdgridError(f"{path}: file not found (the per-item records of an evaluation)")
    counts: dict[str, list[int]] = {}  # task -> [correct1, n1, correct2, n2]
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                task, doc_id, correct = record["task"], record["doc_id"], record["correct"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise KdgridError(f"{path}, line {line_no}: expected a JSON object with task, doc_id and correct ({err})") from None
            if not isinstance(correct, bool):
                raise KdgridError(f"{path}, line {line_no}: correct = {correct!r} is not true/false")
            c = counts.setdefault(task, [0, 0, 0, 0])
            half = 2 * (split_of(task, doc_id) - 1)
            c[half] += int(correct)
            c[half + 1] += 1
    return {task: {"accuracy_split1": 100.0 * c[0] / c[1] if c[1] else None,
                   "accuracy_split2": 100.0 * c[2] / c[3] if c[3] else None,
                   "n_items_split1": c[1], "n_items_split2": c[3]}
            for task, c in counts.items()}
