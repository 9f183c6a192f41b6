"""Hub models through Snakemake, end to end: a grid whose two models are hub ids kdgrid has never heard of,
served by the stand-in hub (tests/hub_stand_in.py, HF_ENDPOINT). fetch_model downloads each once; every
other job loads the fetched folder with the hub offline; the revisions reach the train logs, the
evaluations and the results table; pinning a revision re-runs that model's jobs only; and a re-run that
would fetch another revision fails at the fetch, leaving no folder."""

import copy
import json
import os
import shutil

import pytest

from hub_stand_in import HubStandIn
from kdgrid.grid import load_config
from kdgrid.hub import LOCK_NAME
from workflow_support import JOINS, ROOT, copy_workflow, job_table, snakemake, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # make test-e2e runs it, not make test

STUDENT, TEACHER = "newlab/student-x", "newlab/teacher-y"


def hub_config(workdir):
    config = copy.deepcopy(load_config(ROOT / "config/tiny-ci.yaml"))
    config["models_dir"] = str(workdir / "shared" / "hub")
    config["models"] = {"student-x": {"hub_id": STUDENT, "size_b": 4.944e-05},
                        "teacher-y": {"hub_id": TEACHER, "size_b": 0.000820864}}
    config["pairs"] = {"teacher-y": ["student-x"]}
    config["families"].pop("commonsense")
    config["blocks"] = [{"name": "main", "families": ["math"], "methods": ["fkl"]}]
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from kdgrid.tiny_models import materialise

    folders = tmp_path_factory.mktemp("served")
    with HubStandIn() as hub:
        hub.serve(STUDENT, materialise("tiny-xs", folders / "tiny-xs"))
        hub.serve(TEACHER, materialise("tiny-m", folders / "tiny-m"))
        yield hub


@pytest.fixture(scope="module")
def finished(served, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("hub-grid"))
    config = write_config(workdir / "hub.yaml", hub_config(workdir))
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_ENDPOINT", served.url)
    patch.setenv("HF_HOME", str(workdir / "hf-home"))  # an empty hub cache: nothing can load from there
    try:
        run = snakemake(workdir, "--configfile", str(config), "--cores", "2", timeout=1200)
        assert run.returncode == 0, run.stderr[-5000:]
        yield workdir, config, patch
    finally:
        patch.undo()


def test_each_hub_model_is_fetched_once_and_every_stage_uses_the_fetched_folder(finished, served):
    workdir, _, _ = finished
    models_dir = workdir / "shared" / "hub"
    lock = json.loads((models_dir / LOCK_NAME).read_text())["revisions"]
    assert lock == {STUDENT: served.models[STUDENT].commit, TEACHER: served.models[TEACHER].commit}
    # The hub saw only the two fetches: one revision lookup and one download of each file per model.
    gets = [r for r in served.requests if r.startswith("GET") and "/resolve/" in r]
    assert len(gets) == len(set(gets)) == len(served.models[STUDENT].files()) + len(served.models[TEACHER].files())
    assert sum("/revision/main" in r for r in served.requests) == 2

    results = workdir / "results"
    student, teacher = lock[STUDENT], lock[TEACHER]
    header = json.loads((results / "math/teacher-y__student-x/fkl/t1/sft-teacher/seed1/train_log.jsonl")
                        .read_text().splitlines()[0])
    assert header["model_revision"] == student and header["teacher_revision"] == teacher
    kd_scores = json.loads((results / "math/teacher-y__student-x/fkl/t1/sft-teacher/seed1/eval/scores.json").read_text())
    assert kd_scores["meta"]["model_revision"] == student and kd_scores["meta"]["teacher_revision"] == teacher
    base = json.loads((results / "math/base/teacher-y/eval/scores.json").read_text())
    assert base["meta"]["model_revision"] == teacher

    from kdgrid.analysis.table import read_table

    table = read_table(results / "tables/results.csv")
    assert set(table["model_revision"]) == {student, teacher}
    kd = table[table["role"] == "kd"]
    assert set(kd["teacher_revision"]) == {teacher} and set(kd["model_revision"]) == {student}
    assert table[table["role"] != "kd"]["teacher_revision"].isna().all()
    assert "HF_HUB_OFFLINE=0 kdgrid models fetch" not in (results / "logs/sft/math/sft/student-x/seed1.log").read_text()


