"""What each rule hands its `kdgrid` command: one frozen record per job kind (built by the `Grid`'s
`<rule>_params` methods), and the per-rule tables the rules look them up in.

Each field of a record is one entry of its rule's `params:`, under the same name. Snakemake records the
params' values with every output and re-runs a job when one changes: a field's value is part of its
job's identity, so change one only where the job should re-run.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import KdgridError


def flags(args: Iterable[object]) -> str:
    """Command-line arguments as one shell-quoted string (a param's value)."""
    return shlex.join(str(a) for a in args)


def meta_flags(meta: Iterable[tuple[str, object]]) -> str:
    """A job's `--meta key=value ...` arguments (its identity in the results table)."""
    return flags(f"{key}={value}" for key, value in meta)


@dataclass(frozen=True)
class PrepareDataParams:
    args: str
    made_from: Any  # the tiny world's code fingerprint, or the LLM-Adapters files' git blob ids (a dict)


@dataclass(frozen=True)
class FetchModelParams:
    hub: str
    revision: str  # a new pinned commit fetches again


@dataclass(frozen=True)
class SftParams:
    model: str
    model_revision: str
    training: str
    cell: str


@dataclass(frozen=True)
class DistillParams:
    student: str
    model_revision: str
    teacher_revision: str
    training: str
    distill: str  # method and teacher signal; the cache's path comes from the rule's input
    cell: str


@dataclass(frozen=True)
class TeacherOutputsParams:
    teacher: str
    teacher_revision: str
    top_k: int
    temperature: str
    cutoff: int
    token_scope: str
    precision: str
    tail_samples: int


@dataclass(frozen=True)
class TeacherResponsesParams:
    teacher: str
    teacher_revision: str
    max_new_tokens: int
    precision: str


@dataclass(frozen=True)
class EvaluateParams:
    model: str
    model_revision: str
    family: str
    data_dir: str
    tasks: str
    settings: str
    meta: str


@dataclass(frozen=True)
class CompareParams:
    embedding_model: str
    meta: str


@dataclass(frozen=True)
class AggregateParams:
    sizes: str
    grid_config: str  # the config the cost ledger estimates, as JSON


PARAMS_OF_RULE = {"prepare_data": PrepareDataParams, "fetch_model": FetchModelParams, "sft": SftParams,
                  "distill": DistillParams, "teacher_outputs": TeacherOutputsParams,
                  "teacher_responses": TeacherResponsesParams, "evaluate": EvaluateParams, "compare": CompareParams}


class JobTable:
    """One rule's records (inputs, params or resources), one per job, looked up by the path a job's
    wildcards fill in `key` (e.g. KD_DIR for a distillation cell).

    `records`: {path: record}, built once from the grid; or, with `make`, {path: job}, each record made
    from its job when first asked. `field(name)` is what a rule's `params:`, `threads:` or `resources:`
    entry gets: the value itself when every job of the rule has the same one in this grid (Snakemake then
    has nothing to evaluate per job), else a function of a job's wildcards that looks its record up.
    """

    def __init__(self, what: str, key: str, records: dict[str, Any], make: Callable[[Any], Any] | None = None,
                 names: Iterable[str] = ()):
        self.what, self.key, self.make, self.names = what, key, make, tuple(names)
        self.records = records if make is None else {}
        self.jobs = records if make is not None else None

    def lookup(self) -> Callable:
        """`of` as a function of the wildcards alone (an input function, for `unpack`)."""

        def of_job(wildcards):
            return self.of(wildcards)

        return of_job

    def of(self, wildcards) -> Any:
        """The record of the job these wildcards name (an error if the grid has no such job)."""
        key = self.key.format(**wildcards)
        record = self.records.get(key)
        if record is None:
            if self.make is None or key not in self.jobs:
                raise KdgridError(f"{self.what} {key!r} is not part of the grid of this config")
            record = self.records[key] = self.make(self.jobs[key])
        return record

    def field(self, name: str) -> Any | Callable:
        if self.make is None:
            values = [getattr(r, name) for r in self.records.values()]
            if values and all(v == values[0] for v in values) and _plain(values[0]):
                return values[0]

        def of_job(wildcards):
            return getattr(self.of(wildcards), name)

        return of_job

    def fields(self, names: Iterable[str]) -> dict[str, Any | Callable]:
        return {name: self.field(name) for name in names}

    def as_params(self) -> dict[str, Any | Callable]:
        """Every field of the rule's params record, for its `params:`."""
        return self.fields(self.names)


def _plain(value: Any) -> bool:
    """Can Snakemake take `value` as it is? It fills `{wildcard}` patterns into plain strings."""
    if isinstance(value, str):
        return "{" not in value
    return isinstance(value, (int, float, dict))
