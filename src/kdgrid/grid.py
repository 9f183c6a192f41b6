"""The experiment grid: a config dict in, every job of the study out.

The Snakemake workflow imports this module at parse time and asks it everything: which distillation
cells exist (expanded from the config's blocks and deduplicated), which SFT runs, evaluations,
comparisons and teacher caches they need, where each lives under the results folder, the exact
`kdgrid` command-line flags of each job and its compute resources. Nothing heavy is imported here.

Seeds: every student (SFT baseline and KD cell) repeats per seed in `seeds`; a teacher is fine-tuned
once, with `teacher_seed` (default: the first seed), so all student seeds distil from the same
teacher. A model that is both a teacher and a student gets one SFT run per distinct seed.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property

from .analysis.captions import FIGURES
from .errors import KdgridError, unknown
from .hub import COMMIT_REGEX, LOCK_NAME, estimated_bytes, fetch_record
from .tasks import tasks_of
from .training.config import LOSS_VERSIONS

METHODS = ("fkl", "rkl", "gkd", "skew_kl", "tvd", "seqkd")
OFF_POLICY_METHODS = ("fkl", "rkl", "skew_kl", "tvd")  # plus gkd with lmbda = 0
TEACHER_KINDS = ("sft", "base")
SOURCES = ("synthetic", "llm-adapters")
FAMILIES = ("math", "commonsense")

# The figures `kdgrid plots` writes (<name>.png, <name>.pdf and captions/<name>.rst), from the one
# list the plots command draws.
PLOT_NAMES = FIGURES

# Where each kind of job writes, relative to the results folder (docs/architecture.md).
KD_DIR = "{family}/{teacher}__{student}/{method}/t{temperature}/{ablation}/seed{seed}"
SFT_DIR = "{family}/sft/{model}/seed{seed}"
BASE_DIR = "{family}/base/{model}"
TEACHER_OUTPUTS_FILE = "{family}/teacher_outputs/{teacher}/{teacher_kind}/t{temperature}/topk{top_k}.pt"
TEACHER_RESPONSES_FILE = "{family}/teacher_responses/{teacher}/{teacher_kind}/train.json"
SFT_COMPARE = "{sft_dir}/compare/{teacher}/{teacher_kind}-teacher"  # + ".json"
KD_COMPARE = "{kd_dir}/compare"  # + ".json"
TABLE_CSV = "tables/results.csv"
TABLE_PARQUET = "tables/results.parquet"
COST_CSV = "tables/cost.csv"  # the cost ledger, one row per checkpoint (kdgrid.analysis.cost)
COST_JOBS_CSV = "tables/cost_jobs.csv"  # and one row per job
STATS_CSV = "stats/hypotheses.csv"
STATS_MD = "stats/summary.md"
PLOTS_DIR = "plots"
# Stamps standing in for folder inputs, with their folder's content hash (kdgrid.fingerprint).
MODEL_STAMP = "fingerprints/models/{model}.json"
TEST_SET_STAMP = "fingerprints/test-sets/{family}.json"
FINGERPRINT_CACHE = "fingerprints/cache.json"
# The inputs a grid builds itself, under its results folder too (docs/architecture.md).
DATA_DIR = "resources/data/{family}"
TINY_MODEL_DIR = "resources/models/{model}"

MODEL_NAME_REGEX = r"[A-Za-z0-9.\-]+(?:_[A-Za-z0-9.\-]+)*"  # no "__": it separates teacher and student
DEFAULT_MODELS_DIR = "resources/hub"  # hub models, fetched once (kdgrid.hub); put it on a shared file system

DEFAULT_TRAINING = {
    "finetune": "lora",
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_targets": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "lr": 3e-4,
    "micro_batch_size": 4,
    "grad_accum": 4,
    "warmup_steps": 100,
    "cutoff": 256,
    "epochs": 4,
    "max_steps": -1,
    "token_scope": "all",
    "precision": "auto",
    "save_steps": 200,
}
DEFAULT_KD = {
    "beta": 0.5,
    "lmbda": 0.5,
    "skew": 0.1,
    "kd_weight": 1.0,
    "gkd_max_new_tokens": 128,
    "seqkd_max_new_tokens": 256,
}
# The KD settings each method reads; a cell's command gets only these, so that changing, say, `skew`
# re-runs the skew_kl cells and nothing else.
KD_KEYS_OF_METHOD = {
    "fkl": ("kd_weight",),
    "rkl": ("kd_weight",),
    "tvd": ("kd_weight",),
    "skew_kl": ("skew", "kd_weight"),
    "gkd": ("beta", "lmbda", "gkd_max_new_tokens", "kd_weight"),
    "seqkd": (),
}
DEFAULT_EVALUATION = {"max_new_tokens": 256, "batch_size": 16, "sampling": False, "seed": 1234, "limit": None}
DEFAULT_COMPARE = {"embedding_model": "none"}
# The cache: top_k ids per token plus tail_samples ids drawn from the teacher's rest (docs/teacher_cache.md).
# Cells up to max_temperature may read it; each measures it against its teacher on its first step and
# reads it only if its loss error is within max_loss_error (per method), else runs the teacher online.
DEFAULT_TEACHER_CACHE = {"enabled": True, "top_k": 64, "tail_samples": 64, "max_temperature": 1.0,
                         "max_loss_error": None}
CACHE_WIDTHS_ESTIMATE = 4  # rest normalisers per token: Qwen2.5's widths 151680-152064 (teacher_cache.default_widths)
DEFAULT_MAX_LOSS_ERROR = {"fkl": 0.005, "skew_kl": 0.005, "tvd": 0.005, "gkd": 0.005, "rkl": 0.02}
FAMILY_KEYS = ("tasks", "data", "training", "approx_train_examples", "approx_test_examples")
DEFAULT_DISK = {"keep_checkpoints": False}  # a training job's checkpoints/ once its model is published
DEFAULT_DATA = {"source": "llm-adapters", "local": None, "seed": 0, "n_train": None, "n_test": None, "limit_test": None,
                "verify": True}


def unknown_at(where: str, kind: str, name, known) -> KdgridError:
    return KdgridError(f"config key {where}: {unknown(kind, name, known)}")


def fmt_number(x: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": how temperatures and noise levels appear in paths and flags."""
    return format(float(x), "g")


