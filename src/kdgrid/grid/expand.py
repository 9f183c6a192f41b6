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

import copy
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

from ..data_options import DataOptions
from ..errors import KdgridError
from ..evaluation.evaluate_options import EvaluateOptions
from ..hub import LOCK_NAME, estimated_bytes, fetch_record
from ..methods import METHODS, TEACHER_KINDS, cache_serves, get_method
from ..options import check_config, config_flags, field_of, flag, problem
from ..training.config import TrainConfig
from .frozen import derived, frozen
from .jobs import Cell, Comparison, Evaluation, SftRun, TeacherOutputs, TeacherResponses
from .layout import (
    BASE_DIR,
    CKPT_MODEL,
    CKPT_TRAIN_LOG,
    COMPARE_FILE,
    COST_CSV,
    COST_JOBS_CSV,
    DATA_DIR,
    DEFAULT_MODELS_DIR,
    EVAL_RECORDS,
    EVAL_SCORES,
    KD_COMPARE,
    KD_DIR,
    MODEL_NAME_REGEX,
    MODEL_STAMP,
    PLOT_CAPTION,
    PLOT_FILE,
    PLOT_NAMES,
    SFT_COMPARE,
    SFT_DIR,
    STATS_CSV,
    STATS_MD,
    TABLE_CSV,
    TABLE_PARQUET,
    TEACHER_OUTPUTS_FILE,
    TEACHER_RESPONSES_FILE,
    TEST_DIR,
    TEST_SET_STAMP,
    TINY_MODEL_DIR,
    TRAIN_FILE,
    fmt_number,
)
from .rule_params import (
    PARAMS_OF_RULE,
    AggregateParams,
    CompareParams,
    DistillParams,
    EvaluateParams,
    FetchModelParams,
    JobTable,
    PrepareDataParams,
    SftParams,
    TeacherOutputsParams,
    TeacherResponsesParams,
    flags,
    meta_flags,
)
from .spec import (
    CACHE_WIDTHS_ESTIMATE,
    DEFAULT_DISK,
    DEFAULT_KD,
    FamilySpec,
    ModelSpec,
    as_list,
    default_compare,
    default_evaluation,
    parse_families,
    parse_models,
    reject_non_finite,
    resources_section,
    section,
    teacher_cache_section,
    unknown_at,
)


