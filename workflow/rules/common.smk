# Every decision of the workflow, made by kdgrid.grid: the rules only look jobs up here.
import json
import os
import re
import shlex
import sys

from kdgrid.errors import KdgridError
from kdgrid.grid import (
    COST_CSV,
    COST_JOBS_CSV,
    DATA_DIR,
    FINGERPRINT_CACHE,
    KD_DIR,
    METHODS,
    MODEL_NAME_REGEX,
    PLOT_NAMES,
    PLOTS_DIR,
    SFT_DIR,
    STATS_CSV,
    STATS_MD,
    TABLE_CSV,
    TABLE_PARQUET,
    TEACHER_OUTPUTS_FILE,
    TEACHER_RESPONSES_FILE,
    TINY_MODEL_DIR,
    expand_grid,
)
from kdgrid.fingerprint import refresh_stamps
from kdgrid.run_record import clear_stale_locks
from kdgrid.tiny_models import world_fingerprint

GRID = expand_grid(config)
OUT = GRID.outdir
ENV = "../../envs/kdgrid.yaml"  # relative to the rule files
TINY_WORLD = world_fingerprint()
# A resource, not a param: whether checkpoints/ outlives a finished job decides no result, re-runs nothing.
KEEP_CHECKPOINTS = int(GRID.disk["keep_checkpoints"])

# No job asks the model hub: tiny models are built locally, path: models are folders, and hub models are
# fetched once by the local rule fetch_model (the only one that goes online) into GRID.models_dir. Jobs
# inherit this environment, on the cluster too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HUB_MODEL_REGEX = "|".join(re.escape(name) for name in GRID.hub_models) or "(?!)"

# Folder inputs take part in re-run decisions by their content (kdgrid.fingerprint): rules read a stamp
# holding the folder's content hash, renewed below when the content changed (in the main process, not
# again in every cluster job). A prepared test set's first stamp comes from rule fingerprint_folder.
FOLDER_STAMPS = GRID.folder_stamps()


def hub_disk_summary():
    """What the fetched hub models take on disk: one line for the dry run, before the job table."""
    from kdgrid.hub import format_bytes

    disk = GRID.fetch_disk()
    if not disk["to_fetch"]:
        return None
    line = (f"kdgrid: {len(disk['to_fetch'])} hub model(s) to fetch into {GRID.models_dir}/: about "
            f"{format_bytes(sum(disk['to_fetch'].values()))} (estimated from size_b at 2 bytes per parameter)")
    if disk["fetched"]:
        line += f"; {len(disk['fetched'])} fetched already: {format_bytes(sum(disk['fetched'].values()))}"
    return line


if workflow.is_main_process:  # once, where Snakemake runs, before the job table (not in every cluster job)
    from kdgrid.cost_plan import summary_line

    print(summary_line(GRID), file=sys.stderr)  # what the grid will cost (kdgrid.cost_plan)
    hub_disk = hub_disk_summary()
    if hub_disk:
        print(hub_disk, file=sys.stderr)
    for _name, _spec in GRID.models.items():
        if _spec.path and not _spec.tiny and not os.path.isdir(_spec.path):
            raise KdgridError(f"config key models.{_name}.path: folder {_spec.path} does not exist")
    refresh_stamps(FOLDER_STAMPS, os.path.join(OUT, FINGERPRINT_CACHE))
    stale = clear_stale_locks()
    if stale:
        print(f"kdgrid: {stale}", file=sys.stderr)
    for note in GRID.notes():  # allowed, but worth a word before anything runs
        print(f"kdgrid: note: {note}", file=sys.stderr)


wildcard_constraints:
    family="|".join(GRID.families),
    model=MODEL_NAME_REGEX,
    teacher=MODEL_NAME_REGEX,
    student=MODEL_NAME_REGEX,
    method="|".join(METHODS),
    temperature=r"[0-9.]+(e-?[0-9]+)?",
    ablation=r"sft-teacher|base-teacher|noise[0-9.]+(e-?[0-9]+)?",
    seed=r"\d+",
    teacher_kind="sft|base",
    top_k=r"\d+",
    ckpt=r".+",
    comparison=r".+/compare(/[^/]+/(sft|base)-teacher)?",


# --- paths ----------------------------------------------------------------------------------------


def out(*parts):
    return os.path.join(OUT, *parts)


def log_of(rule_name, pattern):
    return out("logs", rule_name, f"{pattern}.log")


def benchmark_of(rule_name, pattern):
    return out("benchmarks", rule_name, f"{pattern}.tsv")


def flags(args):
    return shlex.join(str(a) for a in args)


# --- the job a rule's wildcards name (an error if the grid has no such job) ------------------------