def ablation_name(teacher_kind: str, noise_sigma: float) -> str:
    if teacher_kind == "base":
        return "base-teacher"
    return f"noise{fmt_number(noise_sigma)}" if noise_sigma > 0 else "sft-teacher"


# ---------------------------------------------------------------------------------------------
# What the config describes


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


# ---------------------------------------------------------------------------------------------
# The jobs


@dataclass(frozen=True)
class Cell:
    """One distilled student: a teacher, a student, a method, a temperature, a teacher signal, a seed."""

    family: str
    teacher: str
    student: str
    method: str
    temperature: float
    noise_sigma: float
    teacher_kind: str
    seed: int

    @property
    def ablation(self) -> str:
        return ablation_name(self.teacher_kind, self.noise_sigma)

    @property
    def id(self) -> str:
        return KD_DIR.format(family=self.family, teacher=self.teacher, student=self.student, method=self.method,
                             temperature=fmt_number(self.temperature), ablation=self.ablation, seed=self.seed)


@dataclass(frozen=True)
class SftRun:
    family: str
    model: str
    seed: int

    @property
    def id(self) -> str:
        return SFT_DIR.format(family=self.family, model=self.model, seed=self.seed)


@dataclass(frozen=True)
class Evaluation:
    """One `kdgrid evaluate` job: `ckpt` is the checkpoint's cell id; results go to `<ckpt>/eval/`."""

    ckpt: str
    family: str
    role: str  # base | sft | kd
    model: str
    meta: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Comparison:
    """One `kdgrid compare` job: a student's evaluation against its teacher's; writes `<id>.json`."""

    id: str
    student_ckpt: str
    teacher_ckpt: str
    meta: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class TeacherOutputs:
    """One teacher-output cache: a teacher's top-k logits over its family's training set, with the
    normalisers of one temperature. One file per temperature, so that adding a temperature to the grid
    adds a cache and leaves the others (and the cells that read them) untouched."""

    family: str
    teacher: str
    teacher_kind: str
    temperature: float
    top_k: int

    @property
    def path(self) -> str:
        return TEACHER_OUTPUTS_FILE.format(family=self.family, teacher=self.teacher, teacher_kind=self.teacher_kind,
                                           temperature=fmt_number(self.temperature), top_k=self.top_k)


@dataclass(frozen=True)
class TeacherResponses:
    family: str
    teacher: str
    teacher_kind: str

    @property
    def path(self) -> str:
        return TEACHER_RESPONSES_FILE.format(family=self.family, teacher=self.teacher,
                                             teacher_kind=self.teacher_kind)


# ---------------------------------------------------------------------------------------------
# Reading the config


def _section(config: dict, key: str, defaults: dict, where: str = "") -> dict:
    given = config.get(key) or {}
    if not isinstance(given, dict):
        raise KdgridError(f"config key {where}{key}: expected a mapping, got {given!r}")
    for name in given:
        if name not in defaults:
            raise unknown_at(f"{where}{key}", "setting", name, defaults)
    return {**defaults, **given}


def _models(config: dict) -> dict[str, ModelSpec]:
    models = {}
    for name, spec in (config.get("models") or {}).items():
        if not re.fullmatch(MODEL_NAME_REGEX, str(name)):
            raise KdgridError(f"config key models.{name}: a model name may hold letters, digits, '.', '-' and "
                              "single '_' ('__' separates teacher and student in result paths)")
        spec = spec or {}
        if "size_b" not in spec:
            raise KdgridError(f"config key models.{name}.size_b is missing (the size in billions of parameters)")
        tiny = bool(spec.get("tiny", False))
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