@dataclass(frozen=True)
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
    cells: tuple[Cell, ...] = ()
    block_cells: dict[str, tuple[Cell, ...]] = field(default_factory=dict)
    models_dir: str = DEFAULT_MODELS_DIR
    config: dict = field(default_factory=dict, repr=False, compare=False)  # what the grid was expanded from

    def __post_init__(self):
        """Read-only all the way down (kdgrid.grid.frozen): every dict and list of the grid, its families'
        data and training sections included, refuses changes; what it derives (`derived`) is kept."""
        families = {name: dataclasses.replace(spec, data=frozen(spec.data), training=frozen(spec.training))
                    for name, spec in self.families.items()}
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, frozen(families if f.name == "families" else getattr(self, f.name)))

    # -- paths ---------------------------------------------------------------------------------
    def out(self, *parts: str) -> str:
        return os.path.join(self.outdir, *parts)

    def data_dir(self, family: str) -> str:
        """A family's prepared data, under this grid's results folder: grids with other data (another
        outdir) never share or overwrite it."""
        return self.out(DATA_DIR.format(family=family))

    def train_data(self, family: str) -> str:
        """A family's training set (in its data folder)."""
        return os.path.join(self.data_dir(family), TRAIN_FILE)

    def test_dir(self, family: str) -> str:
        return self.out(TEST_DIR.format(family=family))

    def ckpt_model(self, ckpt: str) -> str:
        """A trained checkpoint's weights (the folder `--model`/`--teacher` get)."""
        return self.out(CKPT_MODEL.format(ckpt=ckpt))

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
        stamps.update({self.test_set_stamp(f): self.test_dir(f) for f in self.models_of_family})
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
        return self.ckpt_model(self.teacher_ckpt(family, teacher, teacher_kind))

    def teacher_files(self, family: str, teacher: str, teacher_kind: str) -> list[str]:
        if teacher_kind == "base":
            return self.model_files(teacher)
        return [self.teacher_ref(family, teacher, teacher_kind)]

    # -- the jobs ------------------------------------------------------------------------------
    def cache_tolerance(self, name: str) -> float:
        """teacher_cache.max_loss_error of a method: the relative first-step loss error it accepts."""
        given = self.teacher_cache["max_loss_error"] or {}
        return float(given[name] if name in given else get_method(name).max_loss_error)

    def uses_cache(self, cell: Cell) -> bool:
        """May the cell read the cache? (It does only if its first-step check passes: `cache_tolerance`.)"""
        return cache_serves(cell.method, enabled=self.teacher_cache["enabled"], lmbda=self.kd["lmbda"],
                            noise_sigma=cell.noise_sigma, temperature=cell.temperature,
                            max_temperature=float(self.teacher_cache["max_temperature"]))

    @derived
    def cells_by_id(self) -> dict[str, Cell]:
        return {c.id: c for c in self.cells}

    @derived
    def sft_runs(self) -> list[SftRun]:
        runs = {}
        for c in self.cells:
            runs.setdefault(SftRun(c.family, c.student, c.seed), None)
            if c.teacher_kind == "sft":
                runs.setdefault(SftRun(c.family, c.teacher, self.teacher_seed), None)
        return list(runs)

    @derived
    def sft_runs_by_id(self) -> dict[str, SftRun]:
        return {r.id: r for r in self.sft_runs}

    @derived
    def models_of_family(self) -> dict[str, list[str]]:
        used: dict[str, dict[str, None]] = {}
        for c in self.cells:
            used.setdefault(c.family, {}).update({c.teacher: None, c.student: None})
        return {f: list(m) for f, m in used.items()}

    @derived
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

    @derived
    def evaluations_by_ckpt(self) -> dict[str, Evaluation]:
        return {e.ckpt: e for e in self.evaluations}

    def kd_meta(self, c: Cell) -> tuple:
        return (("cell", c.id), ("family", c.family), ("role", "kd"), ("model", c.student), ("teacher", c.teacher),
                ("student", c.student), ("method", c.method), ("temperature", fmt_number(c.temperature)),
                ("noise_sigma", fmt_number(c.noise_sigma)), ("teacher_kind", c.teacher_kind), ("seed", c.seed))

    @derived
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

    @derived
    def comparisons_by_id(self) -> dict[str, Comparison]:
        return {c.id: c for c in self.comparisons}

    @derived
    def teacher_outputs(self) -> list[TeacherOutputs]:
        return list({self.teacher_outputs_of(c): None for c in self.cells if self.uses_cache(c)})

    @derived
    def teacher_outputs_by_path(self) -> dict[str, TeacherOutputs]:
        return {t.path: t for t in self.teacher_outputs}

    def teacher_outputs_of(self, cell: Cell) -> TeacherOutputs | None:
        """The cache a cell reads instead of running its teacher, or None."""
        if not self.uses_cache(cell):
            return None
        return TeacherOutputs(cell.family, cell.teacher, cell.teacher_kind, cell.temperature,
                              int(self.teacher_cache["top_k"]))

    def teacher_responses_of(self, cell: Cell) -> TeacherResponses | None:
        """The teacher's generated answers a cell trains on (a method of responses: seqkd), or None."""
        if not get_method(cell.method).reads_responses:
            return None
        return TeacherResponses(cell.family, cell.teacher, cell.teacher_kind)

    @derived
    def teacher_responses(self) -> list[TeacherResponses]:
        return list({r: None for c in self.cells if (r := self.teacher_responses_of(c)) is not None})

    @derived
    def teacher_responses_by_path(self) -> dict[str, TeacherResponses]:
        return {t.path: t for t in self.teacher_responses}

    @derived
    def hub_models(self) -> list[str]:
        used = {m: None for models in self.models_of_family.values() for m in models}
        return [m for m in used if self.is_hub(m)]

    @derived
    def tiny_models(self) -> list[str]:
        used = {m: None for models in self.models_of_family.values() for m in models}
        return [m for m in used if self.models[m].tiny]

    # -- command-line flags (what each rule's `params:` carries) ---------------------------------
    def training_args(self, family: str) -> list[str]:
        """The family's training hyper-parameters as `kdgrid train` flags (the LoRA ones only with LoRA,
        so that they re-run nothing a full fine-tuning does not read)."""
        return config_flags(TrainConfig, "training", self.families[family].training)

    def distill_args(self, cell: Cell, cache_path: bool = True) -> list[str]:
        """Flags of a KD cell beyond the family's hyper-parameters: its method and teacher signal.
        `cache_path=False`: without `--teacher-cache PATH`, which the rule passes from its input."""
        spec = get_method(cell.method)
        args = ["--method", cell.method, "--seed", str(cell.seed)]
        if spec.reads_logits:
            args += ["--teacher", self.teacher_ref(cell.family, cell.teacher, cell.teacher_kind), "--temperature", fmt_number(cell.temperature)]
            if cell.noise_sigma > 0:
                args += ["--noise-sigma", fmt_number(cell.noise_sigma)]
            cache = self.teacher_outputs_of(cell)
            if cache is not None:
                args += ["--teacher-cache", self.out(cache.path)] if cache_path else []
                args += ["--cache-max-loss-error", fmt_number(self.cache_tolerance(cell.method))]
        for key in spec.settings:
            args += [f"--{key.replace('_', '-')}", str(self.kd[key])]
        return args + spec.loss_version_flag(self.kd)

    def distill_data(self, cell: Cell) -> str:
        if get_method(cell.method).reads_responses:
            return self.out(TeacherResponses(cell.family, cell.teacher, cell.teacher_kind).path)
        return self.train_data(cell.family)

    def evaluation_args(self) -> list[str]:
        return config_flags(EvaluateOptions, "evaluation", self.evaluation)

    def data_args(self, family: str) -> list[str]:
        """`kdgrid data prepare`'s flags (DataOptions) for a family, in the order prepare_data's params
        have always had them (another order would re-run every prepare_data job)."""
        spec = self.families[family]
        d = spec.data
        named = {key: flag(field_of(DataOptions, key)) for key in (*d, "tasks")}
        args = [named["source"], d["source"], named["seed"], str(d["seed"]), named["tasks"], ",".join(spec.tasks)]
        for key in ("local", "n_train", "n_test", "limit_test"):
            if d[key] is not None:
                args += [named[key], str(d[key])]
        if d["verify"] is False:
            args.append(named["verify"])
        return args

    def data_source_ids(self, family: str) -> dict[str, str | None]:
        """The git blob ids of the LLM-Adapters files a family's data are made from (the pinned ids, or
        those of an unverified local folder's files): a param of prepare_data, so new ids re-run it."""
        from ..realdata import source_ids, test_path, train_path

        spec = self.families[family]
        paths = [train_path(family)] + [test_path(t) for t in spec.tasks]
        return source_ids(paths, spec.data["local"], spec.data["verify"] is not False)

    def sizes(self) -> list[str]:
        used = {m for models in self.models_of_family.values() for m in models}
        return [f"{name}={fmt_number(self.models[name].size_b)}" for name in self.models if name in used]

    # -- what each rule asks (workflow/rules/*.smk look it up, decide nothing) -------------------
    def config_without_disk(self) -> dict:
        """The config the grid was expanded from, but its disk section (which decides no result): what
        the cost ledger estimates (kdgrid aggregate --grid-config)."""
        return {k: v for k, v in self.config.items() if k != "disk"}

    @property
    def keep_checkpoints(self) -> int:
        return int(self.disk["keep_checkpoints"])

    def wildcard_constraints(self) -> dict[str, str]:
        """What each wildcard of the rules' paths may match (kdgrid.grid.layout's patterns)."""
        return {
            "family": "|".join(self.families),
            "model": MODEL_NAME_REGEX,
            "teacher": MODEL_NAME_REGEX,
            "student": MODEL_NAME_REGEX,
            "method": "|".join(METHODS),
            "temperature": r"[0-9.]+(e-?[0-9]+)?",
            "ablation": "|".join(f"{kind}-teacher" for kind in TEACHER_KINDS) + r"|noise[0-9.]+(e-?[0-9]+)?",
            "seed": r"\d+",
            "teacher_kind": "|".join(TEACHER_KINDS),
            "top_k": r"\d+",
            "ckpt": r".+",
            "comparison": r".+/compare(/[^/]+/(" + "|".join(TEACHER_KINDS) + ")-teacher)?",
        }

    def hub_model_regex(self) -> str:
        """The model wildcard of fetch_model: one of the grid's hub models (none: matches nothing)."""
        return "|".join(re.escape(name) for name in self.hub_models) or "(?!)"

    def check_model_folders(self) -> None:
        for name, spec in self.models.items():
            if spec.path and not spec.tiny and not os.path.isdir(spec.path):
                raise KdgridError(f"config key models.{name}.path: folder {spec.path} does not exist")

    def checkpoint_files(self, ckpt: str) -> list[str]:
        """The workflow files an evaluation's model comes from: a trained checkpoint's folder, or the
        base model's files."""
        ev = self.evaluations_by_ckpt[ckpt]
        return self.model_files(ev.model) if ev.role == "base" else [self.ckpt_model(ckpt)]

    def sft_inputs(self, run: SftRun) -> dict:
        return {"data": self.train_data(run.family), "model": self.model_files(run.model)}

    def distill_inputs(self, cell: Cell) -> dict:
        """data, student, teacher (not for seqkd, which trains on its responses) and, for a cell that may
        read it, the teacher-output cache."""
        inputs = {"data": self.distill_data(cell), "student": self.model_files(cell.student)}
        if get_method(cell.method).reads_logits:
            inputs["teacher"] = self.teacher_files(cell.family, cell.teacher, cell.teacher_kind)
        cache = self.teacher_outputs_of(cell)
        if cache is not None:
            inputs["cache"] = self.out(cache.path)
        return inputs

    def teacher_signal_inputs(self, job: TeacherOutputs | TeacherResponses) -> dict:
        return {"data": self.train_data(job.family),
                "teacher": self.teacher_files(job.family, job.teacher, job.teacher_kind)}

    def evaluate_inputs(self, ev: Evaluation) -> dict:
        return {"test": self.test_set_stamp(ev.family), "model": self.checkpoint_files(ev.ckpt)}

    def compare_inputs(self, c: Comparison) -> dict:
        return {"student": self.out(EVAL_RECORDS.format(ckpt=c.student_ckpt)),
                "teacher": self.out(EVAL_RECORDS.format(ckpt=c.teacher_ckpt))}

    def aggregate_inputs(self) -> dict:
        return {"scores": [self.out(EVAL_SCORES.format(ckpt=e.ckpt)) for e in self.evaluations],
                "compare": [self.out(COMPARE_FILE.format(comparison=c.id)) for c in self.comparisons],
                "train_logs": [self.out(CKPT_TRAIN_LOG.format(ckpt=job.id)) for job in (*self.sft_runs, *self.cells)],
                "records": [self.out(EVAL_RECORDS.format(ckpt=e.ckpt)) for e in self.evaluations]}

    def prepare_data_params(self, family: str) -> PrepareDataParams:
        """made_from: what the data are made from (a change re-makes them): the tiny world's code, or the
        LLM-Adapters files' git blob ids."""
        if self.families[family].data["source"] == "synthetic":
            from ..tiny_models import world_fingerprint

            made_from = world_fingerprint()
        else:
            made_from = self.data_source_ids(family)
        return PrepareDataParams(args=flags(self.data_args(family)), made_from=made_from)

    def fetch_model_params(self, name: str) -> FetchModelParams:
        return FetchModelParams(hub=flags(self.fetch_args(name)), revision=self.revision_param(name))

    def sft_params(self, run: SftRun) -> SftParams:
        return SftParams(model=self.model_ref(run.model), model_revision=self.revision_param(run.model),
                         training=flags(self.training_args(run.family)), cell=run.id)

    def distill_params(self, cell: Cell) -> DistillParams:
        args = self.distill_args(cell, cache_path=False)  # the rule passes the cache as {input.cache}
        return DistillParams(student=self.model_ref(cell.student), model_revision=self.revision_param(cell.student),
                             teacher_revision=self.teacher_revision_param(cell.teacher, cell.teacher_kind),
                             training=flags(self.training_args(cell.family)), distill=flags(args), cell=cell.id)

    def teacher_outputs_params(self, t: TeacherOutputs) -> TeacherOutputsParams:
        training = self.families[t.family].training
        return TeacherOutputsParams(
            teacher=self.teacher_ref(t.family, t.teacher, t.teacher_kind),
            teacher_revision=self.teacher_revision_param(t.teacher, t.teacher_kind),
            top_k=t.top_k, temperature=fmt_number(t.temperature), cutoff=training["cutoff"],
            token_scope=training["token_scope"], precision=training["precision"],
            tail_samples=self.teacher_cache["tail_samples"])

    def teacher_responses_params(self, t: TeacherResponses) -> TeacherResponsesParams:
        return TeacherResponsesParams(
            teacher=self.teacher_ref(t.family, t.teacher, t.teacher_kind),
            teacher_revision=self.teacher_revision_param(t.teacher, t.teacher_kind),
            max_new_tokens=self.kd["seqkd_max_new_tokens"], precision=self.families[t.family].training["precision"])

    def evaluate_params(self, ev: Evaluation) -> EvaluateParams:
        base = ev.role == "base"
        return EvaluateParams(
            model=self.model_ref(ev.model) if base else self.ckpt_model(ev.ckpt),
            model_revision=self.revision_param(ev.model) if base else "",
            family=ev.family, data_dir=self.data_dir(ev.family), tasks=",".join(self.families[ev.family].tasks),
            settings=flags(self.evaluation_args()), meta=meta_flags(ev.meta))

    def compare_params(self, c: Comparison) -> CompareParams:
        return CompareParams(embedding_model=self.compare["embedding_model"], meta=meta_flags(c.meta))

    def aggregate_params(self) -> AggregateParams:
        return AggregateParams(sizes=flags(self.sizes()),
                               grid_config=json.dumps(self.config_without_disk(), sort_keys=True, default=str))

    def _rule_jobs(self, rule: str) -> tuple[str, str, dict]:
        """(what a job of `rule` is, the path its wildcards fill, {that path: the job})."""
        if rule == "prepare_data":
            return "family", "{family}", {f: f for f in self.models_of_family}
        if rule == "fetch_model":
            return "hub model", "{model}", {m: m for m in self.hub_models}
        if rule == "sft":
            return "SFT run", SFT_DIR, self.sft_runs_by_id
        if rule == "distill":
            return "distillation cell", KD_DIR, self.cells_by_id
        if rule == "teacher_outputs":
            return "teacher-output cache", TEACHER_OUTPUTS_FILE, self.teacher_outputs_by_path
        if rule == "teacher_responses":
            return "teacher responses", TEACHER_RESPONSES_FILE, self.teacher_responses_by_path
        if rule == "evaluate":
            return "checkpoint", "{ckpt}", self.evaluations_by_ckpt
        if rule == "compare":
            return "comparison", "{comparison}", self.comparisons_by_id
        raise KdgridError(f"rule {rule!r} has no jobs of their own in the grid")

    def inputs_table(self, rule: str) -> JobTable:
        """Each job's inputs of `rule` (a dict for `unpack`), keyed by the path its wildcards fill."""
        what, key, jobs = self._rule_jobs(rule)
        inputs = self.teacher_signal_inputs if rule.startswith("teacher_") else getattr(self, f"{rule}_inputs")
        return JobTable(what, key, {k: inputs(job) for k, job in jobs.items()})

    def params_table(self, rule: str) -> JobTable:
        """Each job's params record of `rule` (`Grid.<rule>_params`), keyed by the path its wildcards fill.
        prepare_data's are made per job when asked (they may hash local data files)."""
        what, key, jobs = self._rule_jobs(rule)
        make = getattr(self, f"{rule}_params")
        names = [f.name for f in dataclasses.fields(PARAMS_OF_RULE[rule])]
        if rule == "prepare_data":
            return JobTable(what, key, jobs, make=make, names=names)
        return JobTable(what, key, {k: make(job) for k, job in jobs.items()}, names=names)

    def resources_table(self, rule: str) -> JobTable:
        """Each job's kdgrid.resources_plan.JobResources of `rule` (compare: the light plan of every job)."""
        what, key, jobs = self._rule_jobs(rule)
        if rule == "compare":
            from ..resources_plan import plan_light

            return JobTable(what, key, dict.fromkeys(jobs, plan_light(self.resources)))
        plan = {"sft": self.resources_sft, "distill": self.resources_distill,
                "evaluate": lambda ev: self.resources_inference(ev.model, ev.family, "evaluate"),
                "teacher_outputs": lambda t: self.resources_inference(t.teacher, t.family, "teacher_outputs"),
                "teacher_responses": lambda t: self.resources_inference(t.teacher, t.family, "teacher_responses"),
                }[rule]
        return JobTable(what, key, {k: plan(job) for k, job in jobs.items()})

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
        spec = get_method(cell.method)
        runs_teacher = spec.reads_logits and not (cache_passes and self.uses_cache(cell))
        teacher_b = self.models[cell.teacher].size_b if runs_teacher else 0.0
        generation = self.kd["gkd_max_new_tokens"] * self.kd["lmbda"] if spec.student_samples else 0
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
        from ..resources_plan import plan_training

        return plan_training(self.resources, *self.sft_size(run))

    def resources_distill(self, cell: Cell):
        from ..resources_plan import plan_training

        return plan_training(self.resources, *self.distill_size(cell))

    def resources_inference(self, model: str, family: str, kind: str):
        """kind: evaluate, teacher_outputs or teacher_responses (see inference_size)."""
        from ..resources_plan import plan_inference

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
            if not get_method(c.method).reads_logits:
                continue
            seen = self.families[c.family].examples_seen()
            without += seen
            # a cell that may read the cache runs its teacher for the first step (the cache check)
            with_cache += self.families[c.family].check_examples() if self.uses_cache(c) else seen
        cache_passes = sum(self.families[t.family].approx_train_examples for t in self.teacher_outputs)
        with_cache += cache_passes
        generation = sum(self.families[t.family].approx_train_examples for t in self.teacher_responses)
        from ..teacher_cache import bytes_per_token

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
                    for c in self.cells if self.uses_cache(c) and not get_method(c.method).cache_unbiased),
                "check_passes": sum(self.families[c.family].check_examples() for c in self.cells if self.uses_cache(c)),
                "cached_cells": sum(self.uses_cache(c) for c in self.cells),
                "online_teacher_cells": sum(get_method(c.method).reads_logits and not self.uses_cache(c)
                                            for c in self.cells),
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
        targets = [self.out(EVAL_SCORES.format(ckpt=e.ckpt)) for e in self.evaluations]
        targets += [self.out(COMPARE_FILE.format(comparison=c.id)) for c in self.comparisons]
        targets += [self.out(p) for p in (TABLE_CSV, TABLE_PARQUET, COST_CSV, COST_JOBS_CSV, STATS_CSV, STATS_MD)]
        targets += [self.out(PLOT_FILE.format(name=name, ext=ext)) for name in PLOT_NAMES for ext in ("png", "pdf")]
        targets += [self.out(PLOT_CAPTION.format(name=name)) for name in PLOT_NAMES]
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
    families = as_list(block.get("families"), f"{where}.families") or list(grid.families)
    for f in families:
        if f not in grid.families:
            raise unknown_at(f"{where}.families", "family", f, grid.families)
    teachers = as_list(block.get("teachers"), f"{where}.teachers") or list(grid.pairs)
    students = as_list(block.get("students"), f"{where}.students")
    for t in teachers:
        if t not in grid.pairs:
            raise unknown_at(f"{where}.teachers", "teacher", t, grid.pairs)
    for s in students:
        if s not in grid.models:
            raise unknown_at(f"{where}.students", "model", s, grid.models)
    methods = as_list(block.get("methods"), f"{where}.methods")
    if not methods:
        raise KdgridError(f"config key {where}.methods is empty (known methods: {', '.join(METHODS)})")
    for m in methods:
        if m not in METHODS:
            raise unknown_at(f"{where}.methods", "method", m, METHODS)
    temperatures = [float(t) for t in as_list(block.get("temperatures"), f"{where}.temperatures") or [1.0]]
    noise_sigmas = [float(s) for s in as_list(block.get("noise_sigmas"), f"{where}.noise_sigmas") or [0.0]]
    teacher_kind = block.get("teacher_kind", "sft")
    if teacher_kind not in TEACHER_KINDS:
        raise unknown_at(f"{where}.teacher_kind", "teacher kind", teacher_kind, TEACHER_KINDS)
    if teacher_kind == "base" and any(s > 0 for s in noise_sigmas):
        raise KdgridError(f"config key {where}: noise_sigmas apply to the SFT teacher only (teacher_kind: sft)")
    for key, flag_name, values in (("temperatures", "temperature", temperatures),
                                   ("noise_sigmas", "noise_sigma", noise_sigmas)):
        for value in values:
            why = problem(field_of(TrainConfig, flag_name), value)
            if why:
                raise KdgridError(f"config key {where}.{key}: {value} {why}")

    cells = []
    for family in families:
        for teacher in teachers:
            for student in grid.pairs[teacher]:
                if students and student not in students:
                    continue
                for method in methods:
                    # SeqKD trains on the teacher's generated answers: no logits, so no temperature or noise.
                    responses = get_method(method).reads_responses
                    temps = [1.0] if responses else temperatures
                    sigmas = [0.0] if responses else noise_sigmas
                    for temperature in temps:
                        for sigma in sigmas:
                            for seed in grid.seeds:
                                cells.append(Cell(family, teacher, student, method, temperature, sigma,
                                                  teacher_kind, seed))
    if not cells:
        raise KdgridError(f"config key {where}: selects no cell (check its teachers and students against 'pairs')")
    return name, cells



