"""The bad-input matrix: for each case the input, the exit code, the phrase the error must contain (the
key, file or record at fault) and the result that must not have been published. docs/bad_inputs.md lists
the same table (`python tests/test_bad_inputs.py` rewrites it; a test checks it is current).

Most cases run the `kdgrid` command in this process (no start-up cost) on tiny models and data built
once; config cases expand the grid as the Snakefile does; two go through `snakemake -n`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DOC = ROOT / "docs" / "bad_inputs.md"
CI_CONFIG = ROOT / "config" / "tiny-ci.yaml"
TRAIN = ["--finetune", "full", "--lr", "3e-3", "--micro-batch-size", "8", "--grad-accum", "1", "--warmup-steps", "0",
         "--cutoff", "64", "--epochs", "1", "--max-steps", "1", "--precision", "fp32", "--save-steps", "50"]


@dataclass(frozen=True)
class Case:
    name: str  # what is wrong
    make: Callable  # (World) -> argv of `kdgrid` (or ("snakemake", argv...))
    phrase: str  # the error must contain it
    unpublished: str  # the output that must not exist afterwards (relative to the case's folder)
    code: int = 2  # kdgrid's exit code for a KdgridError; Snakemake exits 1
    needs: str = ""  # "mount": a tmpfs mount (root)


class World:
    """Tiny models, data, a teacher-output cache and evaluation folders, built once; `tmp` is the case's
    own folder."""

    def __init__(self, root: Path):
        from kdgrid.cli import main

        self.root = root
        for model in ("tiny-xs", "tiny-m"):
            assert main(["models", "materialise", model, "--out", str(root / model)]) == 0
        assert main(["data", "prepare", "--family", "math", "--source", "synthetic", "--n-train", "8",
                     "--n-test", "4", "--tasks", "syn_arith", "--out", str(root / "data")]) == 0
        assert main(["data", "prepare", "--family", "math", "--source", "synthetic", "--n-train", "8",
                     "--n-test", "4", "--seed", "5", "--tasks", "syn_arith", "--out", str(root / "other-data")]) == 0
        assert main(["teacher-outputs", "--teacher", str(root / "tiny-m"), "--data", str(self.train), "--top-k", "8",
                     "--cutoff", "64", "--precision", "fp32", "--out", str(root / "cache.pt")]) == 0
        self._nan_teacher()
        self._eval_folder()
        self.tmp = root

    @property
    def train(self) -> Path:
        return self.root / "data" / "train.json"

    def _nan_teacher(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.root / "tiny-m")
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        shutil.copytree(self.root / "tiny-m", self.root / "nan-teacher")
        model.save_pretrained(self.root / "nan-teacher")

    def _eval_folder(self) -> None:
        folder = self.root / "eval"
        folder.mkdir()
        rows = [{"task": "syn_arith", "doc_id": i, "prompt": "p", "generation": "g", "extracted": "1", "gold": "1",
                 "correct": True} for i in range(3)]
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "scores.json").write_text(json.dumps({"meta": {"cell": "math/base/tiny-xs", "role": "base",
                                                                 "model": "tiny-xs", "family": "math"},
                                                        "family": "math", "accuracy": {"syn_arith": 100.0},
                                                        "n": {"syn_arith": 3}}))

    # --- building blocks of the cases --------------------------------------------------------------
    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def records(self, name: str, records) -> str:
        return self.file(name, json.dumps(records))

    def config(self, change: Callable[[dict], None]) -> list[str]:
        config = copy.deepcopy(yaml.safe_load(CI_CONFIG.read_text()))
        change(config)
        config["outdir"] = str(self.tmp / "results")
        return ["grid", "summary", "--config", self.file("config.yaml", yaml.safe_dump(config, sort_keys=False))]

    def sft(self, data: str | None = None, model: str | None = None, *extra: str) -> list[str]:
        return ["train", "--mode", "sft", "--model", model or str(self.root / "tiny-xs"), "--data",
                data or str(self.train), "--out", str(self.tmp / "cell"), *TRAIN, *extra]

    def fkl(self, *extra: str, data: str | None = None) -> list[str]:
        return ["train", "--mode", "distill", "--method", "fkl", "--model", str(self.root / "tiny-xs"), "--data",
                data or str(self.train), "--out", str(self.tmp / "cell"), *TRAIN, *extra]

    def cache_variant(self, change: Callable[[dict], None]) -> str:
        import torch

        blob = torch.load(self.root / "cache.pt", weights_only=True)
        change(blob)
        path = self.tmp / "cache.pt"
        torch.save(blob, path)
        return str(path)

    def model_variant(self, change: Callable[[Path], None]) -> str:
        folder = self.tmp / "model-copy"
        shutil.copytree(self.root / "tiny-xs", folder)
        change(folder)
        return str(folder)

    def test_dir(self, records) -> str:
        self.records("testdata/test/syn_arith.json", records)
        return str(self.tmp / "testdata")

    def evaluate(self, data_dir: str, model: str | None = None) -> list[str]:
        return ["evaluate", "--model", model or str(self.root / "tiny-xs"), "--data-dir", data_dir, "--family",
                "math", "--tasks", "syn_arith", "--out", str(self.tmp / "out")]

    def mount(self, options: str) -> Path:
        folder = self.tmp / "mnt"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=False,
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        self.mounts.append(folder)
        return folder


def _block(**change):
    return lambda c: c["blocks"][0].update(**change)


def _training(**change):
    return lambda c: c["families"]["math"].update(training={**c["families"]["math"]["training"], **change})


def _yaml_error(w: World) -> list[str]:
    return ["grid", "summary", "--config", w.file("config.yaml", "models:\n  tiny-xs: {tiny: true\n  size_b: 1\n")]


def _records_without_output(w: World) -> str:
    records = json.loads(w.train.read_text())
    del records[1]["output"]
    return w.records("train.json", records)


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def _truncated_scores(w: World) -> list[str]:
    return ["aggregate", "--scores", w.file("scores.json", (w.root / "eval" / "scores.json").read_text()[:40]),
            "--out-csv", str(w.tmp / "t.csv"), "--out-parquet", str(w.tmp / "t.parquet")]


def _compare_truncated(w: World) -> list[str]:
    student = w.tmp / "student"
    shutil.copytree(w.root / "eval", student)
    lines = (student / "records.jsonl").read_text().splitlines()
    (student / "records.jsonl").write_text("\n".join(lines[:2] + [lines[2][:20]]) + "\n")
    return ["compare", "--student", str(student), "--teacher", str(w.root / "eval"), "--out", str(w.tmp / "c.json")]


def _full_disk_teacher_outputs(w: World) -> list[str]:
    out = w.mount("size=12k") / "topk8.pt"
    return ["teacher-outputs", "--teacher", str(w.root / "tiny-m"), "--data", str(w.train), "--top-k", "8",
            "--cutoff", "64", "--precision", "fp32", "--out", str(out)]


def _full_disk_data(w: World) -> list[str]:
    return ["data", "prepare", "--family", "math", "--source", "synthetic", "--n-train", "600",
            "--out", str(w.mount("size=12k") / "data")]


def _read_only_data(w: World) -> list[str]:
    return ["data", "prepare", "--family", "math", "--source", "synthetic", "--n-train", "8",
            "--out", str(w.mount("size=1m,ro") / "data")]


def _snakemake_config(w: World, text: str, config_yaml: bool = False) -> tuple:
    from workflow_support import copy_workflow

    workdir = copy_workflow(w.tmp / "wf")
    if config_yaml:
        (workdir / "config.yaml").write_text(text)
        return ("snakemake", workdir, "-n")
    (workdir / "bad.yaml").write_text(text)
    return ("snakemake", workdir, "-n", "--configfile", "bad.yaml")


def _ci_text(change) -> str:
    config = yaml.safe_load(CI_CONFIG.read_text())
    change(config)
    return yaml.safe_dump(config, sort_keys=False)


NAN, INF = float("nan"), float("inf")
CASES = [
    # --- the config (what the Snakefile expands at parse time) ----------------------------------------
    Case("config: lr is .nan", lambda w: w.config(_training(lr=NAN)),
         "config key families.math.training.lr: nan is not a finite number", "results"),
    Case("config: a temperature is .inf", lambda w: w.config(_block(temperatures=[1, INF])),
         "config key blocks[0].temperatures[1]: inf", "results"),
    Case("config: a noise sigma is .nan", lambda w: w.config(_block(noise_sigmas=[NAN])),
         "config key blocks[0].noise_sigmas[0]: nan", "results"),
    Case("config: a model size is .inf", lambda w: w.config(lambda c: c["models"]["tiny-m"].update(size_b=INF)),
         "config key models.tiny-m.size_b: inf", "results"),
    Case("config: teachers: [] (not 'all')", lambda w: w.config(_block(teachers=[])),
         "config key blocks[0] (main).teachers is empty", "results"),
    Case("config: students: []", lambda w: w.config(_block(students=[])),
         "config key blocks[0] (main).students is empty", "results"),
    Case("config: families: []", lambda w: w.config(_block(families=[])),
         "config key blocks[0] (main).families is empty", "results"),
    Case("config: YAML syntax error", _yaml_error, "config.yaml, line 3, column 9: not valid YAML", "results"),
    Case("config: file not found", lambda w: ["grid", "summary", "--config", str(w.tmp / "nope.yaml")],
         "nope.yaml: config file not found", "results"),
    Case("config: top_k beyond the tiny vocabulary",
         lambda w: w.config(lambda c: c["teacher_cache"].update(top_k=5000)),
         "config key teacher_cache.top_k: 5000 is more than the 768 logits of tiny-xs", "results"),
    Case("config: unknown method", lambda w: w.config(_block(methods=["fkl", "kl"])),
         "config key blocks[0] (main).methods: unknown method 'kl'", "results"),
    Case("config: unknown teacher in a block", lambda w: w.config(_block(teachers=["tiny-l"])),
         "config key blocks[0] (main).teachers: unknown teacher 'tiny-l'", "results"),
    Case("config: a pair names an unknown model", lambda w: w.config(lambda c: c.update(pairs={"tiny-m": ["x"]})),
         "config key pairs.tiny-m: unknown model 'x'", "results"),
    Case("config: a model is its own student", lambda w: w.config(lambda c: c.update(pairs={"tiny-m": ["tiny-m"]})),
         "config key pairs.tiny-m: a model cannot be its own student", "results"),
    Case("config: a seed repeated", lambda w: w.config(lambda c: c.update(seeds=[1, 1])),
         "config key seeds: [1, 1] repeats a seed", "results"),
    Case("config: unknown training setting", lambda w: w.config(_training(learning_rate=1)),
         "config key families.math.training: unknown setting 'learning_rate'", "results"),
    Case("config: a model without size_b", lambda w: w.config(lambda c: c["models"]["tiny-m"].pop("size_b")),
         "config key models.tiny-m.size_b is missing", "results"),
    Case("config: no blocks", lambda w: w.config(lambda c: c.update(blocks=[])),
         "config key 'blocks' is empty", "results"),
    Case("config: temperature 0", lambda w: w.config(_block(temperatures=[0])),
         "config key blocks[0] (main).temperatures: 0.0 must be > 0", "results"),
    Case("config: unknown kd setting", lambda w: w.config(lambda c: c["kd"].update(alpha=1)),
         "config key kd: unknown setting 'alpha'", "results"),
    Case("config: an unknown task", lambda w: w.config(lambda c: c["families"]["math"].update(tasks=["gsm9k"])),
         "config key families.math.tasks: unknown task 'gsm9k'", "results"),
    # --- the same through Snakemake -------------------------------------------------------------------
    Case("snakemake -n: lr .nan in --configfile", lambda w: _snakemake_config(w, _ci_text(_training(lr=NAN))),
         "config key families.math.training.lr: nan is not a finite number", "wf/results", code=1),
    Case("snakemake -n: YAML syntax error in config.yaml",
         lambda w: _snakemake_config(w, "models:\n  a: [1\n  b: 2\n", config_yaml=True),
         "config.yaml, line 3, column 4: not valid YAML", "wf/results", code=1),
    # --- training data and models (kdgrid train) ------------------------------------------------------
    Case("train: data file not found", lambda w: w.sft(data=str(w.tmp / "nope.json")),
         "--data", "cell/model"),
    Case("train: non-UTF-8 training file", lambda w: w.sft(data=w.file("train.json", b'[{"instruction": "\xff"}]')),
         "train.json: not UTF-8 text (byte 18", "cell/model"),
    Case("train: truncated training JSON", lambda w: w.sft(data=w.file("train.json", w.train.read_text()[:50])),
         "train.json: not valid JSON", "cell/model"),
    Case("train: empty training file", lambda w: w.sft(data=w.file("train.json", "")),
         "train.json: not valid JSON", "cell/model"),
    Case("train: a record without 'output'", lambda w: w.sft(data=_records_without_output(w)),
         "train.json, record 1 (counting from 0): missing field 'output'", "cell/model"),
    Case("train: an empty training set", lambda w: w.sft(data=w.records("train.json", [])),
         "train.json: no records", "cell/model"),
    Case("train: lr nan on the command line", lambda w: w.sft(None, None, "--lr", "nan"),
         "--lr nan: must be > 0", "cell/model"),
    Case("train: a model folder without config.json (empty checkpoint)",
         lambda w: w.sft(model=str(Path(w.file("empty/.keep", "")).parent)), "without config.json", "cell/model"),
    Case("train: a model folder that does not exist", lambda w: w.sft(model=str(w.tmp / "no-such-model")),
         "no-such-model", "cell/model"),
    Case("train: truncated model.safetensors",
         lambda w: w.sft(model=w.model_variant(lambda f: _truncate(f / "model.safetensors", 100))),
         "model.safetensors is damaged", "cell/model"),
    Case("train: an SFT that diverges (lr 1e6) fails its own cell",
         lambda w: w.sft(None, None, "--lr", "1e6", "--max-steps", "2", "--cell", "math/sft/tiny-m/seed1"),
         "cell math/sft/tiny-m/seed1: the trained model has NaN or infinite weights", "cell/model"),
    Case("train: a teacher with NaN weights (its SFT diverged) is named",
         lambda w: w.fkl("--teacher", str(w.root / "nan-teacher")),
         "nan-teacher has NaN or infinite weights", "cell/model"),
    # --- teacher-output caches ------------------------------------------------------------------------
    Case("train: truncated teacher-output cache",
         lambda w: w.fkl("--teacher-cache", w.file("cache.pt", (w.root / "cache.pt").read_bytes()[:300])),
         "cache.pt: not a readable teacher-output cache", "cell/model"),
    Case("train: a cache of another temperature", lambda w: w.fkl("--teacher-cache", str(w.root / "cache.pt"),
                                                                  "--temperature", "2"),
         "no teacher outputs at --temperature 2.0", "cell/model"),
    Case("train: a cache of other data", lambda w: w.fkl("--teacher-cache", str(w.root / "cache.pt"),
                                                         data=str(w.root / "other-data" / "train.json")),
         "differs from the cached one", "cell/model"),
    Case("train: a cache of another tokenizer",
         lambda w: w.fkl("--teacher-cache", w.cache_variant(lambda b: b["meta"].update(tokenizer_fingerprint="x"))),
         "made with a tokenizer other than the student's", "cell/model"),
    Case("teacher-outputs: top_k beyond the vocabulary",
         lambda w: ["teacher-outputs", "--teacher", str(w.root / "tiny-m"), "--data", str(w.train), "--top-k",
                    "5000", "--out", str(w.tmp / "c.pt")], "--top-k 5000: more than the 896 logits", "c.pt"),
    Case("teacher-outputs: a teacher with NaN weights",
         lambda w: ["teacher-outputs", "--teacher", str(w.root / "nan-teacher"), "--data", str(w.train), "--top-k",
                    "8", "--out", str(w.tmp / "c.pt")], "nan-teacher has NaN or infinite weights", "c.pt"),
    Case("teacher-outputs: the disk fills up", _full_disk_teacher_outputs, "topk8.pt: no space left on the device",
         "mnt/topk8.pt", needs="mount"),
    # --- data -----------------------------------------------------------------------------------------
    Case("data prepare: the disk fills up", _full_disk_data, "data: no space left on the device", "mnt/data",
         needs="mount"),
    Case("data prepare: a read-only output folder", _read_only_data, "data: cannot write here (Read-only file system)",
         "mnt/data", needs="mount"),
    Case("data prepare: unknown family", lambda w: ["data", "prepare", "--family", "physics", "--source",
                                                    "synthetic", "--out", str(w.tmp / "d")],
         "unknown family 'physics'", "d"),
    # --- evaluation -----------------------------------------------------------------------------------
    Case("evaluate: checkpoint folder not found", lambda w: w.evaluate(str(w.root / "data"), str(w.tmp / "gone")),
         "gone: checkpoint folder not found", "out"),
    Case("evaluate: an empty checkpoint folder",
         lambda w: w.evaluate(str(w.root / "data"), str(Path(w.file("empty/.keep", "")).parent)),
         "empty: not a Hugging Face model folder (no config.json)", "out"),
    Case("evaluate: an empty test set", lambda w: w.evaluate(w.test_dir([])), "syn_arith.json: empty test set", "out"),
    Case("evaluate: a truncated test set", lambda w: w.evaluate(str(Path(w.file("testdata/test/syn_arith.json",
                                                                                 '[{"instr')).parents[1])),
         "syn_arith.json: not valid JSON", "out"),
    Case("evaluate: a test record without its answer", lambda w: w.evaluate(w.test_dir([{"instruction": "1+1"}])),
         "syn_arith.json, record 0 (counting from 0): missing key 'answer'", "out"),
    Case("evaluate: a non-UTF-8 test set", lambda w: w.evaluate(str(Path(w.file("testdata/test/syn_arith.json",
                                                                                 b"[\xfe]")).parents[1])),
         "syn_arith.json: not UTF-8 text", "out"),
    Case("evaluate: a task's test set missing", lambda w: w.evaluate(str(Path(w.file("testdata/test/x", "")).parents[1])),
         "syn_arith.json: file not found", "out"),
    # --- comparisons, table, statistics ---------------------------------------------------------------
    Case("compare: truncated records.jsonl", _compare_truncated, "records.jsonl, line 3: not valid JSON", "c.json"),
    Case("compare: records.jsonl missing", lambda w: ["compare", "--student", str(w.tmp), "--teacher",
                                                      str(w.root / "eval"), "--out", str(w.tmp / "c.json")],
         "records.jsonl: file not found", "c.json"),
    Case("aggregate: truncated scores.json", _truncated_scores, "scores.json: not valid JSON", "t.csv"),
    Case("aggregate: scores.json without meta",
         lambda w: ["aggregate", "--scores", w.file("scores.json", '{"accuracy": {}}'), "--out-csv",
                    str(w.tmp / "t.csv"), "--out-parquet", str(w.tmp / "t.parquet")],
         "scores.json: missing key 'meta'", "t.csv"),
    Case("aggregate: an empty scores.json",
         lambda w: ["aggregate", "--scores", w.file("scores.json", ""), "--out-csv", str(w.tmp / "t.csv"),
                    "--out-parquet", str(w.tmp / "t.parquet")], "scores.json: not valid JSON", "t.csv"),
    Case("stats: results table not found",
         lambda w: ["stats", "--table", str(w.tmp / "results.csv"), "--out-csv", str(w.tmp / "h.csv"),
                    "--out-md", str(w.tmp / "s.md")], "results.csv: file not found", "h.csv"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return World(tmp_path_factory.mktemp("bad-inputs-world"))


def test_the_matrix_counts_at_least_40_distinct_cases():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_fails_with_a_clear_error_and_publishes_nothing(case, world, tmp_path, capsys, monkeypatch):
    from kdgrid.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    world.tmp, world.mounts = tmp_path, []
    try:
        argv = case.make(world)
        if argv[0] == "snakemake":
            from workflow_support import snakemake

            run = snakemake(argv[1], *argv[2:])
            code, err = run.returncode, run.stdout + run.stderr
        else:
            code = main(argv)
            err = capsys.readouterr().err
        assert code == case.code, err[-3000:]
        assert case.phrase in err, err[-3000:]
        assert "Traceback" not in err or argv[0] == "snakemake"
        assert not (tmp_path / case.unpublished).exists(), f"{case.unpublished} was published"
        if case.needs == "mount":  # nothing half-written left in the full or read-only folder
            assert [p.name for p in (tmp_path / "mnt").iterdir()] == []
    finally:
        for folder in world.mounts:
            subprocess.run(["umount", "--lazy", str(folder)], check=False)  # torch may still hold a handle


def test_a_student_larger_than_its_teacher_is_allowed_and_said(capsys):
    from kdgrid.cli import main

    config = yaml.safe_load(CI_CONFIG.read_text())
    config["pairs"] = {"tiny-xs": ["tiny-m"]}
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"reverse-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        assert main(["grid", "summary", "--config", str(path)]) == 0
    finally:
        path.unlink()
    assert "pairs.tiny-xs: student tiny-m (0.000820864B) is larger than its teacher tiny-xs" in capsys.readouterr().out


def test_grids_with_other_outdirs_never_share_data_or_models():
    from kdgrid.grid import expand_grid

    config = yaml.safe_load(CI_CONFIG.read_text())
    ci = expand_grid(config)
    demo = expand_grid({**config, "outdir": "results-tiny"})
    assert ci.data_dir("math") == "results/resources/data/math"
    assert demo.data_dir("math") == "results-tiny/resources/data/math"
    assert ci.tiny_model_dir("tiny-m") != demo.tiny_model_dir("tiny-m")
    assert ci.distill_data(ci.cells[0]).startswith("results/resources/data/")


def render_doc() -> str:
    lines = ["# Bad inputs and what they get", "",
             "Generated from the table of tests/test_bad_inputs.py (`python tests/test_bad_inputs.py` rewrites it;",
             "the tests check it is current). Each case fails with the exit code shown (2: a kdgrid error; 1:",
             "Snakemake stopped at parse time), an error containing the phrase, and no output published.",
             f"{len(CASES)} cases.", "", "| case | exit | the error says |", "| --- | --- | --- |"]
    lines += [f"| {c.name} | {c.code} | `{c.phrase.replace('|', '/')}` |" for c in CASES]
    return "\n".join(lines) + "\n"


def test_docs_list_the_matrix():
    assert DOC.read_text() == render_doc(), "run: python tests/test_bad_inputs.py"


if __name__ == "__main__":
    DOC.write_text(render_doc())
    print(f"wrote {DOC}")