def test_pinning_a_models_revision_re_runs_that_models_jobs_only(finished, served):
    workdir, _, _ = finished
    config = hub_config(workdir)
    config["models"]["student-x"]["revision"] = served.models[STUDENT].commit
    pinned = write_config(workdir / "pinned.yaml", config)
    run = snakemake(workdir, "-n", "--configfile", str(pinned))
    assert run.returncode == 0, run.stderr[-3000:]
    # the student's fetch, SFT and KD cell; its three evaluations (base, SFT, KD) and both comparisons
    assert job_table(run.stdout) == {"fetch_model": 1, "sft": 1, "distill": 1, "evaluate": 3, "compare": 2, **JOINS}


def test_a_re_run_that_resolves_another_revision_fails_at_the_fetch(finished, served):
    workdir, config, _ = finished
    models_dir = workdir / "shared" / "hub"
    assert job_table(snakemake(workdir, "-n", "--configfile", str(config)).stdout) == {}  # the lock changes nothing
    # Next month, on a fresh models folder: the grid again (here one of its evaluations), while the hub's
    # main branch has moved on.
    later = hub_config(workdir)
    later["outdir"] = "results-next-month"
    later = write_config(workdir / "later.yaml", later)
    locked = served.models[STUDENT].commit
    served.serve(STUDENT, served.models[STUDENT].folder, commit="e" * 40)
    shutil.rmtree(models_dir / "student-x")
    try:
        run = snakemake(workdir, "--configfile", str(later), "--cores", "1",
                        "results-next-month/math/base/student-x/eval/scores.json", timeout=600)
    finally:
        served.serve(STUDENT, served.models[STUDENT].folder, commit=locked)
    assert run.returncode != 0
    log = (workdir / "results-next-month/logs/fetch_model/student-x.log").read_text()
    assert "e" * 40 in log and locked in log and "models.student-x.revision" in log, log
    assert sorted(p.name for p in models_dir.iterdir() if not p.name.startswith(".")) == [LOCK_NAME, "teacher-y"]
    assert not [p for p in models_dir.iterdir() if p.name.endswith(".tmp")]
    assert not (workdir / "results-next-month/math/base/student-x/eval").exists()


def test_the_real_checkpoint_served_as_a_hub_model_runs_through_fetch_and_evaluation(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct (tests/real_checkpoint.py) under its real hub id: the fetch_model rule
    downloads it from the stand-in, and its base evaluation runs offline from the fetched folder."""
    import real_checkpoint

    real = real_checkpoint.ensure()
    workdir = copy_workflow(tmp_path / "real-grid")
    config = copy.deepcopy(load_config(ROOT / "config/tiny-ci.yaml"))
    config["models_dir"] = str(tmp_path / "hub")
    config["models"] = {"SmolLM2-135M": {"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "size_b": 0.135},
                        "SmolLM2-10L": {"hub_id": "kdgrid-tests/SmolLM2-10-layers", "size_b": 0.05}}
    config["pairs"] = {"SmolLM2-135M": ["SmolLM2-10L"]}
    config["families"].pop("commonsense")
    config["blocks"] = [{"name": "main", "families": ["math"], "methods": ["fkl"]}]
    config["evaluation"].update(limit=2, max_new_tokens=16)
    path = write_config(workdir / "real.yaml", config)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with HubStandIn() as hub:
        commit = hub.serve("HuggingFaceTB/SmolLM2-135M-Instruct", real.teacher)
        hub.serve("kdgrid-tests/SmolLM2-10-layers", real.student)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        run = snakemake(workdir, "--configfile", str(path), "--cores", "2", "results/math/base/SmolLM2-135M/eval/scores.json",
                        timeout=900)
    assert run.returncode == 0, run.stderr[-5000:]
    assert job_table(run.stdout + run.stderr) == {"fetch_model": 1, "prepare_data": 1, "fingerprint_folder": 1, "evaluate": 1}
    folder = tmp_path / "hub" / "SmolLM2-135M"
    for name in os.listdir(real.teacher):  # every file of the checkpoint (chat template too), byte for byte
        assert (folder / name).read_bytes() == (real.teacher / name).read_bytes(), name
    scores = json.loads((workdir / "results/math/base/SmolLM2-135M/eval/scores.json").read_text())
    assert scores["meta"]["model_revision"] == commit and scores["n"] == {"syn_arith": 2}