def expand_grid(config: dict) -> Grid:
    """The grid a config describes, with every cell once however many blocks name it."""
    if not isinstance(config, dict):
        raise KdgridError(f"config: expected a mapping, got {type(config).__name__}")
    reject_non_finite(config)
    models = parse_models(config)
    families = parse_families(config)
    pairs = {}
    for teacher, students in (config.get("pairs") or {}).items():
        if teacher not in models:
            raise unknown_at("pairs", "model", teacher, models)
        for s in as_list(students, f"pairs.{teacher}"):
            if s not in models:
                raise unknown_at(f"pairs.{teacher}", "model", s, models)
            if s == teacher:
                raise KdgridError(f"config key pairs.{teacher}: a model cannot be its own student")
        pairs[teacher] = list(students)
    if not pairs:
        raise KdgridError("config key 'pairs' is empty: map each teacher to its students")
    seeds = [int(s) for s in as_list(config.get("seeds"), "seeds") or [42]]
    if len(set(seeds)) != len(seeds):
        raise KdgridError(f"config key seeds: {seeds} repeats a seed")
    teacher_seed = config.get("teacher_seed")
    evaluation = section(config, "evaluation", default_evaluation())
    check_config(EvaluateOptions, "evaluation", evaluation, "evaluation.")
    grid = Grid(
        outdir=str(config.get("outdir") or "results").rstrip("/"),
        models=models,
        families=families,
        pairs=pairs,
        seeds=seeds,
        teacher_seed=int(teacher_seed) if teacher_seed is not None else seeds[0],
        kd=section(config, "kd", DEFAULT_KD),
        evaluation=evaluation,
        compare=section(config, "compare", default_compare()),
        teacher_cache=teacher_cache_section(config),
        resources=resources_section(config),
        disk=section(config, "disk", DEFAULT_DISK),
        models_dir=str(config.get("models_dir") or DEFAULT_MODELS_DIR).rstrip("/"),
        config=copy.deepcopy(config),
    )
    blocks = as_list(config.get("blocks"), "blocks")
    if not blocks:
        raise KdgridError("config key 'blocks' is empty: describe at least one block of cells")
    unique: dict[Cell, None] = {}
    block_cells: dict[str, tuple[Cell, ...]] = {}
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise KdgridError(f"config key blocks[{i}]: expected a mapping, got {block!r}")
        name, cells = _expand_block(i, block, grid)
        if name in block_cells:
            raise KdgridError(f"config key blocks[{i}].name: {name!r} names two blocks")
        block_cells[name] = tuple(cells)
        unique.update(dict.fromkeys(cells))
    grid = dataclasses.replace(grid, cells=tuple(unique), block_cells=block_cells)
    _check_top_k(grid)
    return grid


def _check_top_k(grid: Grid) -> None:
    """A cache keeps the top_k largest of a teacher's logits, at the widths of its students: top_k must
    not exceed the narrowest. Known here for tiny models; for hub models `kdgrid teacher-outputs` checks."""
    from ..tiny_models import TINY_SPECS

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

