"""The rules only wire: no rule file reads the config or the grid's config sections, builds text or
spells a path piece of the layout, each rule's params come from one Grid method per job kind (no flag
from a wildcard), an input that is also a flag is passed as `{input.x}`, and library code lives outside
kdgrid.commands."""

import ast
import dataclasses
import pkgutil
import re

import pytest

import kdgrid.commands
import kdgrid.grid.layout
from kdgrid.errors import KdgridError
from kdgrid.grid import PARAMS_OF_RULE, JobTable, expand_grid, load_config
from workflow_support import ROOT

RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk"))
# The grid's config sections and vocabularies: what the rules must ask the grid about instead.
GRID_SECTIONS = ("families", "kd", "evaluation", "compare", "teacher_cache", "resources", "disk", "models", "pairs",
                 "seeds", "config")
# The only places that touch the config: the Snakefile loads and validates it, common.smk expands it.
ALLOWED_CONFIG_USES = {
    "Snakefile": ["check_config_files(config, workflow.configfiles, os.path.join(workflow.basedir, SCHEMA))",
                  "validate(config, SCHEMA)"],
    "common.smk": ["GRID = grid_of(config, workflow.configfiles)"],
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
    # what common.smk, sft.smk, data.smk and fingerprint.smk had
    bad.write_text('def hub_disk_summary():\n    disk = GRID.fetch_disk()\n'
                   '    line = (f"kdgrid: {len(disk)} hub model(s) to fetch")\n    return line\n')
    with pytest.raises(AssertionError, match="bad.smk:3 builds text"):
        test_no_rule_file_function_builds_text(bad)
    bad.write_text('        " --seed {wildcards.seed} {params.training} --cell {params.cell}"\n'
                   '        "kdgrid data prepare --family {wildcards.family} {params.args} --out {params.out}"\n')
    with pytest.raises(AssertionError, match="bad.smk:1 passes a wildcard as --seed"):
        test_no_rule_passes_a_wildcard_as_a_flag(bad)
    bad.write_text('    wildcard_constraints:\n        kind="test-sets",\n')
    with pytest.raises(AssertionError, match="bad.smk:2 spells 'test-sets'"):
        test_no_rule_file_spells_a_path_piece_of_the_layout(bad)


def _function_lines(path):
    """(line number, code) of the lines inside the functions a rule file defines."""
    depth = None  # the indentation of the `def` whose body we are in
    for number, code in _code_lines(path):
        indent = len(code) - len(code.lstrip())
        if depth is not None and indent <= depth:
            depth = None
        if depth is None and code.lstrip().startswith("def "):
            depth = indent
        elif depth is not None:
            yield number, code


@pytest.mark.parametrize("path", [ROOT / "Snakefile", *RULE_FILES], ids=lambda p: p.name)
def test_no_rule_file_function_builds_text(path):
    """A function in a rule file looks a job's values up; text (a summary, a report) is built by kdgrid."""
    for number, code in _function_lines(path):
        assert not re.search(r'\bf""', code), f"{path.name}:{number} builds text: {code.strip()}"


# The shell text and params of a rule are among Snakemake's re-run triggers, and these two jobs are upstream
# of every other: moving their flag into a params record would re-run every data and SFT job (the teachers'
# too) of an existing results folder, for the same value (the path's wildcard is the record's value).
KEPT_WILDCARD_FLAGS = {("sft.smk", "--seed"), ("data.smk", "--family")}


@pytest.mark.parametrize("path", [ROOT / "Snakefile", *RULE_FILES], ids=lambda p: p.name)
def test_no_rule_passes_a_wildcard_as_a_flag(path):
    """A flag's value comes from the job's params record (kdgrid.grid.rule_params), as every other one,
    but for KEPT_WILDCARD_FLAGS."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found = re.search(r"(--[\w-]+)[ =]\{wildcards\.", line)
        if found and (path.name, found.group(1)) in KEPT_WILDCARD_FLAGS:
            continue
        assert not found, f"{path.name}:{number} passes a wildcard as {found.group(1)}: {line.strip()}"


def _layout_pieces() -> set[str]:
    """The fixed parts of kdgrid.grid.layout's paths ("fingerprints", "test-sets", "train.json", ...)."""
    paths = [v for k, v in vars(kdgrid.grid.layout).items() if k.isupper() and not k.endswith("REGEX")
             and isinstance(v, str)]
    return {piece for p in paths for piece in p.split("/") if piece and "{" not in piece}


@pytest.mark.parametrize("path", [ROOT / "Snakefile", *RULE_FILES], ids=lambda p: p.name)
def test_no_rule_file_spells_a_path_piece_of_the_layout(path):
    """Paths come from kdgrid.grid.layout (through common.smk's names), never spelled again in a rule.
    A rule's name and its inputs', outputs' and params' names may read like a path piece ("sft", "model")."""
    text = "\n".join(p.read_text() for p in (ROOT / "Snakefile", *RULE_FILES))
    names = set(re.findall(r"^\s*(\w+)=", text, re.MULTILINE)) | set(re.findall(r"^(?:local)?rule (\w+):", text,
                                                                                   re.MULTILINE))
    pieces = _layout_pieces() - names
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for literal in re.findall(r'"([^"]*)"', line.split("#", 1)[0]):
            for piece in pieces:
                assert not re.search(rf"(^|/){re.escape(piece)}($|/)", literal), \
                    f"{path.name}:{number} spells {piece!r} (kdgrid.grid.layout): {line.strip()}"


def _imports_a_command_module(path) -> bool:
    return bool(re.search(r"\bkdgrid\.commands\b|^\s*from \.+commands\b|^\s*from \.+ import commands\b",
                          path.read_text(), re.MULTILINE))


def test_only_the_cli_imports_a_command_module():
    """Library code lives outside kdgrid.commands (docs/architecture.md): the workflow, the benchmarks and
    the library import none of its modules; only kdgrid.cli runs them."""
    src = ROOT / "src/kdgrid"
    files = [ROOT / "Snakefile", *RULE_FILES, *sorted((ROOT / "benchmarks").glob("*.py")),
             *(p for p in sorted(src.rglob("*.py")) if p.parent != src / "commands" and p != src / "cli.py")]
    assert len(files) > 50
    importing = [str(p.relative_to(ROOT)) for p in files if _imports_a_command_module(p)]
    assert importing == []
    assert _imports_a_command_module(src / "cli.py")  # the check sees the one that does


def test_a_command_module_holds_its_arguments_and_run_only():
    """`HELP`, `add_arguments`, `run` and private helpers: a function others could import belongs in a library
    module (kdgrid.grid_summary holds what `kdgrid grid` prints)."""
    modules = [m.name for m in pkgutil.iter_modules(kdgrid.commands.__path__)]
    assert "grid" in modules
    for name in modules:
        tree = ast.parse((ROOT / f"src/kdgrid/commands/{name}.py").read_text())
        public = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                  and not node.name.startswith("_")]
        assert set(public) <= {"add_arguments", "run"}, (name, public)


