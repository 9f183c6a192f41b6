"""The rules only wire: no rule file reads the config or the grid's config sections, each rule's params
come from one Grid method per job kind, and an input that is also a flag is passed as `{input.x}`."""

import dataclasses
import re

import pytest

from kdgrid.errors import KdgridError
from kdgrid.grid import PARAMS_OF_RULE, JobTable, expand_grid, load_config
from workflow_support import ROOT

RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk"))
# The grid's config sections and vocabularies: what the rules must ask the grid about instead.
GRID_SECTIONS = ("families", "kd", "evaluation", "compare", "teacher_cache", "resources", "disk", "models", "pairs",
                 "seeds", "config")
# The only places that touch the config: the Snakefile loads and validates it, common.smk expands it.
ALLOWED_CONFIG_USES = {
    "Snakefile": ["reject_non_finite(config)", 'validate(config, "")'],
    "common.smk": ["GRID = expand_grid(config)"],
}


def _code_lines(path):
    """(line number, code) of a file's lines, string literals emptied and comments dropped."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = re.sub(r'"[^"]*"|\'[^\']*\'', '""', line).split("#", 1)[0]
        if code.strip():
            yield number, code


@pytest.mark.parametrize("path", [ROOT / "Snakefile", *RULE_FILES], ids=lambda p: p.name)
def test_no_rule_file_reads_the_config_or_the_grids_sections(path):
    allowed = ALLOWED_CONFIG_USES.get(path.name, [])
    for number, code in _code_lines(path):
        stripped = code.strip()
        if re.search(r"\bconfig\b", code) and stripped not in allowed and not stripped.startswith("configfile:"):
            pytest.fail(f"{path.name}:{number} reads the config: {stripped}")
        for pattern in (r"config\[", r"config\.get\b", r"config\.items\b"):
            assert not re.search(pattern, code), f"{path.name}:{number}: {stripped}"
        found = re.search(r"\bGRID\.(" + "|".join(GRID_SECTIONS) + r")\b", code)
        assert not found, f"{path.name}:{number} reads GRID.{found.group(1)}: {stripped}"


def test_the_grep_finds_what_it_forbids(tmp_path):
    """The check above fails on the lines it exists for (teacher.smk and analysis.smk had them)."""
    bad = tmp_path / "bad.smk"
    bad.write_text('        embedding_model=GRID.compare_params(c).embedding_model,\n'
                   "        grid_config=json.dumps({k: v for k, v in config.items() if k != 'disk'}),\n")
    with pytest.raises(pytest.fail.Exception, match="bad.smk:2 reads the config"):
        test_no_rule_file_reads_the_config_or_the_grids_sections(bad)
    bad.write_text('        cutoff=lambda w: GRID.families[w.family].training["cutoff"],\n')
    with pytest.raises(AssertionError, match="GRID.families"):
        test_no_rule_file_reads_the_config_or_the_grids_sections(bad)


def test_every_rule_takes_its_params_from_one_grid_method():
    text = "\n".join(path.read_text() for path in RULE_FILES)
    for rule, record in PARAMS_OF_RULE.items():
        block = re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", text, flags=re.MULTILINE | re.DOTALL).group(1)
        assert f'**job_params("{rule}"' in block, rule
        for name in (f.name for f in dataclasses.fields(record)):
            assert f"{name}=" not in block.split("params:", 1)[1].split("log:", 1)[0], (rule, name)


def test_an_input_that_is_also_a_flag_is_passed_from_the_input():
    distill = (ROOT / "workflow/rules/distill.smk").read_text()
    assert 'input_flag("cache", "--teacher-cache")' in distill and "--data {input.data}" in distill
    grid = expand_grid(load_config(ROOT / "config.yaml"))
    cached = [c for c in grid.cells if grid.teacher_outputs_of(c) is not None]
    assert cached
    for cell in cached:  # the path is the rule's input, never a second time among the params
        assert grid.distill_inputs(cell)["cache"] in grid.distill_args(cell)
        assert "--teacher-cache" not in grid.distill_params(cell).distill
        assert grid.distill_inputs(cell)["cache"] not in repr(grid.distill_params(cell))


def test_a_job_table_hands_shared_values_as_they_are_and_looks_the_others_up():
    grid = expand_grid(load_config(ROOT / "config.yaml"))
    table = grid.params_table("distill")
    assert table.field("model_revision") == "locked"  # every student is a hub model without a pinned commit
    student = table.field("student")
    assert callable(student)
    cell = grid.cells[0]
    wildcards = {"family": cell.family, "teacher": cell.teacher, "student": cell.student, "method": cell.method,
                 "temperature": "1", "ablation": cell.ablation, "seed": str(cell.seed)}
    assert student(wildcards) == grid.model_ref(cell.student)
    with pytest.raises(KdgridError, match="distillation cell .* is not part of the grid of this config"):
        student({**wildcards, "seed": "7"})
    # a value holding a {pattern} Snakemake would fill in is looked up, never handed as it is
    braces = JobTable("job", "{x}", {"a": grid.aggregate_params(), "b": grid.aggregate_params()})
    assert "{" in grid.aggregate_params().grid_config and callable(braces.field("grid_config"))
    assert braces.field("sizes") == grid.aggregate_params().sizes


def test_the_aggregate_rule_gets_the_config_the_grid_was_built_from_but_its_disk():
    config = load_config(ROOT / "config/tiny.yaml")
    grid = expand_grid(config)
    assert grid.config_without_disk() == {k: v for k, v in config.items() if k != "disk"}
    config["seeds"].append(99)  # the grid keeps its own copy
    assert 99 not in grid.config_without_disk()["seeds"]
