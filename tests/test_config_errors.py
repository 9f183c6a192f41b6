"""A bad config is refused before any job is built, by `snakemake -n` and `kdgrid grid` alike, in a few
lines naming the config file and the key and value at fault (kdgrid.grid.config_file, kdgrid.grid.spec)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdgrid.cli import main
from kdgrid.errors import KdgridError
from kdgrid.grid import expand_grid, grid_of, load_config, read_config, validate_config
from workflow_support import ROOT, copy_workflow, snakemake, write_config

TINY = ROOT / "config/tiny.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def tiny_config() -> dict:
    return load_config(TINY)


def refused(workdir: Path, config_file: Path) -> str:
    """The output of `snakemake -n --configfile CONFIG_FILE`, which must fail."""
    run = snakemake(workdir, "-n", "--configfile", str(config_file))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-2000:]
    assert "Job stats" not in out  # refused before any job was built
    return out


def grid_error(config_file: Path, capsys) -> str:
    """What `kdgrid grid summary --config CONFIG_FILE` prints, which must fail."""
    assert main(["grid", "summary", "--config", str(config_file)]) == 2
    return capsys.readouterr().err


def with_tiny_q(config: dict) -> dict:
    config["models"]["tiny-q"] = {"tiny": True, "size_b": 1e-4}
    config["pairs"]["tiny-m"].append("tiny-q")
    return config


def test_a_tiny_model_not_in_the_registry_is_refused_naming_its_key(workdir, tmp_path, capsys):
    config = with_tiny_q(tiny_config())
    with pytest.raises(KdgridError, match=r"config key models\.tiny-q: unknown tiny model 'tiny-q'; known tiny "
                                          r"models: tiny-l, tiny-m, tiny-s, tiny-xs"):
        expand_grid(config)
    path = write_config(tmp_path / "tiny-q.yaml", config)
    for out in (refused(workdir, path), grid_error(path, capsys)):
        assert f"{path}: config key models.tiny-q: unknown tiny model 'tiny-q'" in out, out[-2000:]


def test_a_task_its_familys_source_does_not_provide_is_refused_listing_that_sources_tasks(workdir, tmp_path,
                                                                                           capsys):
    config = tiny_config()
    config["families"]["math"]["tasks"] = ["syn_arith", "gsm8k"]  # data.source: synthetic
    expected = ("config key families.math.tasks: 'gsm8k' is not a task of families.math.data.source synthetic; "
                "synthetic math tasks: syn_arith, syn_twostep, syn_choice")
    with pytest.raises(KdgridError, match="^" + re.escape(expected) + "$"):
        expand_grid(config)
    path = write_config(tmp_path / "gsm8k.yaml", config)
    for out in (refused(workdir, path), grid_error(path, capsys)):
        assert f"{path}: {expected}" in out, out[-2000:]


@pytest.mark.parametrize("source, task, listed, not_listed", [
    ("synthetic", "syn_twostp", "synthetic math tasks: syn_arith, syn_twostep, syn_choice", "gsm8k"),
    ("llm-adapters", "gsm9k", "llm-adapters math tasks: gsm8k, SVAMP, MultiArith, SingleEq, AddSub, AQuA",
     "syn_arith"),
])
def test_a_misspelt_task_lists_its_sources_tasks_only(source, task, listed, not_listed):
    config = tiny_config()
    config["families"]["math"]["data"] = {**config["families"]["math"]["data"], "source": source}
    config["families"]["math"]["tasks"] = [task]
    with pytest.raises(KdgridError) as e:
        expand_grid(config)
    message = str(e.value)
    assert message == f"config key families.math.tasks: unknown task {task!r}; {listed}"
    assert not_listed not in message


def misspelt_top_key(tmp_path: Path) -> Path:
    """The tiny config with `teacher_cache` written `teacher_cach`."""
    config = tiny_config()
    config["teacher_cach"] = config.pop("teacher_cache")
    return write_config(tmp_path / "misspelt.yaml", config)


def test_kdgrid_grid_checks_the_schema_the_snakefile_checks(workdir, tmp_path, capsys):
    path = misspelt_top_key(tmp_path)
    expected = f"{path}: config key teacher_cach: not a known key; known keys here: outdir, models_dir, models"
    with pytest.raises(KdgridError, match="^" + re.escape(expected)):
        read_config(path)
    for out in (refused(workdir, path), grid_error(path, capsys)):
        assert expected in out, out[-2000:]


@pytest.mark.parametrize("command", [["cluster", "check", "--profile", str(ROOT / "profiles/slurm")],
                                     ["models", "list"]])
def test_the_other_commands_that_read_a_config_check_it_as_kdgrid_grid_does(tmp_path, capsys, command):
    path = misspelt_top_key(tmp_path)
    assert main([*command, "--config", str(path)]) == 2
    assert f"{path}: config key teacher_cach: not a known key" in capsys.readouterr().err


DUPLICATE_LR = """\
families:
  math:
    training:
      lr: 1.5e-3
      lr: 2.0e-3
