"""What a config describes: its vocabularies and defaults, the model and family specs, and the parsing
of the config's sections (each error names the key at fault)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..data_options import DEFAULT_SOURCE, SOURCES, DataOptions
from ..errors import KdgridError, unknown
from ..evaluation.compare_options import CompareOptions
from ..evaluation.evaluate_options import EvaluateOptions
from ..hub import COMMIT_REGEX
from ..methods import METHODS, REGISTRY
from ..options import check_config, config_defaults
from ..tasks import FAMILIES, tasks_of
from ..tiny_models import TINY_SPECS
from ..training.config import TrainConfig
from .layout import MODEL_NAME_REGEX


def default_training() -> dict:
    """A family's `training:` defaults: those of `kdgrid train`'s options the config sets (TrainConfig)."""
    return config_defaults(TrainConfig, "training")


def default_evaluation() -> dict:
    """The `evaluation:` defaults: those of `kdgrid evaluate`'s options the config sets (EvaluateOptions)."""
    return config_defaults(EvaluateOptions, "evaluation")


def default_data() -> dict:
    """A family's `data:` defaults: its source, then those of `kdgrid data prepare`'s options the config
    sets (DataOptions)."""
    return {"source": DEFAULT_SOURCE, **config_defaults(DataOptions, "data")}


def default_compare() -> dict:
    """The `compare:` defaults: those of `kdgrid compare`'s options the config sets (CompareOptions)."""
    return config_defaults(CompareOptions, "compare")


DEFAULT_TRAINING = default_training()
# kd: the distillation options of `kdgrid train` (TrainConfig's config="kd" fields), and the length of
# the teacher's responses for seqkd (`kdgrid teacher-responses --max-new-tokens`).
DEFAULT_KD = {**config_defaults(TrainConfig, "kd"), "seqkd_max_new_tokens": 256}
# (The KD settings each method reads: kdgrid.methods, Method.settings.)
DEFAULT_EVALUATION = default_evaluation()
DEFAULT_COMPARE = default_compare()
# The cache: top_k ids per token plus tail_samples ids drawn from the teacher's rest (docs/teacher_cache.md).
# Cells up to max_temperature may read it; each measures it against its teacher on its first step and
# reads it only if its loss error is within max_loss_error (per method; None: kdgrid.methods' defaults),
# else runs the teacher online.
DEFAULT_TEACHER_CACHE = {"enabled": True, "top_k": 64, "tail_samples": 64, "max_temperature": 1.0,
                         "max_loss_error": None}
CACHE_WIDTHS_ESTIMATE = 4  # rest normalisers per token: Qwen2.5's widths 151680-152064 (teacher_cache.default_widths)
FAMILY_KEYS = ("tasks", "data", "training", "approx_train_examples", "approx_test_examples")
DEFAULT_DISK = {"keep_checkpoints": False}  # a training job's checkpoints/ once its model is published
DEFAULT_DATA = default_data()


