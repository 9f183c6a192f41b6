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
from kdgrid.errors import KdgridError
from kdgrid.evaluation.evaluate_options import EvaluateOptions
from kdgrid.grid import FAMILIES as GRID_FAMILIES
from kdgrid.grid import expand_grid, load_config
from kdgrid.grid.spec import DEFAULT_KD, default_evaluation, default_training
from kdgrid.options import check, field_of, markdown_table
from kdgrid.tasks import FAMILIES, tasks_of
from kdgrid.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SHIPPED = ["config.yaml", "config/tiny.yaml", "config/tiny-ci.yaml", "config/real-smoke.yaml"]
REQUIRED = {"train": ["--mode", "sft", "--model", "m", "--data", "d.json", "--out", "o"],
            "evaluate": ["--model", "m", "--data-dir", "d", "--family", "math", "--out", "o"]}


def schema_sections() -> dict[str, dict]:
    schema = yaml.safe_load(SCHEMA.read_text())
    return {"training": schema["$defs"]["training"]["properties"],
            "evaluation": schema["properties"]["evaluation"]["properties"],
            "kd": schema["properties"]["kd"]["properties"]}


def schema_disagreements() -> list[str]:
    """Where the schema's documented defaults and the options' differ (each option the schema lists,
    and each option the config sets)."""
    ours = {"training": default_training(), "evaluation": default_evaluation(), "kd": dict(DEFAULT_KD)}
    wrong = []
    for section, properties in schema_sections().items():
        for key in sorted(set(properties) | set(ours[section])):
            documented = properties.get(key, {}).get("default", "(none)")
            default = ours[section].get(key, "(not an option)")
            if documented != default or type(documented) is not type(default):
                wrong.append(f"{section}.{key}: schema {documented!r}, options {default!r}")
    return wrong


def parse(command: str, *extra: str):
    return build_parser().parse_args([command, *REQUIRED[command], *extra])


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


@pytest.mark.parametrize("cls,command,name,new,flag", [
    (TrainConfig, "train", "lr", 1e-3, ["--lr", "0.001"]),
    (EvaluateOptions, "evaluate", "max_new_tokens", 99, ["--max-new-tokens", "99"]),
])
def test_a_default_changed_in_its_field_changes_the_cli_the_grid_and_shows_in_the_schema_check(
        monkeypatch, cls, command, name, new, flag):
    section = "training" if cls is TrainConfig else "evaluation"
    monkeypatch.setattr(field_of(cls, name), "default", new)
    assert getattr(parse(command), name) == new
    config = copy.deepcopy(load_config(ROOT / "config/tiny-ci.yaml"))
    if section == "training":
        config["families"] = {f: {**spec, "training": {k: v for k, v in spec["training"].items() if k != name}}
                              for f, spec in config["families"].items()}
        grid = expand_grid(config)
        assert all(spec.training[name] == new for spec in grid.families.values())
        args = grid.training_args("math")
    else:
        config["evaluation"].pop(name)
        grid = expand_grid(config)
        assert grid.evaluation[name] == new
        args = grid.evaluation_args()
    assert args[args.index(flag[0]):args.index(flag[0]) + 2] == flag
    assert any(line.startswith(f"{section}.{name}: schema") for line in schema_disagreements())


@pytest.mark.parametrize("cls,command", [(TrainConfig, "train"), (EvaluateOptions, "evaluate")])
def test_the_command_line_defaults_are_the_fields_defaults(cls, command):
    args = parse(command)
    given = dict(zip(REQUIRED[command][::2], REQUIRED[command][1::2]))
    for f in fields(cls):
        expected = given[options.flag(f)] if options.is_required(f) else f.default
        if f.name == "keep_checkpoints":
            expected = int(expected)
        assert getattr(args, f.name) == expected, f.name
    assert options.from_args(cls, args) == cls(**{k.removeprefix("--").replace("-", "_"): v for k, v in given.items()})


@pytest.mark.parametrize("module", ["train", "evaluate"])
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


@pytest.mark.parametrize("doc,cls", [("docs/training.md", TrainConfig), ("docs/evaluation.md", EvaluateOptions)])
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