"""


def test_a_key_given_twice_is_refused_naming_the_file_the_key_and_its_line(workdir, tmp_path, capsys):
    text = TINY.read_text()
    lr = "      lr: 3.0e-3\n"  # families.commonsense.training.lr
    assert text.count(lr) == 1
    path = tmp_path / "dup.yaml"
    path.write_text(text.replace(lr, lr + "      lr: 2.0e-3\n"))
    line = text[:text.index(lr)].count("\n") + 2
    expected = (f"{path}, line {line}: config key families.commonsense.training.lr is given twice (first at line "
                f"{line - 1}); give each key once")
    with pytest.raises(KdgridError, match="^" + re.escape(expected) + "$"):
        load_config(path)
    for out in (refused(workdir, path), grid_error(path, capsys)):
        assert expected in out, out[-2000:]


def test_duplicate_keys_are_found_at_any_depth_and_anchors_and_merge_keys_still_load(tmp_path):
    (tmp_path / "dup.yaml").write_text(DUPLICATE_LR)
    with pytest.raises(KdgridError, match=r"line 5: config key families\.math\.training\.lr is given twice"):
        load_config(tmp_path / "dup.yaml")
    (tmp_path / "block.yaml").write_text("blocks:\n- name: a\n  methods: [fkl]\n  name: b\n")
    with pytest.raises(KdgridError, match=r"line 4: config key blocks\[0\]\.name is given twice"):
        load_config(tmp_path / "block.yaml")
    (tmp_path / "merge.yaml").write_text("base: &b {lr: 1, epochs: 2}\nmath: {<<: *b, lr: 3}\nsame: *b\n")
    assert load_config(tmp_path / "merge.yaml") == {"base": {"lr": 1, "epochs": 2}, "math": {"lr": 3, "epochs": 2},
                                                     "same": {"lr": 1, "epochs": 2}}


def test_a_schema_error_is_a_few_lines_naming_the_file_key_value_and_what_was_expected(workdir, tmp_path):
    config = tiny_config()
    config["families"]["math"]["training"]["lr"] = "fast"
    path = write_config(tmp_path / "lr.yaml", config)
    out = refused(workdir, path)
    assert (f"{path}: config key families.math.training.lr: 'fast' is not of type 'number' "
            "(schema: workflow/schemas/config.schema.yaml)") in out, out[-2000:]
    assert len(out.splitlines()) < 10, out[-3000:]  # Snakemake's validate printed 563 lines


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["blocks"][2].update(temperatures=2), "config key blocks[2].temperatures: 2 is not of type 'array'"),
    (lambda c: c["families"]["math"]["data"].update(n_test=-5),
     "config key families.math.data.n_test: -5 is less than the minimum of 1"),
    (lambda c: c["blocks"][0].update(temperatrues=[1]), ("config key blocks[0].temperatrues: not a known key; "
                                                         "known keys here: name, families, teachers")),
    (lambda c: c["families"]["math"]["training"].update(finetune="qlora"),
     "config key families.math.training.finetune: 'qlora' is not one of ['lora', 'full']"),
    (lambda c: c["kd"].update(beta=float("nan")), "config key kd.beta: nan is not a finite number"),
])
def test_validate_config_names_the_key_path_and_leaves_the_config_as_it_was(change, expected):
    config = tiny_config()
    validate_config(config, [TINY])
    assert config == tiny_config()  # no defaults filled in: Snakemake's validate does that after this check
    change(config)
    with pytest.raises(KdgridError) as e:
        validate_config(config, ["my.yaml"])
    assert str(e.value).startswith(f"my.yaml: {expected}"), str(e.value)


def test_grid_errors_name_the_config_files():
    config = with_tiny_q(tiny_config())
    with pytest.raises(KdgridError, match=r"^a\.yaml, b\.yaml: config key models\.tiny-q: "):
        grid_of(config, ["a.yaml", "b.yaml"])
    assert grid_of(tiny_config(), [TINY]).cells == expand_grid(tiny_config()).cells
