"""The Snakemake workflow without running a job: the paper grid's dry run (job counts, speed), the
tiny profile's config, config errors that name their key and value, and a clean lint."""

import re
from pathlib import Path

import pytest

from kdgrid.grid import load_config
from workflow_support import ROOT, copy_workflow, job_table, snakemake, write_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def test_paper_grid_dry_run_shows_the_study(workdir):
    # how long it takes is benchmarks/planning.py's to measure, not a timed test's
    run = snakemake(workdir, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    counts = job_table(run.stdout + run.stderr)
    assert counts == {"fetch_model": 8, "prepare_data": 2, "fingerprint_folder": 2, "sft": 16, "teacher_outputs": 12,
                      "distill": 119, "evaluate": 151, "compare": 151, "aggregate": 1, "stats": 1, "plots": 1,
                      "all": 1}
    # the dry run says what the grid will cost (kdgrid.cost_plan), once, before the job table
    assert run.stderr.count("kdgrid: estimated cost of this grid:") == 1
    assert "GPU-hours (sft" in run.stderr
    assert "8 hub model(s) to fetch into resources/hub/: about 76 GB" in run.stderr


def _planned_jobs(output):
    """(rule, wildcards, inputs, outputs) of every job a dry run lists."""
    jobs = []
    for line in output.splitlines():
        line = line.strip()
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            jobs.append((m.group(1), {}, [], []))
        elif jobs and line.startswith(("input:", "output:", "wildcards:")):
            key, _, values = line.partition(": ")
            items = [v.strip() for v in values.split(",")]
            if key == "wildcards":
                jobs[-1][1].update(v.split("=", 1) for v in items)
            else:
                jobs[-1][2 if key == "input" else 3].extend(items)
    return jobs


def test_every_job_that_loads_a_hub_model_takes_its_fetched_folder(workdir, paper):
    grid = paper
    run = snakemake(workdir, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = _planned_jobs(run.stdout)
    fetched = {wc["model"]: out[0] for rule, wc, _, out in jobs if rule == "fetch_model"}
    assert fetched == {name: f"resources/hub/{name}" for name in grid.models}  # one fetch per hub model
    made_by = {o: i for i, (_, _, _, outputs) in enumerate(jobs) for o in outputs}

    def loads(rule, wc):
        """The hub models whose base weights a job reads (the others reach it through checkpoints)."""
        if rule == "sft":
            return {wc["model"]}
        if rule == "distill":
            return {wc["student"]} | ({wc["teacher"]} if wc["ablation"] == "base-teacher" else set())
        if rule in ("teacher_outputs", "teacher_responses"):
            return {wc["teacher"]} if wc["teacher_kind"] == "base" else set()
        if rule == "evaluate" and grid.evaluations_by_ckpt[wc["ckpt"]].role == "base":
            return {grid.evaluations_by_ckpt[wc["ckpt"]].model}
        return set()

    def upstream_fetches(i):
        seen, todo, found = set(), [i], set()
        while todo:
            _, _, inputs, _ = jobs[todo.pop()]
            for path in inputs:
                if path in fetched.values():
                    found.add(path)
                elif path in made_by and made_by[path] not in seen:
                    seen.add(made_by[path])
                    todo.append(made_by[path])
        return found

    checked = 0
    for i, (rule, wc, inputs, _) in enumerate(jobs):
        for model in loads(rule, wc):
            assert fetched[model] in inputs, (rule, wc, model)
            checked += 1
        if rule in ("sft", "distill", "evaluate", "teacher_outputs"):  # its model(s) fetched before it runs
            assert upstream_fetches(i), (rule, wc)
    base_teacher_cells = [c for c in grid.cells if c.teacher_kind == "base"]
    base_teacher_caches = [t for t in grid.teacher_outputs if t.teacher_kind == "base"]
    base_evaluations = [e for e in grid.evaluations if e.role == "base"]
    assert base_teacher_cells and checked == (len(grid.sft_runs) + len(grid.cells) + len(base_teacher_cells)
                                              + len(base_teacher_caches) + len(base_evaluations))


def _set(path, value):
    def change(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize("change, named", [
    (_set(["families", "math", "training", "lr"], "fast"), ["'fast'", "families.math.training.lr"]),
    (_set(["pairs", "Qwen2.5-3B"], ["Qwen2.5-0.5b"]), ["pairs.Qwen2.5-3B", "'Qwen2.5-0.5b'", "Qwen2.5-0.5B"]),
    # the registry is the one list of methods: kdgrid.grid names a wrong one (the schema has no list of its own)
    (_set(["blocks", 0, "methods"], ["fkl", "kld"]), ["'kld'", "blocks[0] (main).methods", "known methods: fkl"]),
])
def test_snakemake_refuses_a_bad_config_naming_the_key_and_the_value(workdir, change, named, paper_config):
    config = paper_config
    change(config)
    broken = write_config(workdir / "broken.yaml", config)
    run = snakemake(workdir, "-n", "--configfile", str(broken))
    assert run.returncode != 0
    out = run.stdout + run.stderr
    for text in named:
        assert text in out, (text, out[-2000:])


@pytest.mark.parametrize("change, named", [
    (_set(["evaluation", "max_new_token"], 64), ["'max_new_token'", "['evaluation']"]),
    (_set(["models", "Qwen2.5-7B", "size_b"], -7), ["-7", "['models']['Qwen2.5-7B']['size_b']"]),
    (_set(["families", "commonsense", "data", "source"], "hub"), ["'hub'", "['data']['source']"]),
    (_set(["teacher_cache", "top_k"], 0), ["0", "['teacher_cache']['top_k']"]),
    (_set(["blocks", 1, "temperatures"], [0]), ["0", "['blocks'][1]['temperatures'][0]"]),
])
def test_schema_errors_name_the_key_and_the_value(change, named, paper_config):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = paper_config
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


@pytest.mark.parametrize("profile", ["tiny", "local", "slurm"])
def test_every_profile_prints_a_failed_job_s_log(profile):
    import yaml

    settings = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
    assert settings.get("show-failed-logs") is True  # the kdgrid error, not only "check log file(s)"
