"""Options defined once: a command's options are a dataclass whose fields carry their default, type,
help text, choices and bounds (`option`). From that one field list come

- the command's argparse arguments (`add_arguments`) and the dataclass back from parsed ones (`from_args`);
- one check of every choice and bound (`check`, `problem`), naming the flag or config key at fault;
- the grid's defaults for the options a config sets (`config_defaults`) and their flags (`config_flags`);
- the options tables of the docs (`markdown_table`).

`config="training"` marks an option the config sets in that section (`families.<f>.training`,
`evaluation`, ...) under the field's name; `listed=True` one that is comma-separated on the command line
and a list in the config; `only_if={"finetune": "lora"}` one the grid passes only where another option
has that value. A bool is a switch: `--name` turns on one that is off by default, `--no-name` turns off
one that is on (`verify: bool = option(True)` is `--no-verify`); `cli_choices=(0, 1)` makes it a flag
taking 0 or 1 instead.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import MISSING, field, fields

from .errors import KdgridError


def option(default=MISSING, *, help: str = "", choices=None, gt=None, ge=None, le=None, lt=None,
           config: str | None = None, listed: bool = False, only_if: dict | None = None,
           cli_choices=None, nargs=None, metavar=None):
    """A dataclass field with what the command line, the checks and the grid need to know about it.
    No default: a required flag. `cli_choices`: the values the flag takes where they differ from the
    field's (a bool given as 0 or 1)."""
    meta = {"help": help, "choices": choices, "gt": gt, "ge": ge, "le": le, "lt": lt, "config": config,
            "listed": listed, "only_if": only_if or {}, "cli_choices": cli_choices, "nargs": nargs,
            "metavar": metavar}
    return field(default=default, metadata=meta)


def flag(f) -> str:
    return ("--no-" if is_negated(f) else "--") + f.name.replace("_", "-")


def is_negated(f) -> bool:
    """A switch that is on by default: its flag (`--no-name`) turns it off."""
    return f.default is True and f.metadata.get("cli_choices") is None


def field_of(cls, name: str):
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(name)


def base_type(cls, f) -> type:
    """The field's type without `| None` (int, float, str, bool or tuple)."""
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def is_required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def default_of(f):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def cli_default(cls, f):
    """The flag's default as the command line has it: argparse converts string defaults only, so a
    float option written `4` becomes 4.0 here, and a bool given as 0/1 its number."""
    default = default_of(f)
    kind = base_type(cls, f)
    if kind in (int, float) and default is not None:
        return kind(default)
    if kind is bool and f.metadata.get("cli_choices") is not None:
        return int(default)
    return default


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One `--flag` per field of `cls`, in field order."""
    for f in fields(cls):
        m, kind = f.metadata, base_type(cls, f)
        kwargs = {"help": m.get("help") or None}
        if m.get("metavar"):
            kwargs["metavar"] = m["metavar"]
        if is_required(f):
            kwargs["required"] = True
        else:
            kwargs["default"] = cli_default(cls, f)
            kwargs["help"] = _with_default(kwargs["help"], cls, f)
        if kind is bool and m.get("cli_choices") is None:
            parser.add_argument(flag(f), dest=f.name, action="store_false" if is_negated(f) else "store_true",
                                **kwargs)
            continue
        if kind is tuple:
            kwargs["nargs"] = m.get("nargs") or "*"
        elif kind is not str:
            kwargs["type"] = int if kind is bool else kind
        choices = m.get("cli_choices") or m.get("choices")
        if choices is not None:
            kwargs["choices"] = choices
        parser.add_argument(flag(f), **kwargs)


def _with_default(help_text: str | None, cls, f) -> str | None:
    """The help text with the flag's default, as the docs' option tables give it (unless it says it already)."""
    if base_type(cls, f) is bool and f.metadata.get("cli_choices") is None:
        said = "on by default" if is_negated(f) else None
    else:
        default = cli_default(cls, f)
        said = None if default in (None, ()) else f"default: {default}"
        if any(words in (help_text or "") for words in (f"default {default}", f"{default} (default)")):
            said = None
    if said is None:
        return help_text
    return f"{help_text} ({said})" if help_text else f"({said})"


def from_args(cls, args):
    """The dataclass from parsed arguments (a bool given as 0/1 becomes False/True)."""
    values = {}
    for f in fields(cls):
        value = getattr(args, f.name)
        kind = base_type(cls, f)
        if kind is bool and value is not None:
            value = bool(value)
        elif kind is tuple and value is not None:
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def problem(f, value) -> str | None:
    """What is wrong with `value` for the field `f` ("must be > 0", ...), or None. None is fine for an
    option whose default is None."""
    m = f.metadata
    if value is None and not is_required(f) and default_of(f) is None:
        return None
    if m.get("choices") is not None and value not in m["choices"]:
        return f"must be one of {', '.join(map(str, m['choices']))}"
    bounds = {k: m[k] for k in COMPARE if m.get(k) is not None}
    if not bounds:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if number and all(COMPARE[k](value, bound) for k, bound in bounds.items()):
        return None
    return "must be " + describe_bounds(bounds)


COMPARE = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}
SYMBOLS = {"gt": ">", "ge": ">=", "le": "<=", "lt": "<"}


def describe_bounds(bounds: dict) -> str:
    """{"ge": 0, "le": 1} -> "in [0, 1]"; {"gt": 0} -> "> 0"."""
    low = next(((k, bounds[k]) for k in ("gt", "ge") if k in bounds), None)
    high = next(((k, bounds[k]) for k in ("lt", "le") if k in bounds), None)
    if low and high:
        return f"in {'(' if low[0] == 'gt' else '['}{low[1]}, {high[1]}{')' if high[0] == 'lt' else ']'}"
    kind, bound = low or high
    return f"{SYMBOLS[kind]} {bound}"


def check(obj) -> None:
    """Every choice and bound of the dataclass instance `obj`; the error names the flag and the value."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        why = problem(f, value)
        if why:
            raise KdgridError(f"{flag(f)} {value!r}: {why}")


