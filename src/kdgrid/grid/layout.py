"""Where each kind of job writes, relative to a grid's results folder (docs/architecture.md), and how
numbers appear in those paths."""

from __future__ import annotations

from ..analysis.captions import FIGURES

# The figures `kdgrid plots` writes (<name>.png, <name>.pdf and captions/<name>.rst), from the one
# list the plots command draws.
PLOT_NAMES = FIGURES

# Where each kind of job writes, relative to the results folder (docs/architecture.md).
KD_DIR = "{family}/{teacher}__{student}/{method}/t{temperature}/{ablation}/seed{seed}"
SFT_DIR = "{family}/sft/{model}/seed{seed}"
BASE_DIR = "{family}/base/{model}"
TEACHER_OUTPUTS_FILE = "{family}/teacher_outputs/{teacher}/{teacher_kind}/t{temperature}/topk{top_k}.pt"
TEACHER_FIDELITY_FILE = TEACHER_OUTPUTS_FILE.removesuffix(".pt") + ".fidelity.json"  # the cache's first-step check
TEACHER_RESPONSES_FILE = "{family}/teacher_responses/{teacher}/{teacher_kind}/train.json"
# What a checkpoint's folder (<ckpt>: a KD_DIR, SFT_DIR or BASE_DIR) holds.
CKPT_MODEL = "{ckpt}/model"  # a trained checkpoint's weights
CKPT_TRAIN_LOG = "{ckpt}/train_log.jsonl"
EVAL_SCORES = "{ckpt}/eval/scores.json"
EVAL_RECORDS = "{ckpt}/eval/records.jsonl"
COMPARE_FILE = "{comparison}.json"  # a comparison's id is a KD_COMPARE or SFT_COMPARE
SFT_COMPARE = "{sft_dir}/compare/{teacher}/{teacher_kind}-teacher"  # + ".json"
KD_COMPARE = "{kd_dir}/compare"  # + ".json"
TABLE_CSV = "tables/results.csv"
TABLE_PARQUET = "tables/results.parquet"
COST_CSV = "tables/cost.csv"  # the cost ledger, one row per checkpoint (kdgrid.analysis.cost)
COST_JOBS_CSV = "tables/cost_jobs.csv"  # and one row per job
STATS_CSV = "stats/hypotheses.csv"
STATS_MD = "stats/summary.md"
PLOTS_DIR = "plots"
PLOT_FILE = PLOTS_DIR + "/{name}.{ext}"  # ext: png | pdf
PLOT_CAPTION = PLOTS_DIR + "/captions/{name}.rst"
# Each job's log and Snakemake benchmark (<job>: the job's path pattern, e.g. KD_DIR; kdgrid.analysis.cost reads
# the benchmarks).
LOG_FILE = "logs/{rule}/{job}.log"
BENCHMARK_FILE = "benchmarks/{rule}/{job}.tsv"
# Stamps standing in for folder inputs, with their folder's content hash (kdgrid.fingerprint).
FOLDER_STAMP = "fingerprints/{kind}/{name}.json"
MODEL_STAMP = FOLDER_STAMP.format(kind="models", name="{model}")
TEST_SETS_KIND = "test-sets"  # the stamps rule fingerprint_folder writes (a model's is written at parse time)
TEST_SET_STAMP = FOLDER_STAMP.format(kind=TEST_SETS_KIND, name="{family}")
FINGERPRINT_CACHE = "fingerprints/cache.json"
# The inputs a grid builds itself, under its results folder too (docs/architecture.md).
DATA_DIR = "resources/data/{family}"
TRAIN_FILE = "train.json"  # a family's training set, in its DATA_DIR (beside test/<task>.json)
TEST_DIR = DATA_DIR + "/test"  # test/<task>.json
TINY_MODEL_DIR = "resources/models/{model}"

MODEL_NAME_REGEX = r"[A-Za-z0-9.\-]+(?:_[A-Za-z0-9.\-]+)*"  # no "__": it separates teacher and student
DEFAULT_MODELS_DIR = "resources/hub"  # hub models, fetched once (kdgrid.hub); put it on a shared file system


def fmt_number(x: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": how temperatures and noise levels appear in paths and flags."""
    return format(float(x), "g")


def ablation_name(teacher_kind: str, noise_sigma: float) -> str:
    if teacher_kind == "base":
        return "base-teacher"
    return f"noise{fmt_number(noise_sigma)}" if noise_sigma > 0 else "sft-teacher"

