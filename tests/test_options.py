"""Options defined once: each command's dataclass gives its flags, the grid's defaults and flags, the
schema's documented defaults, the checks and the docs' tables (kdgrid.options)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from kdgrid import options
from kdgrid.cli import build_parser
from kdgrid.data_options import DataOptions
from kdgrid.errors import KdgridError
from kdgrid.evaluation.compare_options import CompareOptions
from kdgrid.evaluation.evaluate_options import EvaluateOptions
from kdgrid.grid import FAMILIES as GRID_FAMILIES
from kdgrid.grid import expand_grid, load_config
from kdgrid.grid.spec import (
    DEFAULT_COMPARE,
    DEFAULT_DATA,
    DEFAULT_KD,
    default_compare,
    default_data,
    default_evaluation,
    default_training,
)
from kdgrid.options import check, field_of, markdown_table
from kdgrid.tasks import FAMILIES, tasks_of
from kdgrid.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SHIPPED = ["config.yaml", "config/tiny.yaml", "config/tiny-ci.yaml", "config/real-smoke.yaml"]
REQUIRED = {"train": ["--mode", "sft", "--model", "m", "--data", "d.json", "--out", "o"],
            "evaluate": ["--model", "m", "--data-dir", "d", "--family", "math", "--out", "o"],
            "data prepare": ["--family", "math", "--source", "synthetic", "--out", "o"],
            "compare": ["--student", "s", "--teacher", "t", "--out", "o"]}
COMMANDS = [(TrainConfig, "train"), (EvaluateOptions, "evaluate"), (DataOptions, "data prepare"),
            (CompareOptions, "compare")]


def schema_sections() -> dict[str, dict]:
    schema = yaml.safe_load(SCHEMA.read_text())
    return {"training": schema["$defs"]["training"]["properties"],
            "evaluation": schema["properties"]["evaluation"]["properties"],
            "kd": schema["properties"]["kd"]["properties"],
            "data": schema["$defs"]["data"]["properties"],
            "compare": schema["properties"]["compare"]["properties"]}


def schema_disagreements() -> list[str]:
    """Where the schema's documented defaults and the options' differ (each option the schema lists,
    and each option the config sets)."""
    ours = {"training": default_training(), "evaluation": default_evaluation(), "kd": dict(DEFAULT_KD),
            "data": default_data(), "compare": default_compare()}
    wrong = []
    for section, properties in schema_sections().items():
        for key in sorted(set(properties) | set(ours[section])):
            documented = properties.get(key, {}).get("default", "(none)")
            default = ours[section].get(key, "(not an option)")
            if documented != default or type(documented) is not type(default):
                wrong.append(f"{section}.{key}: schema {documented!r}, options {default!r}")
    return wrong


def parse(command: str, *extra: str):
    return build_parser().parse_args([*command.split(), *REQUIRED[command], *extra])


def test_the_schema_documents_the_defaults_of_the_options():
    assert schema_disagreements() == []


def test_the_grid_defaults_keep_their_keys_values_and_order():
    assert default_training() == {
        "finetune": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
        "lora_targets": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], "lr": 3e-4,
        "micro_batch_size": 4, "grad_accum": 4, "warmup_steps": 100, "cutoff": 256, "epochs": 4,
        "max_steps": -1, "token_scope": "all", "precision": "auto", "save_steps": 200}
    assert list(default_training()) == ["finetune", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "lr",
                                        "micro_batch_size", "grad_accum", "warmup_steps", "cutoff", "epochs",
                                        "max_steps", "token_scope", "precision", "save_steps"]
    assert default_evaluation() == {"max_new_tokens": 256, "batch_size": 16, "sampling": False, "seed": 1234,
                                    "limit": None}
    assert DEFAULT_DATA == default_data() == {"source": "llm-adapters", "local": None, "seed": 0, "n_train": None,
                                              "n_test": None, "limit_test": None, "verify": True}
    assert list(DEFAULT_DATA) == ["source", "local", "seed", "n_train", "n_test", "limit_test", "verify"]
    assert DEFAULT_COMPARE == default_compare() == {"embedding_model": "none"}


def grid_without(config: dict, section: str, name: str):
    """The grid of `config` with `name` left out of its `section` (of every family, for a family's), the
    section's values as the grid has them and the flags its jobs get from them."""
    config = copy.deepcopy(config)
    if section in ("training", "data"):
        config["families"] = {f: {**spec, section: {k: v for k, v in spec[section].items() if k != name}}
                              for f, spec in config["families"].items()}
    else:
        config[section].pop(name)
    grid = expand_grid(config)
    if section == "training":
        return [spec.training for spec in grid.families.values()], grid.training_args("math")
    if section == "data":
        return [spec.data for spec in grid.families.values()], grid.data_args("math")
    if section == "evaluation":
        return [grid.evaluation], grid.evaluation_args()
    return [grid.compare], ["--embedding-model", grid.compare_params(grid.comparisons[0]).embedding_model]


@pytest.mark.parametrize("cls,command,section,name,new,flag", [
    (TrainConfig, "train", "training", "lr", 1e-3, ["--lr", "0.001"]),
    (EvaluateOptions, "evaluate", "evaluation", "max_new_tokens", 99, ["--max-new-tokens", "99"]),
    (DataOptions, "data prepare", "data", "seed", 7, ["--seed", "7"]),
    (CompareOptions, "compare", "compare", "embedding_model", "all-MiniLM-L6-v2",
     ["--embedding-model", "all-MiniLM-L6-v2"]),
])
def test_a_default_changed_in_its_field_changes_the_cli_the_grid_and_shows_in_the_schema_check(
        monkeypatch, cls, command, section, name, new, flag):
    monkeypatch.setattr(field_of(cls, name), "default", new)
    assert getattr(parse(command), name) == new
    values, args = grid_without(load_config(ROOT / "config/tiny-ci.yaml"), section, name)
    assert all(v[name] == new for v in values)
    assert args[args.index(flag[0]):args.index(flag[0]) + 2] == flag
    assert any(line.startswith(f"{section}.{name}: schema") for line in schema_disagreements())


def test_a_switch_on_by_default_is_turned_off_by_its_no_flag():
    """data.verify (DataOptions.verify, default true) is `--no-verify`: the grid passes it for false only."""
    verify = field_of(DataOptions, "verify")
    assert options.flag(verify) == "--no-verify"
    assert parse("data prepare").verify is True
    assert parse("data prepare", "--no-verify").verify is False
    assert options.config_flags(DataOptions, "data", {**DEFAULT_DATA, "verify": True}) == ["--seed", "0"]
    assert options.config_flags(DataOptions, "data", {**DEFAULT_DATA, "verify": False}) == [
        "--seed", "0", "--no-verify"]
    with pytest.raises(SystemExit):
        parse("data prepare", "--verify")


@pytest.mark.parametrize("cls,command", COMMANDS)
def test_the_command_line_defaults_are_the_fields_defaults(cls, command):
    args = parse(command)
    given = dict(zip(REQUIRED[command][::2], REQUIRED[command][1::2]))
    for f in fields(cls):
        expected = given[options.flag(f)] if options.is_required(f) else f.default
        if f.name == "keep_checkpoints":
            expected = int(expected)
        assert getattr(args, f.name) == expected, f.name
    assert options.from_args(cls, args) == cls(**{k.removeprefix("--").replace("-", "_"): v for k, v in given.items()})


@pytest.mark.parametrize("cls,command", COMMANDS)
def test_each_flag_s_help_gives_its_default(cls, command):
    """`kdgrid COMMAND --help` says what the docs' option tables say: the default of every flag that has one."""
    parser = build_parser()
    sub = parser
    for word in command.split():
        sub = next(a for a in sub._actions if a.dest and a.choices and word in a.choices).choices[word]
    helps = {a.option_strings[0]: a.help or "" for a in sub._actions if a.option_strings}
    for f in fields(cls):
        if options.is_required(f):
            continue
        text = " ".join(helps[options.flag(f)].split())
        if options.base_type(cls, f) is bool and f.metadata.get("cli_choices") is None:
            assert ("on by default" in text) == options.is_negated(f), options.flag(f)
            continue
        default = options.cli_default(cls, f)
        if default in (None, ()):
            continue
        said = (f"default: {default}", f"default {default}", f"{default} (default)")
        assert any(words in text for words in said), (options.flag(f), text)


def test_the_functions_the_commands_call_take_the_options_defaults():
    import inspect

    from kdgrid.evaluation.student_vs_teacher import compare
    from kdgrid.family_data import prepare_family

    prepare = inspect.signature(prepare_family).parameters
    for name in ("seed", "n_train", "n_test", "local", "limit_test", "download_dir", "verify"):
        assert prepare[name].default == field_of(DataOptions, name).default, name
    assert inspect.signature(compare).parameters["embedding_model"].default == CompareOptions.embedding_model


@pytest.mark.parametrize("module", ["train", "evaluate", "data", "compare"])
def test_the_commands_write_no_flag_by_hand(module):
    assert "add_argument(" not in (ROOT / f"src/kdgrid/commands/{module}.py").read_text()


def test_training_and_evaluation_flags_of_the_shipped_configs():
    """What the rules' params carry, for the shipped configs: a change here re-runs every job."""
    grid = expand_grid(load_config(ROOT / "config/tiny-ci.yaml"))
    assert grid.training_args("math") == [
        "--finetune", "full", "--lr", "0.003", "--micro-batch-size", "8", "--grad-accum", "1",
        "--warmup-steps", "0", "--cutoff", "64", "--epochs", "1", "--max-steps", "2", "--token-scope", "all",
        "--precision", "fp32", "--save-steps", "50"]
    assert grid.evaluation_args() == ["--max-new-tokens", "8", "--batch-size", "8", "--seed", "1234"]
    paper = expand_grid(load_config(ROOT / "config.yaml"))
    assert paper.training_args("commonsense") == [
        "--finetune", "lora", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0.05",
        "--lora-targets", "q_proj,k_proj,v_proj,up_proj,down_proj", "--lr", "0.0003", "--micro-batch-size", "4",
        "--grad-accum", "4", "--warmup-steps", "100", "--cutoff", "256", "--epochs", "3", "--max-steps", "-1",
        "--token-scope", "all", "--precision", "auto", "--save-steps", "200"]
    sampled = load_config(ROOT / "config/tiny-ci.yaml")
    sampled["evaluation"].update(sampling=True, limit=3)
    assert expand_grid(sampled).evaluation_args() == [
        "--max-new-tokens", "8", "--batch-size", "8", "--seed", "1234", "--sampling", "--limit", "3"]


def test_one_check_names_the_flag_or_the_config_key_and_the_value():
    base = {"mode": "sft", "model": "m", "data": "d", "out": "o"}
    with pytest.raises(KdgridError, match=r"^--lr 0: must be > 0$"):
        check(TrainConfig(**base, lr=0))
    with pytest.raises(KdgridError, match=r"^--lora-dropout 1.0: must be in \[0, 1\)$"):
        check(TrainConfig(**base, lora_dropout=1.0))
    with pytest.raises(KdgridError, match=r"^--precision 'fp8': must be one of auto, fp32, bf16, fp16$"):
        check(TrainConfig(**base, precision="fp8"))
    with pytest.raises(KdgridError, match=r"^--limit 0: must be > 0$"):
        check(EvaluateOptions(model="m", data_dir="d", family="math", out="o", limit=0))
    check(TrainConfig(**base))
    check(EvaluateOptions(model="m", data_dir="d", family="math", out="o"))

    config = load_config(ROOT / "config/tiny-ci.yaml")
    config["families"]["math"]["training"] = {**config["families"]["math"]["training"], "grad_accum": 0}
    with pytest.raises(KdgridError, match=r"^config key families\.math\.training\.grad_accum: 0 must be > 0$"):
        expand_grid(config)
    config = load_config(ROOT / "config/tiny-ci.yaml")
    config["evaluation"]["batch_size"] = 0
    with pytest.raises(KdgridError, match=r"^config key evaluation\.batch_size: 0 must be > 0$"):
        expand_grid(config)


@pytest.mark.parametrize("doc,cls", [("docs/training.md", TrainConfig), ("docs/evaluation.md", EvaluateOptions),
                                     ("docs/evaluation.md", CompareOptions)])
def test_the_docs_option_tables_are_the_options(doc, cls):
    text = (ROOT / doc).read_text()
    found = re.search(rf"<!-- the options of [\w.]+\.{cls.__name__}: .*? -->\n(.*?)<!-- end of the options -->",
                      text, re.DOTALL)
    assert found, f"{doc}: no options table of {cls.__name__}"
    assert found.group(1) == markdown_table(cls), (
        f"{doc}: the table differs from the options; paste this one:\n{markdown_table(cls)}")


def test_family_names_come_from_the_task_catalogue():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert tuple(schema["properties"]["families"]["propertyNames"]["enum"]) == FAMILIES
    assert tuple(schema["$defs"]["block"]["properties"]["families"]["items"]["enum"]) == FAMILIES
    assert GRID_FAMILIES is FAMILIES
    assert field_of(EvaluateOptions, "family").metadata["choices"] is FAMILIES
    pinned = json.loads((ROOT / "src/kdgrid/resources/llm_adapters.json").read_text())
    assert tuple(pinned["training_sets"]) == FAMILIES
    assert all(tasks_of(f) for f in FAMILIES)


def schema_enums(node, where: str = "") -> dict[str, list]:
    """Every enum of the schema, by where it sits ("$defs.training.properties.finetune")."""
    if not isinstance(node, dict):
        return {}
    found = {where: node["enum"]} if "enum" in node else {}
    for key, value in node.items():
        found.update(schema_enums(value, f"{where}.{key}".lstrip(".")))
    return found


def test_each_schema_enum_is_its_python_vocabulary():
    """Each vocabulary the schema lists is one in Python (a new enum needs its source named here)."""
    from kdgrid.data_options import SOURCES
    from kdgrid.methods import TEACHER_KINDS
    from kdgrid.resources_plan import ACCELERATORS

    def choices(name):
        return field_of(TrainConfig, name).metadata["choices"]

    sources = {
        "$defs.training.properties.finetune": choices("finetune"),
        "$defs.training.properties.token_scope": choices("token_scope"),
        "$defs.training.properties.precision": choices("precision"),
        "$defs.data.properties.source": SOURCES,
        "$defs.block.properties.families.items": FAMILIES,
        "$defs.block.properties.teacher_kind": TEACHER_KINDS,
        "properties.families.propertyNames": FAMILIES,
        "properties.resources.properties.accelerator": ACCELERATORS,
    }
    enums = schema_enums(yaml.safe_load(SCHEMA.read_text()))
    assert sorted(enums) == sorted(sources)
    assert {where: tuple(values) for where, values in enums.items()} == sources


VOCABULARIES = {"SOURCES": "src/kdgrid/data_options.py", "TEACHER_KINDS": "src/kdgrid/methods.py"}


@pytest.mark.parametrize("name,owner", VOCABULARIES.items())
def test_a_vocabulary_is_written_once(name, owner):
    """Its owner defines it; the grid imports it; no other module spells its values out (as a tuple or
    as a pattern's alternatives)."""
    import importlib

    import kdgrid.grid

    module = importlib.import_module(owner.removeprefix("src/").removesuffix(".py").replace("/", "."))
    values = getattr(module, name)
    assert getattr(kdgrid.grid, name) is values
    spelled = re.compile(re.escape(", ".join(f'"{v}"' for v in values)) + "|" + re.escape("|".join(values)))
    found = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "src").rglob("*.py"))
             if re.search(rf"^{name} = ", p.read_text(), re.MULTILINE) or spelled.search(p.read_text())]
    assert found == [owner]