def test_every_rule_takes_its_params_from_one_grid_method():
    text = "\n".join(path.read_text() for path in RULE_FILES)
    for rule, record in PARAMS_OF_RULE.items():
        block = re.search(rf"^rule {rule}:\n(.*?)(?=^rule |\Z)", text, flags=re.MULTILINE | re.DOTALL).group(1)
        assert f'**job_params("{rule}"' in block, rule
        for name in (f.name for f in dataclasses.fields(record)):
            assert f"{name}=" not in block.split("params:", 1)[1].split("log:", 1)[0], (rule, name)


def test_the_wildcards_two_rules_pass_as_flags_hold_the_grids_values():
    """sft's --seed and prepare_data's --family are their paths' wildcards (see KEPT_WILDCARD_FLAGS): the
    seed of every SFT run's path is the run's seed (a teacher's run at teacher_seed), and the families'
    paths are the grid's families."""
    grid = expand_grid({**load_config(ROOT / "config/tiny.yaml"), "seeds": [1, 2], "teacher_seed": 2})
    for run in grid.sft_runs:
        assert grid.sft_params(run).cell.endswith(f"/seed{run.seed}") and run.id.endswith(f"/seed{run.seed}")
    assert {r.seed for r in grid.sft_runs if r.model in grid.pairs} == {2}
    assert {r.seed for r in grid.sft_runs if r.model not in grid.pairs} == {1, 2}
    assert set(grid.models_of_family) == set(grid.families)


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
