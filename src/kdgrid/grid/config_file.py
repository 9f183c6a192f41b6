"""A config file read and checked before any grid is built, by the Snakefile and `kdgrid grid` alike:
strict YAML (a key given twice is an error, not "the last one wins"), then the schema
(workflow/schemas/config.schema.yaml), each error one line naming the file, the key and the value."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import KdgridError
from .expand import Grid, expand_grid
from .spec import reject_non_finite

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


def load_config(path: str | os.PathLike) -> dict:
    """The config in a YAML file; a syntax error or a key given twice named with the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            loader = yaml.SafeLoader(f)
            try:
                node = loader.get_single_node()
                if node is not None:
                    refuse_duplicate_keys(node, path)
                config = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise KdgridError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KdgridError(f"{path}{where}: not valid YAML ({e})") from None
    if not isinstance(config, dict):
        raise KdgridError(f"{path}: expected a mapping of config keys")
    return config


def refuse_duplicate_keys(node, path, where: str = "", seen_nodes=None) -> None:
    """A key given twice in one mapping of the YAML tree is an error naming it (YAML loaders keep the last
    value); a merge key's (`<<: *defaults`) keys may be overridden."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias: its node was checked where its anchor stands
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            key = f"{where}.{name}" if where else str(name)
            line = key_node.start_mark.line + 1
            identity = (key_node.tag, name)
            if identity in first_line:
                raise KdgridError(f"{path}, line {line}: config key {key} is given twice (first at line "
                                  f"{first_line[identity]}); give each key once")
            first_line[identity] = line
            refuse_duplicate_keys(value_node, path, key, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            refuse_duplicate_keys(item, path, f"{where}[{i}]", seen_nodes)


def key_path(path) -> str:
    """A jsonschema error's path as the grid's errors spell keys: families.math.training.lr, blocks[0].methods."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def schema_problem(config: dict, schema_file: str | os.PathLike = SCHEMA) -> str | None:
    """The schema's most relevant complaint about `config` (jsonschema's best_match), one line; None if valid."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    try:
        schema = yaml.safe_load(Path(schema_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KdgridError(f"{schema_file}: the config schema is missing (kdgrid runs from its checkout)") from None
    error = best_match(Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        extra = [key for key in error.instance if key not in known]
        if extra and known:
            key = f"{where}.{extra[0]}" if where else str(extra[0])
            return f"config key {key}: not a known key; known keys here: {', '.join(known)}"
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    value = repr(error.instance)
    if not message.startswith(value):  # jsonschema's messages mostly open with the value
        message = f"{value if len(value) <= 80 else value[:77] + '...'}: {message}"
    return f"config key {where or '(top level)'}: {message}"


def files_named(files) -> str:
    return ", ".join(str(f) for f in files) or "the config"


def validate_config(config: dict, files, schema_file: str | os.PathLike = SCHEMA) -> None:
    """Refuse a config the schema does not accept (or holding .nan/.inf), naming its files, key and value.
    The Snakefile calls this on the config Snakemake merged from `files` (then Snakemake's own validate,
    which fills the schema's defaults in); `kdgrid grid` on the file it read."""
    names = files_named(files)
    try:
        reject_non_finite(config)
    except KdgridError as e:
        raise KdgridError(f"{names}: {e}") from None
    problem = schema_problem(config, schema_file)
    if problem is not None:
        raise KdgridError(f"{names}: {problem} (schema: {Path(*Path(schema_file).parts[-3:])})")


def check_config_files(config: dict, files, schema_file: str | os.PathLike = SCHEMA) -> None:
    """The Snakefile's check of the config Snakemake read from `files` (workflow.configfiles): each file
    re-read strictly (Snakemake's loader lets a duplicate key's last value win), then the schema."""
    for path in files:
        load_config(path)
    validate_config(config, files, schema_file)


def read_config(path: str | os.PathLike) -> dict:
    """A config file read strictly and checked against the schema."""
    config = load_config(path)
    validate_config(config, [path])
    return config


def grid_of_file(path: str | os.PathLike) -> Grid:
    """The grid of a config file for `kdgrid grid --config`, checked as the Snakefile checks it: read
    strictly, then the schema. Where both refuse, the grid's message (a key it names with its block, an
    empty selection) comes first; a config the grid accepts or cannot read still meets the schema."""
    config = load_config(path)
    try:
        grid = grid_of(config, [path])
    except KdgridError:
        raise
    except Exception:  # a value of the wrong type the grid trips on: the schema names it
        validate_config(config, [path])
        raise
    validate_config(config, [path])
    return grid


def grid_of(config: dict, files) -> Grid:
    """expand_grid(config), its errors (a key the schema cannot check: a model, task or method name) naming
    the config's files too."""
    try:
        return expand_grid(config)
    except KdgridError as e:
        raise KdgridError(f"{files_named(files)}: {e}") from None