def _families(config: dict) -> dict[str, FamilySpec]:
    families = {}
    for name, spec in (config.get("families") or {}).items():
        if name not in FAMILIES:
            raise unknown_at("families", "family", name, FAMILIES)
        spec = spec or {}
        where = f"families.{name}."
        for key in spec:
            if key not in FAMILY_KEYS:
                raise unknown_at(f"families.{name}", "key", key, FAMILY_KEYS)
        data = _section(spec, "data", DEFAULT_DATA, where)
        if data["source"] not in SOURCES:
            raise KdgridError(f"config key {where}data.source: {data['source']!r} is not one of {', '.join(SOURCES)}")
        if data["verify"] is False and (data["source"] != "llm-adapters" or not data["local"]):
            raise KdgridError(f"config key {where}data.verify: false declares a local LLM-Adapters folder "
                              f"unverified; it needs data.source llm-adapters and data.local (downloads at the "
                              f"pinned commit are always verified)")
        training = _section(spec, "training", DEFAULT_TRAINING, where)
        tasks = tuple(_as_list(spec.get("tasks"), f"{where}tasks"))
        if not tasks:
            raise KdgridError(f"config key {where}tasks is empty: list the family's test tasks")
        family_tasks = [t.name for t in tasks_of(name)]
        for task in tasks:
            if task not in family_tasks:
                raise unknown_at(f"{where}tasks", "task", task, family_tasks)
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


