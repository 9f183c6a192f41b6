"""Held-out temperature selection on test sets whose two fixed halves differ in size (a hash bit per
item rarely splits them evenly): each half weighs by its number of items, so with nothing to select the
held-out improvement is the paper's improvement exactly."""

import pandas as pd
import pytest

from kdgrid.analysis.hypotheses import run_hypotheses
from kdgrid.analysis.improvement import kd_cells
from kdgrid.analysis.summary import summary_markdown
from kdgrid.analysis.table import TABLE_COLUMNS

SIZES = {"s": 0.5, "T": 7.0}


def checkpoint(role, model, halves, teacher=None, method=None, temperature=None):
    """The table rows of one checkpoint: halves = {task: (correct1, n1, correct2, n2)}, then its Average
    (the mean of the tasks; no item counts, as in the aggregated table)."""
    ident = {"family": "math", "role": role, "cell": f"{role}/{teacher}/{model}/{method}/{temperature}", "model": model,
             "teacher": teacher, "student": model if role == "kd" else None, "method": method,
             "temperature": temperature, "noise_sigma": 0.0 if role == "kd" else None,
             "teacher_kind": "sft" if role == "kd" else None, "seed": 1,
             "student_size_b": SIZES[model], "teacher_size_b": SIZES[teacher] if teacher else None}
    out = [{**ident, "task": task, "accuracy": 100 * (c1 + c2) / (n1 + n2), "n_items": n1 + n2,
            "accuracy_split1": 100 * c1 / n1, "accuracy_split2": 100 * c2 / n2, "n_items_split1": n1, "n_items_split2": n2}
           for task, (c1, n1, c2, n2) in halves.items()]
    mean = {k: sum(r[k] for r in out) / len(out) for k in ("accuracy", "accuracy_split1", "accuracy_split2")}
    return out + [{**ident, "task": "Average", **mean}]


def table_of(records):
    table = pd.DataFrame(records).reindex(columns=TABLE_COLUMNS)
    table["seed"] = pd.array(table["seed"], dtype="Int64")
    return table


def test_one_temperature_leaves_nothing_to_select_on_unequal_halves():
    # 30 items split 13/17 and 14/16, as the hash splits the tiny world's syn_pick and syn_bool
    records = checkpoint("sft", "T", {"A": (10, 13, 12, 17), "B": (9, 14, 10, 16)})
    records += checkpoint("sft", "s", {"A": (6, 13, 4, 17), "B": (7, 14, 3, 16)})
    for method, a, b in (("fkl", (5, 13, 7, 17), (8, 14, 4, 16)), ("rkl", (9, 13, 2, 17), (2, 14, 11, 16))):
        records += checkpoint("kd", "s", {"A": a, "B": b}, teacher="T", method=method, temperature=1.0)
    results, cells = run_hypotheses(table_of(records))
    assert len(cells) == 6 and (cells["heldout_temperatures"] == "1/1").all()
    assert cells["improvement_heldout"].tolist() == cells["improvement"].tolist()  # exactly, not approximately
    assert "selection on the test items accounts for +0.00 points (per cell +0.00 to +0.00)" in summary_markdown(
        results, cells, "t.csv")


def test_two_temperatures_weigh_each_half_by_its_items():
    # task A: 4 + 6 items, task B: 5 + 5; (correct on half 1, n1, correct on half 2, n2)
    records = checkpoint("sft", "T", {"A": (4, 4, 6, 6), "B": (5, 5, 5, 5)})
    records += checkpoint("sft", "s", {"A": (2, 4, 3, 6), "B": (2, 5, 2, 5)})
    records += checkpoint("kd", "s", {"A": (1, 4, 5, 6), "B": (2, 5, 2, 5)}, teacher="T", method="fkl", temperature=1.0)
    records += checkpoint("kd", "s", {"A": (3, 4, 2, 6), "B": (2, 5, 3, 5)}, teacher="T", method="fkl", temperature=2.0)
    cells = kd_cells(table_of(records)).set_index("task")

    # A: temperature 2 wins half 1 (3/4), temperature 1 half 2 (5/6); half 2 scored at 2: 2 of 6 correct,
    # half 1 scored at 1: 1 of 4 correct -> 3 of 10 items, against the student's SFT 5 of 10
    assert cells.loc["A", "heldout_temperatures"] == "2/1"
    assert cells.loc["A", "improvement_heldout"] == pytest.approx(100 * (2 + 1) / 10 - 100 * 5 / 10)
    # Average: split1 32.5 (t1) / 57.5 (t2), split2 61.7 (t1) / 46.7 (t2) -> again 2/1, scored per task
    # (A 3 of 10, B 3 + 2 of 10) and averaged over the tasks, as the Average's accuracy is
    assert cells.loc["Average", "heldout_temperatures"] == "2/1"
    assert cells.loc["Average", "improvement_heldout"] == pytest.approx((30.0 + 50.0) / 2 - (50.0 + 40.0) / 2)
    assert cells.loc["Average", "improvement"] == pytest.approx(50.0 - 45.0)  # the paper's: tie 50/50, temperature 1


def test_halves_without_item_counts_choose_differently_only_with_counts():
    records = checkpoint("sft", "T", {"A": (4, 4, 6, 6)}) + checkpoint("sft", "s", {"A": (2, 4, 3, 6)})
    records += checkpoint("kd", "s", {"A": (1, 4, 5, 6)}, teacher="T", method="fkl", temperature=1.0)
    records += checkpoint("kd", "s", {"A": (3, 4, 2, 6)}, teacher="T", method="fkl", temperature=2.0)
    table = table_of(records).drop(columns=["n_items_split1", "n_items_split2"])  # a table aggregated before the counts
    cells = kd_cells(table).set_index("task")
    assert cells.loc["A", "heldout_temperatures"] == "2/1" and pd.isna(cells.loc["A", "improvement_heldout"])
