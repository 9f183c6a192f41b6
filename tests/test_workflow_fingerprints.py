"""Folder inputs take part in re-run decisions by their content, end to end (kdgrid.fingerprint): after a
complete run of the CI grid whose student is a `path:` model folder, replacing that model's weights
schedules exactly its jobs and everything downstream, editing a gold answer of a prepared test set
re-runs the evaluations of that family, and touching files schedules nothing (Snakemake dry runs)."""

import json
from pathlib import Path

import pytest

from kdgrid.grid import expand_grid, load_config
from workflow_support import JOINS, copy_workflow, planned_jobs, snakemake, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # make test-e2e runs it, not make test

STUDENT = "local-xs"


def path_model_config(workdir: Path) -> dict:
    """config/tiny-ci.yaml with its student tiny-xs as a `path:` model (a materialised copy outside the
    workflow), so that no rule makes it."""
    from kdgrid.tiny_models import materialise

    folder = workdir.parent / f"{workdir.name}-models" / STUDENT
    materialise("tiny-xs", folder)
    config = load_config(workdir / "config/tiny-ci.yaml")
    size = config["models"].pop("tiny-xs")["size_b"]
    config["models"][STUDENT] = {"path": str(folder), "size_b": size}
    config["pairs"] = {"tiny-m": [STUDENT]}
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("fingerprints"))
    write_config(workdir / "path-model.yaml", path_model_config(workdir))
    run = snakemake(workdir, "--configfile", "path-model.yaml", "--cores", "2", timeout=1200)
    assert run.returncode == 0, run.stderr[-5000:]
    return workdir


def dry_run(workdir: Path):
    return planned_jobs(workdir, "path-model.yaml")


def grid(workdir: Path):
    return expand_grid(load_config(workdir / "path-model.yaml"))


def touch_all(folder: Path) -> None:
    for file in folder.rglob("*"):
        file.touch()


def test_touching_the_model_and_the_test_sets_schedules_nothing(finished):
    g = grid(finished)
    touch_all(Path(g.models[STUDENT].path))
    for family in g.families:
        touch_all(finished / g.data_dir(family) / "test")
    assert dry_run(finished) == ({}, [])


def test_new_weights_rerun_that_model_and_everything_downstream_only(finished):
    from safetensors.torch import load_file, save_file

    weights = Path(grid(finished).models[STUDENT].path) / "model.safetensors"
    original = weights.read_bytes()
    tensors = load_file(weights)
    name = min(tensors)
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})
    try:
        counts, jobs = dry_run(finished)
        # per family: the student's SFT, its base and SFT evaluations; its 3 KD cells, their evaluations;
        # every comparison (all of them have this student)
        assert counts == {"sft": 2, "distill": 3, "evaluate": 7, "compare": 5, **JOINS}
        touched = [o for rule, outputs in jobs if rule not in JOINS for o in outputs]
        assert touched and all(STUDENT in o for o in touched)  # nothing of the teacher tiny-m alone
    finally:
        weights.write_bytes(original)
    assert dry_run(finished) == ({}, [])  # the old weights back: nothing left to do


def test_an_edited_gold_answer_reruns_that_familys_evaluations_only(finished):
    test_file = finished / grid(finished).data_dir("math") / "test" / "syn_arith.json"
    original = test_file.read_text()
    records = json.loads(original)
    records[0]["answer"] = str(records[0]["answer"]) + "0"
    test_file.write_text(json.dumps(records))
    try:
        counts, jobs = dry_run(finished)
        # math: 2 base + 2 SFT + 2 KD evaluations and the 3 comparisons of math; no training, no commonsense
        assert counts == {"evaluate": 6, "compare": 3, **JOINS}
        touched = [o for rule, outputs in jobs if rule not in JOINS for o in outputs]
        assert touched and all(o.startswith("results/math/") for o in touched)
    finally:
        test_file.write_text(original)
    assert dry_run(finished) == ({}, [])


def test_a_missing_model_folder_is_named(finished, tmp_path):
    config = load_config(finished / "path-model.yaml")
    config["models"][STUDENT]["path"] = str(tmp_path / "gone")
    write_config(finished / "gone.yaml", config)
    run = snakemake(finished, "-n", "--configfile", "gone.yaml")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"models.{STUDENT}.path: folder {tmp_path / 'gone'} does not exist" in out