def _as_list(value, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    raise KdgridError(f"config key {key}: expected a list, got {value!r}")


# ---------------------------------------------------------------------------------------------
# The grid


@dataclass
class Grid:
    outdir: str
    models: dict[str, ModelSpec]
    families: dict[str, FamilySpec]
    pairs: dict[str, list[str]]
    seeds: list[int]
    teacher_seed: int
    kd: dict
    evaluation: dict
    compare: dict
    teacher_cache: dict
    resources: dict
    disk: dict = field(default_factory=lambda: dict(DEFAULT_DISK))
    cells: list[Cell] = field(default_factory=list)
    block_cells: dict[str, list[Cell]] = field(default_factory=dict)
    models_dir: str = DEFAULT_MODELS_DIR

    # -- paths ---------------------------------------------------------------------------------
    def out(self, *parts: str) -> str:
        return os.path.join(self.outdir, *parts)

    def data_dir(self, family: str) -> str:
        """A family's prepared data, under this grid's results folder: grids with other data (another
        outdir) never share or overwrite it."""
        return self.out(DATA_DIR.format(family=family))

    def tiny_model_dir(self, model: str) -> str:
        return self.out(TINY_MODEL_DIR.format(model=model))

    def model_ref(self, name: str) -> str:
        """What `--model`/`--teacher` get for a model's base weights: a folder or a hub id."""
        spec = self.models[name]
        if spec.tiny:
            return self.tiny_model_dir(name)
        if self.is_hub(name):
            return self.hub_model_dir(name)
        return spec.path

    def model_files(self, name: str) -> list[str]:
        """The workflow files a model's base weights come from (a materialised tiny model, a fetched hub
        model's folder, or the content stamp of a `path:` model's folder), if any."""
        if self.models[name].tiny:
            return [self.tiny_model_dir(name)]
        if self.is_hub(name):
            return [self.hub_model_dir(name)]
        if self.models[name].path:
            return [self.out(MODEL_STAMP.format(model=name))]
        return []

    def test_set_stamp(self, family: str) -> str:
        return self.out(TEST_SET_STAMP.format(family=family))

    def folder_stamps(self) -> dict[str, str]:
        """Every stamp the rules read -> the folder whose content it fingerprints."""
        stamps = {self.out(MODEL_STAMP.format(model=m)): self.models[m].path
                  for models in self.models_of_family.values() for m in models
                  if self.models[m].path and not self.models[m].tiny}
        stamps.update({self.test_set_stamp(f): f"{self.data_dir(f)}/test" for f in self.models_of_family})
        return stamps

    # -- hub models: fetched once into models_dir (kdgrid.hub) ---------------------------------
    def is_hub(self, name: str) -> bool:
        spec = self.models[name]
        return not spec.tiny and not spec.path

    def hub_model_dir(self, name: str) -> str:
        return os.path.join(self.models_dir, name)

    @property
    def hub_lock_file(self) -> str:
        return os.path.join(self.models_dir, LOCK_NAME)

    def revision_param(self, name: str) -> str:
        """A model's revision as the jobs that use it see it (a param: a new pinned commit re-runs them):
        the pinned commit, `locked` (the commit of the first fetch, which can never change), or "" for a
        tiny or path: model."""
        if not self.is_hub(name):
            return ""
        return self.models[name].revision or "locked"

    def teacher_revision_param(self, teacher: str, teacher_kind: str) -> str:
        """The revision of a base teacher a job loads directly; an SFT teacher is an input checkpoint."""
        return self.revision_param(teacher) if teacher_kind == "base" else ""

    def fetch_args(self, name: str) -> list[str]:
        spec = self.models[name]
        args = ["--hub-id", spec.hub_id, "--lock", self.hub_lock_file]
        return args + (["--revision", spec.revision] if spec.revision else [])

    def fetch_disk(self) -> dict:
        """Disk the grid's hub models take: measured for the fetched ones (their files), estimated from
        size_b at 2 bytes per parameter (bf16 safetensors) for the others."""
        fetched, to_fetch = {}, {}
        for name in self.hub_models:
            record = fetch_record(self.hub_model_dir(name)) if os.path.isdir(self.hub_model_dir(name)) else None
            if record is not None:
                fetched[name] = int(record.get("bytes", 0))
            else:
                to_fetch[name] = estimated_bytes(self.models[name].size_b)
        return {"fetched": fetched, "to_fetch": to_fetch}

    def teacher_ckpt(self, family: str, teacher: str, teacher_kind: str) -> str:
        """The cell id of the checkpoint a teacher signal comes from (its evaluation is `<id>/eval/`)."""
        if teacher_kind == "base":
            return BASE_DIR.format(family=family, model=teacher)
        return SftRun(family, teacher, self.teacher_seed).id

    def teacher_ref(self, family: str, teacher: str, teacher_kind: str) -> str:
        """What `--teacher` gets: the teacher's SFT checkpoint, or the base model itself."""
        if teacher_kind == "base":
            return self.model_ref(teacher)
        return self.out(self.teacher_ckpt(family, teacher, teacher_kind), "model")

    def teacher_files(self, family: str, teacher: str, teacher_kind: str) -> list[str]:
        if teacher_kind == "base":
            return self.model_files(teacher)
        return [self.teacher_ref(family, teacher, teacher_kind)]

    # -- the jobs ------------------------------------------------------------------------------
    def cache_tolerance(self, method: str) -> float:
        """teacher_cache.max_loss_error of a method: the relative first-step loss error it accepts."""
        return float({**DEFAULT_MAX_LOSS_ERROR, **(self.teacher_cache["max_loss_error"] or {})}[method])

    def uses_cache(self, cell: Cell) -> bool:
        """May the cell read the cache? (It does only if its first-step check passes: `cache_tolerance`.)"""
        if not self.teacher_cache["enabled"] or cell.noise_sigma > 0:
            return False
        if cell.temperature > float(self.teacher_cache["max_temperature"]):
            return False
        return cell.method in OFF_POLICY_METHODS or (cell.method == "gkd" and self.kd["lmbda"] == 0)

    @cached_property
    def cells_by_id(self) -> dict[str, Cell]:
        return {c.id: c for c in self.cells}

    @cached_property
    def sft_runs(self) -> list[SftRun]:
        runs = {}
        for c in self.cells:
            runs.setdefault(SftRun(c.family, c.student, c.seed), None)
            if c.teacher_kind == "sft":
                runs.setdefault(SftRun(c.family, c.teacher, self.teacher_seed), None)
        return list(runs)

    @cached_property
    def sft_runs_by_id(self) -> dict[str, SftRun]:
        return {r.id: r for r in self.sft_runs}

    @cached_property
    def models_of_family(self) -> dict[str, list[str]]:
        used: dict[str, dict[str, None]] = {}
        for c in self.cells:
            used.setdefault(c.family, {}).update({c.teacher: None, c.student: None})
        return {f: list(m) for f, m in used.items()}

    @cached_property
    def evaluations(self) -> list[Evaluation]:
        evals = []
        for family, models in self.models_of_family.items():
            for model in models:
                ckpt = BASE_DIR.format(family=family, model=model)
                evals.append(Evaluation(ckpt, family, "base", model, (("cell", ckpt), ("family", family),
                                                                      ("role", "base"), ("model", model))))
        for run in self.sft_runs:
            evals.append(Evaluation(run.id, run.family, "sft", run.model, (
                ("cell", run.id), ("family", run.family), ("role", "sft"), ("model", run.model), ("seed", run.seed))))
        for c in self.cells:
            evals.append(Evaluation(c.id, c.family, "kd", c.student, self.kd_meta(c)))
        return evals

    @cached_property
    def evaluations_by_ckpt(self) -> dict[str, Evaluation]:
        return {e.ckpt: e for e in self.evaluations}

    def kd_meta(self, c: Cell) -> tuple:
        return (("cell", c.id), ("family", c.family), ("role", "kd"), ("model", c.student), ("teacher", c.teacher),
                ("student", c.student), ("method", c.method), ("temperature", fmt_number(c.temperature)),
                ("noise_sigma", fmt_number(c.noise_sigma)), ("teacher_kind", c.teacher_kind), ("seed", c.seed))

    @cached_property
    def comparisons(self) -> list[Comparison]:
        """Every KD student against its teacher, and every SFT student against each teacher (checkpoint)
        it has a KD cell with."""
        comparisons = {}
        for c in self.cells:
            teacher_ckpt = self.teacher_ckpt(c.family, c.teacher, c.teacher_kind)
            comparisons[KD_COMPARE.format(kd_dir=c.id)] = Comparison(
                KD_COMPARE.format(kd_dir=c.id), c.id, teacher_ckpt, self.kd_meta(c))
            sft = SftRun(c.family, c.student, c.seed)
            sft_id = SFT_COMPARE.format(sft_dir=sft.id, teacher=c.teacher, teacher_kind=c.teacher_kind)
            if sft_id not in comparisons:
                comparisons[sft_id] = Comparison(sft_id, sft.id, teacher_ckpt, (
                    ("cell", sft.id), ("family", c.family), ("role", "sft"), ("model", c.student),
                    ("teacher", c.teacher), ("student", c.student), ("teacher_kind", c.teacher_kind),
                    ("seed", c.seed)))
        return list(comparisons.values())

    @cached_property
    def comparisons_by_id(self) -> dict[str, Comparison]:
        return {c.id: c for c in self.comparisons}

    @cached_property
    def teacher_outputs(self) -> list[TeacherOutputs]:
        return list({self.teacher_outputs_of(c): None for c in self.cells if self.uses_cache(c)})

    @cached_property
    def teacher_outputs_by_path(self) -> dict[str, TeacherOutputs]:
        return {t.path: t for t in self.teacher_outputs}

    def teacher_outputs_of(self, cell: Cell) -> TeacherOutputs | None:
        """The cache a cell reads instead of running its teacher, or None."""
        if not self.uses_cache(cell):
            return None
        return TeacherOutputs(cell.family, cell.teacher, cell.teacher_kind, cell.temperature,
                              int(self.teacher_cache["top_k"]))

    @cached_property
    def teacher_responses(self) -> list[TeacherResponses]:
        return list({TeacherResponses(c.family, c.teacher, c.teacher_kind): None
                     for c in self.cells if c.method == "seqkd"})

    @cached_property
    def teacher_responses_by_path(self) -> dict[str, TeacherResponses]:
        return {t.path: t for t in self.teacher_responses}

    @cached_property
    def hub_models(self) -> list[str]:
        used = {m: None for models in self.models_of_family.values() for m in models}
        return [m for m in used if self.is_hub(m)]

    @cached_property
    def tiny_models(self) -> list[str]:
        used = {m: None for models in self.models_of_family.values() for m in models}
        return [m for m in used if self.models[m].tiny]

    # -- command-line flags (what each rule's `params:` carries) ---------------------------------
    def training_args(self, family: str) -> list[str]:
        """The family's training hyper-parameters as `kdgrid train` flags (the LoRA ones only with LoRA,
        so that they re-run nothing a full fine-tuning does not read)."""
        training = self.families[family].training
        args = []
        for key, value in training.items():
            if value is None or (key.startswith("lora_") and training["finetune"] != "lora"):
                continue
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def distill_args(self, cell: Cell) -> list[str]:
        """Flags of a KD cell beyond the family's hyper-parameters: its method and teacher signal."""
        args = ["--method", cell.method, "--seed", str(cell.seed)]
        if cell.method != "seqkd":
            args += ["--teacher", self.teacher_ref(cell.family, cell.teacher, cell.teacher_kind), "--temperature", fmt_number(cell.temperature)]
            if cell.noise_sigma > 0:
                args += ["--noise-sigma", fmt_number(cell.noise_sigma)]
            cache = self.teacher_outputs_of(cell)
            if cache is not None:
                args += ["--teacher-cache", self.out(cache.path),
                         "--cache-max-loss-error", fmt_number(self.cache_tolerance(cell.method))]
        for key in KD_KEYS_OF_METHOD[cell.method]:
            args += [f"--{key.replace('_', '-')}", str(self.kd[key])]
        if cell.method == "gkd" and float(self.kd["beta"]) != 0.5:  # where gkd's loss versions differ
            args += ["--loss-version", str(LOSS_VERSIONS["gkd"])]
        return args

    def distill_data(self, cell: Cell) -> str:
        if cell.method == "seqkd":
            return self.out(TeacherResponses(cell.family, cell.teacher, cell.teacher_kind).path)
        return os.path.join(self.data_dir(cell.family), "train.json")

    def evaluation_args(self) -> list[str]:
        e = self.evaluation
        args = ["--max-new-tokens", str(e["max_new_tokens"]), "--batch-size", str(e["batch_size"]),
                "--seed", str(e["seed"])]
        if e["sampling"]:
            args.append("--sampling")
        if e["limit"]:
            args += ["--limit", str(e["limit"])]
        return args

    def data_args(self, family: str) -> list[str]:
        spec = self.families[family]
        d = spec.data
        args = ["--source", d["source"], "--seed", str(d["seed"]), "--tasks", ",".join(spec.tasks)]
        for key in ("local", "n_train", "n_test", "limit_test"):
            if d[key] is not None:
                args += [f"--{key.replace('_', '-')}", str(d[key])]
        if d["verify"] is False:
            args.append("--no-verify")
        return args

    def data_source_ids(self, family: str) -> dict[str, str | None]:
        """The git blob ids of the LLM-Adapters files a family's data are made from (the pinned ids, or
        those of an unverified local folder's files): a param of prepare_data, so new ids re-run it."""
        from .realdata import source_ids, test_path, train_path

        spec = self.families[family]
        paths = [train_path(family)] + [test_path(t) for t in spec.tasks]
        return source_ids(paths, spec.data["local"], spec.data["verify"] is not False)

    def sizes(self) -> list[str]:
        used = {m for models in self.models_of_family.values() for m in models}
        return [f"{name}={fmt_number(self.models[name].size_b)}" for name in self.models if name in used]

    # -- resources -----------------------------------------------------------------------------
    # What a job's resources and its estimated cost (kdgrid.cost_plan) both follow from: the arguments
    # of kdgrid.resources_plan's training_work/plan_training and inference_work/plan_inference.
    def sft_size(self, run: SftRun) -> tuple:
        """(training, student_b, teacher_b, examples_seen, generated_tokens) of an SFT run."""
        fam = self.families[run.family]
        return fam.training, self.models[run.model].size_b, 0.0, fam.examples_seen(), 0

    def distill_size(self, cell: Cell, cache_passes: bool = False) -> tuple:
        """(training, student_b, teacher_b, examples_seen, generated_tokens) of a KD cell; teacher_b is 0
        when it trains on the teacher's responses (seqkd). A cell that may read the cache still needs room
        for its teacher (its resources): it measures the cache against it on the first step and keeps it
        online if the cache fails the check (decided in the job). `cache_passes`: the work of the run
        once the check has passed, teacher freed (the cost estimate; one step of teacher forwards left out)."""
        fam = self.families[cell.family]
        runs_teacher = cell.method != "seqkd" and not (cache_passes and self.uses_cache(cell))
        teacher_b = self.models[cell.teacher].size_b if runs_teacher else 0.0
        generation = self.kd["gkd_max_new_tokens"] * self.kd["lmbda"] if cell.method == "gkd" else 0
        return fam.training, self.models[cell.student].size_b, teacher_b, fam.examples_seen(), generation

    def inference_size(self, model: str, family: str, kind: str) -> tuple:
        """(model_b, examples, prompt_tokens, new_tokens, batch_size) of an inference job. kind: evaluate
        (generate answers to the test sets), teacher_outputs (one forward pass over the training set) or
        teacher_responses (generate answers to the training set)."""
        fam = self.families[family]
        if kind == "evaluate":
            examples, new_tokens = fam.approx_test_examples, self.evaluation["max_new_tokens"]
            if self.evaluation["limit"]:
                examples = min(examples, len(fam.tasks) * self.evaluation["limit"])
        elif kind == "teacher_outputs":
            examples, new_tokens = fam.approx_train_examples, 0
        else:
            examples, new_tokens = fam.approx_train_examples, self.kd["seqkd_max_new_tokens"]
        return self.models[model].size_b, examples, fam.training["cutoff"], new_tokens, self.evaluation["batch_size"]

    def resources_sft(self, run: SftRun):
        from .resources_plan import plan_training

        return plan_training(self.resources, *self.sft_size(run))

    def resources_distill(self, cell: Cell):
        from .resources_plan import plan_training

        return plan_training(self.resources, *self.distill_size(cell))

    def resources_inference(self, model: str, family: str, kind: str):
        """kind: evaluate, teacher_outputs or teacher_responses (see inference_size)."""
        from .resources_plan import plan_inference

        return plan_inference(self.resources, *self.inference_size(model, family, kind))

    # -- summaries -----------------------------------------------------------------------------
    def job_counts(self) -> dict[str, int]:
        """How many jobs each rule runs (before Snakemake skips the finished ones)."""
        return {
            "prepare_data": len(self.models_of_family),
            "materialise_model": len(self.tiny_models),
            "fetch_model": len(self.hub_models),
            "fingerprint_folder": len(self.models_of_family),  # test-set stamps (model stamps: at parse time)
            "sft": len(self.sft_runs),
            "teacher_outputs": len(self.teacher_outputs),
            "teacher_responses": len(self.teacher_responses),
            "distill": len(self.cells),
            "evaluate": len(self.evaluations),
            "compare": len(self.comparisons),
            "aggregate": 1,
            "stats": 1,
            "plots": 1,
        }

    def teacher_cost(self) -> dict:
        """Teacher forward passes over training examples, for the whole grid, with and without the cache.

        Without the cache every distillation cell that reads teacher logits runs the teacher over each
        training example it sees (epochs x train set); with it, cells that can use the cache read it,
        and each cache costs one pass over the family's training set. SeqKD's teacher generations are
        counted apart (one generation pass per teacher, either way).
        """
        without = with_cache = 0
        for c in self.cells:
            if c.method == "seqkd":
                continue
            seen = self.families[c.family].examples_seen()
            without += seen
            # a cell that may read the cache runs its teacher for the first step (the cache check)
            with_cache += self.families[c.family].check_examples() if self.uses_cache(c) else seen
        cache_passes = sum(self.families[t.family].approx_train_examples for t in self.teacher_outputs)
        with_cache += cache_passes
        generation = sum(self.families[t.family].approx_train_examples for t in self.teacher_responses)
        from .teacher_cache import UNBIASED_FROM_CACHE, bytes_per_token

        tokens = {f: spec.approx_train_examples * spec.training["cutoff"] for f, spec in self.families.items()}
        per_token = bytes_per_token(int(self.teacher_cache["top_k"]), int(self.teacher_cache["tail_samples"]), 1,
                                    CACHE_WIDTHS_ESTIMATE)
        return {"without_cache": without, "with_cache": with_cache, "cache_passes": cache_passes,
                "cache_bytes_per_token": per_token,
                "cache_bytes_grid": sum(per_token * tokens[t.family] for t in self.teacher_outputs),
                # the same if every cell of a method the cache serves only as a biased bucket value (rkl, gkd)
                # fails its check and runs the teacher online
                "with_cache_biased_refused": with_cache + sum(
                    self.families[c.family].examples_seen() - self.families[c.family].check_examples()
                    for c in self.cells if self.uses_cache(c) and c.method not in UNBIASED_FROM_CACHE),
                "check_passes": sum(self.families[c.family].check_examples() for c in self.cells if self.uses_cache(c)),
                "cached_cells": sum(self.uses_cache(c) for c in self.cells),
                "online_teacher_cells": sum(c.method != "seqkd" and not self.uses_cache(c) for c in self.cells),
                "seqkd_generation": generation}

    def notes(self) -> list[str]:
        """What a dry run should say although it is allowed: a student larger than its teacher (reverse
        distillation is a real experiment, but more often a swapped pair)."""
        notes = []
        for teacher, students in self.pairs.items():
            for student in students:
                t, s = self.models[teacher].size_b, self.models[student].size_b
                if s > t:
                    notes.append(f"pairs.{teacher}: student {student} ({fmt_number(s)}B) is larger than its "
                                 f"teacher {teacher} ({fmt_number(t)}B): reverse distillation")
        return notes

    # -- everything `rule all` asks for --------------------------------------------------------
    def final_targets(self) -> list[str]:
        targets = [self.out(e.ckpt, "eval", "scores.json") for e in self.evaluations]
        targets += [self.out(c.id + ".json") for c in self.comparisons]
        targets += [self.out(p) for p in (TABLE_CSV, TABLE_PARQUET, COST_CSV, COST_JOBS_CSV, STATS_CSV, STATS_MD)]
        targets += [self.out(PLOTS_DIR, f"{name}.{ext}") for name in PLOT_NAMES for ext in ("png", "pdf")]
        targets += [self.out(PLOTS_DIR, "captions", f"{name}.rst") for name in PLOT_NAMES]
        return targets


def _expand_block(i: int, block: dict, grid: Grid) -> tuple[str, list[Cell]]:
    name = block.get("name") or f"block{i + 1}"
    where = f"blocks[{i}] ({name})"
    known_keys = {"name", "families", "teachers", "students", "methods", "temperatures", "teacher_kind",
                  "noise_sigmas"}
    for key in block:
        if key not in known_keys:
            raise unknown_at(where, "key", key, known_keys)
    for key in ("families", "teachers", "students"):
        if key in block and not block[key]:
            raise KdgridError(f"config key {where}.{key} is empty: leave the key out to mean all {key}, or "
                              "list them")
    families = _as_list(block.get("families"), f"{where}.families") or list(grid.families)
    for f in families:
        if f not in grid.families:
            raise unknown_at(f"{where}.families", "family", f, grid.families)
    teachers = _as_list(block.get("teachers"), f"{where}.teachers") or list(grid.pairs)
    students = _as_list(block.get("students"), f"{where}.students")
    for t in teachers:
        if t not in grid.pairs:
            raise unknown_at(f"{where}.teachers", "teacher", t, grid.pairs)
    for s in students:
        if s not in grid.models:
            raise unknown_at(f"{where}.students", "model", s, grid.models)
    methods = _as_list(block.get("methods"), f"{where}.methods")
    if not methods:
        raise KdgridError(f"config key {where}.methods is empty (known methods: {', '.join(METHODS)})")
    for m in methods:
        if m not in METHODS:
            raise unknown_at(f"{where}.methods", "method", m, METHODS)
    temperatures = [float(t) for t in _as_list(block.get("temperatures"), f"{where}.temperatures") or [1.0]]
    noise_sigmas = [float(s) for s in _as_list(block.get("noise_sigmas"), f"{where}.noise_sigmas") or [0.0]]
    teacher_kind = block.get("teacher_kind", "sft")
    if teacher_kind not in TEACHER_KINDS:
        raise unknown_at(f"{where}.teacher_kind", "teacher kind", teacher_kind, TEACHER_KINDS)
    if teacher_kind == "base" and any(s > 0 for s in noise_sigmas):
        raise KdgridError(f"config key {where}: noise_sigmas apply to the SFT teacher only (teacher_kind: sft)")
    for value in temperatures:
        if value <= 0:
            raise KdgridError(f"config key {where}.temperatures: {value} must be > 0")
    for value in noise_sigmas:
        if value < 0:
            raise KdgridError(f"config key {where}.noise_sigmas: {value} must be >= 0")

    cells = []
    for family in families:
        for teacher in teachers:
            for student in grid.pairs[teacher]:
                if students and student not in students:
                    continue
                for method in methods:
                    # SeqKD trains on the teacher's generated answers: no logits, so no temperature or noise.
                    temps = [1.0] if method == "seqkd" else temperatures
                    sigmas = [0.0] if method == "seqkd" else noise_sigmas
                    for temperature in temps:
                        for sigma in sigmas:
                            for seed in grid.seeds:
                                cells.append(Cell(family, teacher, student, method, temperature, sigma,
                                                  teacher_kind, seed))
    if not cells:
        raise KdgridError(f"config key {where}: selects no cell (check its teachers and students against 'pairs')")
    return name, cells


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


def expand_grid(config: dict) -> Grid:
    """The grid a config describes, with every cell once however many blocks name it."""
    if not isinstance(config, dict):
        raise KdgridError(f"config: expected a mapping, got {type(config).__name__}")
    reject_non_finite(config)
    models = _models(config)
    families = _families(config)
    pairs = {}
    for teacher, students in (config.get("pairs") or {}).items():
        if teacher not in models:
            raise unknown_at("pairs", "model", teacher, models)
        for s in _as_list(students, f"pairs.{teacher}"):
            if s not in models:
                raise unknown_at(f"pairs.{teacher}", "model", s, models)
            if s == teacher:
                raise KdgridError(f"config key pairs.{teacher}: a model cannot be its own student")
        pairs[teacher] = list(students)
    if not pairs:
        raise KdgridError("config key 'pairs' is empty: map each teacher to its students")
    seeds = [int(s) for s in _as_list(config.get("seeds"), "seeds") or [42]]
    if len(set(seeds)) != len(seeds):
        raise KdgridError(f"config key seeds: {seeds} repeats a seed")
    teacher_seed = config.get("teacher_seed")
    grid = Grid(
        outdir=str(config.get("outdir") or "results").rstrip("/"),
        models=models,
        families=families,
        pairs=pairs,
        seeds=seeds,
        teacher_seed=int(teacher_seed) if teacher_seed is not None else seeds[0],
        kd=_section(config, "kd", DEFAULT_KD),
        evaluation=_section(config, "evaluation", DEFAULT_EVALUATION),
        compare=_section(config, "compare", DEFAULT_COMPARE),
        teacher_cache=_section(config, "teacher_cache", DEFAULT_TEACHER_CACHE),
        resources=_resources_section(config),
        disk=_section(config, "disk", DEFAULT_DISK),
        models_dir=str(config.get("models_dir") or DEFAULT_MODELS_DIR).rstrip("/"),
    )
    blocks = _as_list(config.get("blocks"), "blocks")
    if not blocks:
        raise KdgridError("config key 'blocks' is empty: describe at least one block of cells")
    unique: dict[Cell, None] = {}
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise KdgridError(f"config key blocks[{i}]: expected a mapping, got {block!r}")
        name, cells = _expand_block(i, block, grid)
        if name in grid.block_cells:
            raise KdgridError(f"config key blocks[{i}].name: {name!r} names two blocks")
        grid.block_cells[name] = cells
        unique.update(dict.fromkeys(cells))
    grid.cells = list(unique)
    _check_top_k(grid)
    return grid


def _check_top_k(grid: Grid) -> None:
    """A cache keeps the top_k largest of a teacher's logits, at the widths of its students: top_k must
    not exceed the narrowest. Known here for tiny models; for hub models `kdgrid teacher-outputs` checks."""
    from .tiny_models import TINY_SPECS

    k = int(grid.teacher_cache["top_k"])
    for cache in grid.teacher_outputs:
        for c in grid.cells:
            if (c.family, c.teacher, c.teacher_kind) != (cache.family, cache.teacher, cache.teacher_kind):
                continue
            tiny = [m for m in (c.student, c.teacher) if grid.models[m].tiny and m in TINY_SPECS]
            narrowest = min(tiny, key=lambda m: TINY_SPECS[m].vocab_size, default=None)
            if narrowest and k > TINY_SPECS[narrowest].vocab_size:
                raise KdgridError(f"config key teacher_cache.top_k: {k} is more than the "
                                  f"{TINY_SPECS[narrowest].vocab_size} logits of {narrowest} (cell {c.id})")


def _resources_section(config: dict) -> dict:
    from .resources_plan import DEFAULT_RESOURCES

    return _section(config, "resources", DEFAULT_RESOURCES)


def load_config(path: str | os.PathLike) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise KdgridError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KdgridError(f"{path}{where}: not valid YAML ({e})") from None
    if not isinstance(config, dict):
        raise KdgridError(f"{path}: expected a mapping of config keys")
    return config