def config_fields(cls, section: str) -> list:
    return [f for f in fields(cls) if f.metadata.get("config") == section]


def config_value(f, value):
    """A command-line value as the config writes it (a comma-separated option as a list)."""
    if f.metadata.get("listed") and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def config_defaults(cls, section: str) -> dict:
    """The defaults of the options a config sets in `section`, in field order, as the config writes them."""
    return {f.name: config_value(f, default_of(f)) for f in config_fields(cls, section)}


def check_config(cls, section: str, values: dict, where: str) -> None:
    """The checks of `check` on a config section's values; the error names the config key."""
    for f in config_fields(cls, section):
        value = values[f.name]
        if f.metadata.get("listed") and isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        why = problem(f, value)
        if why:
            raise KdgridError(f"config key {where}{f.name}: {values[f.name]!r} {why}")


def config_flags(cls, section: str, values: dict) -> list[str]:
    """A config section's values as the command's flags, in field order: a list comma-joined, a switch
    as its bare flag where it differs from its default; None, a switch at its default and an option
    whose `only_if` does not hold left out."""
    args = []
    for f in config_fields(cls, section):
        value = values[f.name]
        if value is None or value is is_negated(f):  # a switch at its default
            continue
        if any(values.get(key) != wanted for key, wanted in f.metadata.get("only_if", {}).items()):
            continue
        if isinstance(value, bool):
            args.append(flag(f))
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        args += [flag(f), str(value)]
    return args


def markdown_table(cls) -> str:
    """The options of a command as a Markdown table (docs/training.md and docs/evaluation.md hold theirs;
    tests/test_options.py checks they agree)."""
    rows = ["| option | default | allowed | config key | what |", "| --- | --- | --- | --- | --- |"]
    for f in fields(cls):
        m = f.metadata
        if is_required(f):
            default = "required"
        elif base_type(cls, f) is bool and m.get("cli_choices") is None:
            default = "off"
        else:
            default = cli_default(cls, f)
            default = "" if default in (None, ()) else f"`{default}`"
        choices = m.get("cli_choices") or m.get("choices")
        bounds = {k: m[k] for k in COMPARE if m.get(k) is not None}
        allowed = ", ".join(map(str, choices)) if choices is not None else describe_bounds(bounds) if bounds else ""
        config = f"`{m['config']}.{f.name}`" if m.get("config") else ""
        what = (m.get("help") or "").replace("|", "\\|")
        rows.append(f"| `{flag(f)}` | {default} | {allowed} | {config} | {what} |")
    return "\n".join(rows) + "\n"