def unknown_at(where: str, kind: str, name, known) -> KdgridError:
    return KdgridError(f"config key {where}: {unknown(kind, name, known)}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    size_b: float
    hub_id: str | None = None
    path: str | None = None  # a local mirror of the hub model (air-gapped clusters)
    tiny: bool = False
    revision: str | None = None  # a hub model's pinned commit (None: locked at its first fetch)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    tasks: tuple[str, ...]
    data: dict
    training: dict
    approx_train_examples: int
    approx_test_examples: int

    def examples_seen(self) -> int:
        """Training examples one run goes through (epochs x train set, or max_steps x batch)."""
        t = self.training
        seen = round(self.approx_train_examples * t["epochs"])
        if t["max_steps"] > 0:
            seen = min(seen, t["max_steps"] * t["micro_batch_size"] * t["grad_accum"])
        return seen

    def check_examples(self) -> int:
        """Examples of a cell's first optimizer step, where a cell that may read the cache checks it
        against its online teacher."""
        return min(self.examples_seen(), self.training["micro_batch_size"] * self.training["grad_accum"])



def section(config: dict, key: str, defaults: dict, where: str = "") -> dict:
    given = config.get(key) or {}
    if not isinstance(given, dict):
        raise KdgridError(f"config key {where}{key}: expected a mapping, got {given!r}")
    for name in given:
        if name not in defaults:
            raise unknown_at(f"{where}{key}", "setting", name, defaults)
    return {**defaults, **given}


def parse_models(config: dict) -> dict[str, ModelSpec]:
    models = {}
    for name, spec in (config.get("models") or {}).items():
        if not re.fullmatch(MODEL_NAME_REGEX, str(name)):
            raise KdgridError(f"config key models.{name}: a model name may hold letters, digits, '.', '-' and "
                              "single '_' ('__' separates teacher and student in result paths)")
        spec = spec or {}
        if "size_b" not in spec:
            raise KdgridError(f"config key models.{name}.size_b is missing (the size in billions of parameters)")
        tiny = bool(spec.get("tiny", False))
        if tiny and name not in TINY_SPECS:
            raise unknown_at(f"models.{name}", "tiny model", name, TINY_SPECS)
        if not tiny and not (spec.get("hub_id") or spec.get("path")):
            raise KdgridError(f"config key models.{name}: give a hub_id (or a local path), or tiny: true")
        revision = spec.get("revision")
        if revision is not None and (tiny or spec.get("path") or not re.fullmatch(COMMIT_REGEX, str(revision))):
            raise KdgridError(f"config key models.{name}.revision: {revision!r}: a hub model's revision is a commit "
                              "(40 hex digits); tiny and path: models have none")
        models[name] = ModelSpec(name, float(spec["size_b"]), spec.get("hub_id"), spec.get("path"), tiny, revision)
    if not models:
        raise KdgridError("config key 'models' is empty: list the teachers and students with their sizes")
    return models


def parse_families(config: dict) -> dict[str, FamilySpec]:
    families = {}
    for name, spec in (config.get("families") or {}).items():
        if name not in FAMILIES:
            raise unknown_at("families", "family", name, FAMILIES)
        spec = spec or {}
        where = f"families.{name}."
        for key in spec:
            if key not in FAMILY_KEYS:
                raise unknown_at(f"families.{name}", "key", key, FAMILY_KEYS)
        data = section(spec, "data", default_data(), where)
        if data["source"] not in SOURCES:
            raise KdgridError(f"config key {where}data.source: {data['source']!r} is not one of {', '.join(SOURCES)}")
        if data["verify"] is False and (data["source"] != "llm-adapters" or not data["local"]):
            raise KdgridError(f"config key {where}data.verify: false declares a local LLM-Adapters folder "
                              f"unverified; it needs data.source llm-adapters and data.local (downloads at the "
                              f"pinned commit are always verified)")
        training = section(spec, "training", default_training(), where)
        check_config(TrainConfig, "training", training, f"{where}training.")
        tasks = tuple(as_list(spec.get("tasks"), f"{where}tasks"))
        if not tasks:
            raise KdgridError(f"config key {where}tasks is empty: list the family's test tasks")
        check_tasks(name, data["source"], tasks)
        approx_train = data["n_train"] or spec.get("approx_train_examples")
        if not approx_train:
            raise KdgridError(f"config key {where}approx_train_examples is missing: give data.n_train or the "
                              "approximate size of the training set (used for runtimes and teacher costs)")
        if data["n_test"]:
            approx_test = len(tasks) * data["n_test"]
        else:
            approx_test = spec.get("approx_test_examples") or 1000 * len(tasks)
        if data["limit_test"]:
            approx_test = min(approx_test, len(tasks) * data["limit_test"])
        families[name] = FamilySpec(name, tasks, data, training, int(approx_train), int(approx_test))
    if not families:
        raise KdgridError("config key 'families' is empty")
    return families


def check_tasks(family: str, source: str, tasks) -> None:
    """Each of a family's tasks is one its data source provides (kdgrid.family_data.family_tasks): an error
    lists that source's tasks only."""
    from ..family_data import family_tasks  # here: kdgrid.family_data imports kdgrid.grid.layout

    provided = family_tasks(family, source)
    where = f"config key families.{family}.tasks"
    for task in tasks:
        if task in provided:
            continue
        if task in (t.name for t in tasks_of(family)):
            raise KdgridError(f"{where}: {task!r} is not a task of families.{family}.data.source {source}; "
                              f"{source} {family} tasks: {', '.join(provided)}")
        raise KdgridError(f"{where}: unknown task {task!r}; {source} {family} tasks: {', '.join(provided)}")


def as_list(value, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise KdgridError(f"config key {key}: expected a list, got {value!r}")


def reject_non_finite(value, where: str = "") -> None:
    """A NaN or infinite number anywhere in the config is an error naming its key (YAML's .nan and .inf
    pass the schema's bounds: every comparison with NaN is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise KdgridError(f"config key {where or '(top level)'}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            reject_non_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            reject_non_finite(item, f"{where}[{i}]")



def teacher_cache_section(config: dict) -> dict:
    cache = section(config, "teacher_cache", DEFAULT_TEACHER_CACHE)
    given = cache["max_loss_error"]
    if given is not None and not isinstance(given, dict):
        raise KdgridError(f"config key teacher_cache.max_loss_error: expected a mapping of methods, got {given!r}")
    for name in given or {}:
        if name not in REGISTRY:
            raise unknown_at("teacher_cache.max_loss_error", "method", name, METHODS)
        if REGISTRY[name].max_loss_error is None:
            raise KdgridError(f"config key teacher_cache.max_loss_error.{name}: no teacher cache serves {name}")
    return cache


def resources_section(config: dict) -> dict:
    from ..resources_plan import DEFAULT_RESOURCES

    return section(config, "resources", DEFAULT_RESOURCES)