def test_the_wildcard_patterns_are_built_from_the_teacher_kinds(monkeypatch):
    import kdgrid.grid.expand

    grid = expand_grid(load_config(ROOT / "config/tiny-ci.yaml"))
    monkeypatch.setattr(kdgrid.grid.expand, "TEACHER_KINDS", ("sft", "base", "other"))
    patterns = grid.wildcard_constraints()
    for kind in ("sft", "base", "other"):
        assert re.fullmatch(patterns["teacher_kind"], kind)
        assert re.fullmatch(patterns["ablation"], f"{kind}-teacher")
        assert re.fullmatch(patterns["comparison"], f"math/sft/tiny-xs/seed1/compare/tiny-m/{kind}-teacher")
    assert re.fullmatch(patterns["ablation"], "noise0.5")
    assert not re.fullmatch(patterns["teacher_kind"], "kd")


@pytest.mark.parametrize("path", SHIPPED)
def test_a_family_trains_on_its_data_folders_train_file(path):
    grid = expand_grid(load_config(ROOT / path))
    for family in grid.families:
        assert grid.train_data(family) == f"{grid.data_dir(family)}/train.json"


def test_the_teacher_commands_repeat_no_default():
    """teacher-outputs tokenises as training does and samples the config's tail; teacher-responses
    writes as many tokens as kd.seqkd_max_new_tokens: their defaults are those, not copies."""
    from kdgrid.grid import DEFAULT_TEACHER_CACHE

    outputs = build_parser().parse_args(["teacher-outputs", "--teacher", "t", "--data", "d", "--top-k", "4",
                                         "--out", "c.pt"])
    assert (outputs.cutoff, outputs.token_scope, outputs.precision) == (
        TrainConfig.cutoff, TrainConfig.token_scope, TrainConfig.precision)
    assert outputs.tail_samples == DEFAULT_TEACHER_CACHE["tail_samples"]
    responses = build_parser().parse_args(["teacher-responses", "--teacher", "t", "--data", "d", "--out", "r.json"])
    assert responses.max_new_tokens == DEFAULT_KD["seqkd_max_new_tokens"]
    assert responses.precision == TrainConfig.precision
    for command in ("teacher_outputs", "teacher_responses"):
        assert "add_argument(" not in (ROOT / f"src/kdgrid/commands/{command}.py").read_text()