def _lookup(table, key, what):
    if key not in table:
        raise KdgridError(f"{what} {key!r} is not part of the grid of this config")
    return table[key]


def kd_cell(wildcards):
    return _lookup(GRID.cells_by_id, KD_DIR.format(**wildcards), "distillation cell")


def sft_run(wildcards):
    return _lookup(GRID.sft_runs_by_id, SFT_DIR.format(**wildcards), "SFT run")


def evaluation(wildcards):
    return _lookup(GRID.evaluations_by_ckpt, wildcards.ckpt, "checkpoint")


def comparison(wildcards):
    return _lookup(GRID.comparisons_by_id, wildcards.comparison, "comparison")


def teacher_outputs_job(wildcards):
    return _lookup(GRID.teacher_outputs_by_path, TEACHER_OUTPUTS_FILE.format(**wildcards), "teacher-output cache")


def teacher_responses_job(wildcards):
    return _lookup(GRID.teacher_responses_by_path, TEACHER_RESPONSES_FILE.format(**wildcards), "teacher responses")


# --- inputs and flags --------------------------------------------------------------------------------


def train_data(family):
    return GRID.train_data(family)


def test_data(family):
    return f"{GRID.data_dir(family)}/test"


def eval_files(ckpt):
    return {"scores": out(ckpt, "eval", "scores.json"), "records": out(ckpt, "eval", "records.jsonl")}


def checkpoint_model(ckpt):
    """The model an evaluation loads: the checkpoint's folder, or for a base model its weights."""
    ev = GRID.evaluations_by_ckpt[ckpt]
    if ev.role == "base":
        return GRID.model_ref(ev.model)
    return out(ckpt, "model")


def base_model_revision(ckpt):
    """The revision a base-model evaluation loads (a trained checkpoint is an input folder instead)."""
    ev = GRID.evaluations_by_ckpt[ckpt]
    return GRID.revision_param(ev.model) if ev.role == "base" else ""


def checkpoint_files(ckpt):
    ev = GRID.evaluations_by_ckpt[ckpt]
    if ev.role == "base":
        return GRID.model_files(ev.model)
    return [out(ckpt, "model")]


def meta_flags(meta):
    return flags(f"{key}={value}" for key, value in meta)


def distill_inputs(wildcards):
    cell = kd_cell(wildcards)
    inputs = {"data": GRID.distill_data(cell), "student": GRID.model_files(cell.student)}
    if cell.method != "seqkd":
        inputs["teacher"] = GRID.teacher_files(cell.family, cell.teacher, cell.teacher_kind)
    cache = GRID.teacher_outputs_of(cell)
    if cache is not None:
        inputs["cache"] = out(cache.path)
    return inputs


def evaluate_inputs(wildcards):
    ev = evaluation(wildcards)
    return {"test": GRID.test_set_stamp(ev.family), "model": checkpoint_files(ev.ckpt)}


def stamped_folder(wildcards):
    stamp = out("fingerprints", wildcards.kind, f"{wildcards.name}.json")
    return _lookup(FOLDER_STAMPS, stamp, "folder stamp")


def compare_inputs(wildcards):
    c = comparison(wildcards)
    return {"student": eval_files(c.student_ckpt)["records"], "teacher": eval_files(c.teacher_ckpt)["records"]}


# --- resources (kdgrid.resources_plan) ---------------------------------------------------------------


RESOURCE_KEYS = ("gpu", "cpus_per_gpu", "mem_mb", "runtime", "nproc", "zero_stage")


def _resource(plan, key):
    def get(wildcards):
        return getattr(plan(wildcards), key)

    return get


def job_resources(plan):
    """A rule's resources from `plan(wildcards) -> kdgrid.resources_plan.JobResources`. The SLURM
    executor reads gpu, cpus_per_gpu, mem_mb and runtime; nproc and zero_stage reach `kdgrid train`."""
    return {key: _resource(plan, key) for key in RESOURCE_KEYS}


def job_threads(plan):
    return _resource(plan, "threads")


def plan_sft(wildcards):
    return GRID.resources_sft(sft_run(wildcards))


def plan_distill(wildcards):
    return GRID.resources_distill(kd_cell(wildcards))


def plan_evaluate(wildcards):
    ev = evaluation(wildcards)
    return GRID.resources_inference(ev.model, ev.family, "evaluate")


def plan_teacher_outputs(wildcards):
    return GRID.resources_inference(wildcards.teacher, wildcards.family, "teacher_outputs")


def plan_teacher_responses(wildcards):
    return GRID.resources_inference(wildcards.teacher, wildcards.family, "teacher_responses")


def plan_light(wildcards=None):
    from kdgrid.resources_plan import plan_light

    return plan_light(GRID.resources)
