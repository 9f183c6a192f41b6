# Every decision of the workflow, made by kdgrid.grid: the rules only look jobs up here.
import inspect
import os
import sys

try:  # Snakemake's own helpers (snakemake.ioutils) tell it a function's signature this way
    from snakemake.common import overwrite_function_params
except ImportError:  # a Snakemake without it reads the signature at every call: slower, the same jobs

    def overwrite_function_params(func, params):
        pass


from kdgrid.grid import (
    BENCHMARK_FILE,
    CKPT_MODEL,
    CKPT_TRAIN_LOG,
    COMPARE_FILE,
    COST_CSV,
    COST_JOBS_CSV,
    DATA_DIR,
    EVAL_RECORDS,
    EVAL_SCORES,
    FINGERPRINT_CACHE,
    FOLDER_STAMP,
    KD_DIR,
    LOG_FILE,
    PLOT_CAPTION,
    PLOT_FILE,
    PLOT_NAMES,
    SFT_DIR,
    STATS_CSV,
    STATS_MD,
    TABLE_CSV,
    TABLE_PARQUET,
    TEACHER_FIDELITY_FILE,
    TEACHER_OUTPUTS_FILE,
    TEACHER_RESPONSES_FILE,
    TEST_DIR,
    TEST_SETS_KIND,
    TINY_MODEL_DIR,
    TRAIN_FILE,
    JobTable,
    flags,
    grid_of,
)
from kdgrid.fingerprint import refresh_stamps
from kdgrid.grid_summary import hub_disk
from kdgrid.run_record import clear_stale_locks
from kdgrid.tiny_models import world_fingerprint

GRID = grid_of(config, workflow.configfiles)  # its errors name the config file and key
out = GRID.out
ENV = "../../envs/kdgrid.yaml"  # relative to the rule files
TINY_WORLD = world_fingerprint()
# A resource, not a param: whether checkpoints/ outlives a finished job decides no result, re-runs nothing.
KEEP_CHECKPOINTS = GRID.keep_checkpoints

# No job asks the model hub: tiny models are built locally, path: models are folders, and hub models are
# fetched once by the local rule fetch_model (the only one that goes online) into GRID.models_dir. Jobs
# inherit this environment, on the cluster too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HUB_MODEL_REGEX = GRID.hub_model_regex()

# Folder inputs take part in re-run decisions by their content (kdgrid.fingerprint): rules read a stamp
# holding the folder's content hash, renewed below when the content changed (in the main process, not
# again in every cluster job). A prepared test set's first stamp comes from rule fingerprint_folder.
FOLDER_STAMPS = GRID.folder_stamps()


if workflow.is_main_process:  # once, where Snakemake runs, before the job table (not in every cluster job)
    from kdgrid.cost_plan import summary_line

    print(summary_line(GRID), file=sys.stderr)  # what the grid will cost (kdgrid.cost_plan)
    for line in hub_disk(GRID):  # what the hub models still to fetch will take on disk
        print(f"kdgrid: {line}", file=sys.stderr)
    GRID.check_model_folders()
    refresh_stamps(FOLDER_STAMPS, out(FINGERPRINT_CACHE))
    stale = clear_stale_locks()
    if stale:
        print(f"kdgrid: {stale}", file=sys.stderr)
    for note in GRID.notes():  # allowed, but worth a word before anything runs
        print(f"kdgrid: note: {note}", file=sys.stderr)


wildcard_constraints:
    **GRID.wildcard_constraints(),


# --- paths (kdgrid.grid.layout) ---------------------------------------------------------------------


def log_of(rule_name, pattern):
    return out(LOG_FILE.format(rule=rule_name, job=pattern))


def benchmark_of(rule_name, pattern):
    return out(BENCHMARK_FILE.format(rule=rule_name, job=pattern))


# --- each job's inputs, params and resources, looked up by its wildcards -----------------------------
# Built once from the grid (kdgrid.grid.rule_params.JobTable): a value every job of a rule shares is
# handed to Snakemake as it is, the others as a lookup, so that planning a large grid stays fast.

def known_signature(value):
    """Snakemake reads a function's signature (inspect.signature) each time it calls it, for every job;
    give it once."""
    if callable(value):
        overwrite_function_params(value, inspect.signature(value).parameters)
    return value


def once_per_job(values):
    return {name: known_signature(value) for name, value in values.items()}


_JOBS = ("sft", "distill", "teacher_outputs", "teacher_responses", "evaluate", "compare")
INPUTS = {rule: known_signature(GRID.inputs_table(rule).lookup()) for rule in _JOBS}
PARAMS = {rule: GRID.params_table(rule) for rule in ("prepare_data", "fetch_model", *_JOBS)}
AGGREGATE = GRID.aggregate_params()
STAMPED_FOLDER = known_signature(JobTable("folder stamp", out(FOLDER_STAMP), FOLDER_STAMPS).lookup())


def job_params(rule_name, **derived):
    """A rule's params: its record's fields (kdgrid.grid.rule_params), plus `derived` ones, functions of
    the job's input or output (Snakemake leaves those out of its re-run decisions)."""
    return once_per_job({**PARAMS[rule_name].as_params(), **derived})


def input_flag(name, flag):
    """A derived param: `flag {input.<name>}` for a job that has that input, nothing for the others."""

    def of_job(wildcards, input):
        return flags([flag, input[name]]) if name in input.keys() else ""

    return of_job


def output_dir(name=None):
    """A derived param: the folder of the output `name` (all outputs: the folder they share)."""

    def of_job(wildcards, output):
        return os.path.dirname(output[name]) if name else os.path.commonpath(output)

    return of_job


def input_dir(name):
    def of_job(wildcards, input):
        return os.path.dirname(input[name])

    return of_job


# The resources of kdgrid.resources_plan: the SLURM executor reads gpu, cpus_per_gpu, mem_mb and runtime;
# nproc and zero_stage reach `kdgrid train`.
RESOURCE_KEYS = ("gpu", "cpus_per_gpu", "mem_mb", "runtime", "nproc", "zero_stage")
RESOURCES = {rule: GRID.resources_table(rule) for rule in _JOBS}


def job_resources(rule_name):
    return once_per_job(RESOURCES[rule_name].fields(RESOURCE_KEYS))


def job_threads(rule_name):
    return known_signature(RESOURCES[rule_name].field("threads"))
