"""The Snakemake workflow without running a job: the paper grid's dry run (job counts, speed), the
tiny profile's config, config errors that name their key and value, and a clean lint."""

import copy
import time
from pathlib import Path

import pytest

from kdgrid.grid import expand_grid, load_config
from workflow_support import ROOT, copy_workflow, job_table, snakemake, write_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def test_paper_grid_dry_run_shows_the_study_in_under_15_s(workdir):
    start = time.perf_counter()
    run = snakemake(workdir, "-n")
    elapsed = time.perf_counter() - start
    assert run.returncode == 0, run.stderr[-3000:]
    counts = job_table(run.stdout + run.stderr)
    assert counts == {"prepare_data": 2, "fingerprint_folder": 2, "sft": 16, "teacher_outputs": 12, "distill": 119, "evaluate": 151,
                      "compare": 151, "aggregate": 1, "stats": 1, "plots": 1, "all": 1}
    assert elapsed < 15, f"snakemake -n took {elapsed:.1f} s"


def test_tiny_profile_runs_the_tiny_grid_alone(workdir):
    run = snakemake(workdir, "--profile", "profiles/tiny", "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    expected = {rule: n for rule, n in expand_grid(load_config(ROOT / "config/tiny.yaml")).job_counts().items() if n}
    assert job_table(out) == {**expected, "all": 1}
    assert "Qwen" not in out  # config/tiny.yaml replaced config.yaml rather than merging into it


def _paper_config():
    return load_config(ROOT / "config.yaml")


def _set(path, value):
    def change(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize("change, named", [
    (_set(["families", "math", "training", "lr"], "fast"), ["'fast'", "['math']['training']['lr']"]),
    (_set(["pairs", "Qwen2.5-3B"], ["Qwen2.5-0.5b"]), ["pairs.Qwen2.5-3B", "'Qwen2.5-0.5b'", "Qwen2.5-0.5B"]),
])
def test_snakemake_refuses_a_bad_config_naming_the_key_and_the_value(workdir, change, named):
    config = copy.deepcopy(_paper_config())
    change(config)
    broken = write_config(workdir / "broken.yaml", config)
    run = snakemake(workdir, "-n", "--configfile", str(broken))
    assert run.returncode != 0
    out = run.stdout + run.stderr
    for text in named:
        assert text in out, (text, out[-2000:])


@pytest.mark.parametrize("change, named", [
    (_set(["evaluation", "max_new_token"], 64), ["'max_new_token'", "['evaluation']"]),
    (_set(["blocks", 0, "methods"], ["fkl", "kld"]), ["'kld'", "['blocks'][0]['methods'][1]"]),
    (_set(["models", "Qwen2.5-7B", "size_b"], -7), ["-7", "['models']['Qwen2.5-7B']['size_b']"]),
    (_set(["families", "commonsense", "data", "source"], "hub"), ["'hub'", "['data']['source']"]),
    (_set(["teacher_cache", "top_k"], 0), ["0", "['teacher_cache']['top_k']"]),
    (_set(["blocks", 1, "temperatures"], [0]), ["0", "['blocks'][1]['temperatures'][0]"]),
])
def test_schema_errors_name_the_key_and_the_value(change, named):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = copy.deepcopy(_paper_config())
    change(config)
    with pytest.raises(WorkflowError) as e:
        validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
    message = str(e.value) + "".join(str(arg) for arg in e.value.args)
    for text in named:
        assert text in message, (text, message)


def test_shipped_configs_pass_the_schema():
    from snakemake.utils import validate

    for path in ("config.yaml", "config/tiny.yaml", "config/tiny-ci.yaml"):
        validate(load_config(ROOT / path), str(ROOT / "workflow/schemas/config.schema.yaml"))


def test_lint_finds_nothing(workdir):
    run = snakemake(workdir, "--lint")
    out = run.stdout + run.stderr
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]
