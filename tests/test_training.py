"""The training engine (`kdgrid train`, `kdgrid teacher-responses`) on the tiny models, on CPU.

One module-scoped world: tiny-xs/tiny-s/tiny-m materialised, 64 synthetic math records, and a tiny-m
teacher fine-tuned (SFT, full) on them, which the distillation tests reuse. Runs happen in-process
through `kdgrid.cli.main`, except where a separate process is the point (two-process ZeRO runs, a
SIGKILLed run).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdgrid.cli import main as kdgrid
from kdgrid.errors import KdgridError

pytestmark = pytest.mark.slow

QUICK = ["--warmup-steps", "0", "--micro-batch-size", "4", "--grad-accum", "2", "--save-steps", "1000"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from kdgrid.synthetic import generate_family
    from kdgrid.tiny_models import materialise

    root = tmp_path_factory.mktemp("training")
    for name in ("tiny-xs", "tiny-s", "tiny-m"):
        materialise(name, root / name)
    train, _ = generate_family("math", seed=0, n_train=64, n_test=0)
    (root / "train.json").write_text(json.dumps(train))
    return root


def log_rows(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "train_log.jsonl").read_text().splitlines()]


def step_losses(cell: Path) -> list[float]:
    return [r["loss"] for r in log_rows(cell) if "step" in r]


def train(world: Path, out: str, *flags: str) -> Path:
    cell = world / out
    assert kdgrid(["train", "--data", str(world / "train.json"), "--out", str(cell), *flags]) == 0
    return cell


def answers_right(model_dir: Path, records: list[dict]) -> int:
    """Greedy generations whose 'The answer is X' matches the record's answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdgrid.prompt import build_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    batch = tokenizer([build_prompt(r["instruction"], r["input"]) for r in records], return_tensors="pt",
                      padding=True)
    out = model.generate(**batch, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    found = [(re.findall(r"answer is \(?(\w+)", t) or [None])[-1] for t in texts]
    return sum(f == r["answer"] for f, r in zip(found, records))


@pytest.fixture(scope="module")
def teacher(world):
    """tiny-m fine-tuned on the synthetic math set: full fine-tuning, 20 epochs of 8 batches."""
    cell = train(world, "sft-teacher", "--mode", "sft", "--model", str(world / "tiny-m"), "--finetune", "full",
                 "--lr", "3e-3", "--max-steps", "160", "--warmup-steps", "5", "--micro-batch-size", "8",
                 "--grad-accum", "1", "--save-steps", "1000", "--cell", "math/sft/tiny-m/seed42")
    return cell


# --- data -----------------------------------------------------------------------------------------

def test_tokenize_records_masks_order_and_cache(world, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from kdgrid.prompt import build_prompt
    from kdgrid.training.batches import Collator, ExampleDataset, load_tokenized, tokenize_records

    tokenizer = AutoTokenizer.from_pretrained(world / "tiny-xs")
    records = json.loads((world / "train.json").read_text())[:5]
    full = tokenize_records(records, tokenizer, 256, "all")
    response = tokenize_records(records, tokenizer, 256, "response")
    for record, a, r in zip(records, full, response):
        prompt_ids = tokenizer(build_prompt(record["instruction"], record["input"]))["input_ids"]
        assert a["input_ids"] == r["input_ids"]
        assert a["input_ids"][:len(prompt_ids)] == prompt_ids and a["prompt_len"] == len(prompt_ids)
        assert a["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(a["input_ids"][len(prompt_ids):-1]) == record["output"]
        assert a["loss_mask"] == [0] + [1] * (len(a["input_ids"]) - 1)
        assert r["loss_mask"] == [0] * len(prompt_ids) + [1] * (len(a["input_ids"]) - len(prompt_ids))
    cut = tokenize_records(records, tokenizer, 20, "response")
    assert all(len(e["input_ids"]) == 20 and sum(e["loss_mask"]) == 0 for e in cut)  # prompt fills the cutoff
    assert not any(e["truncated"] for e in full) and all(e["truncated"] for e in cut)
    lengths = sorted(len(e["input_ids"]) for e in full)
    middle = tokenize_records(records, tokenizer, lengths[2], "all")
    assert [e["truncated"] for e in middle] == [len(e["input_ids"]) > lengths[2] for e in full]

    batch = Collator(tokenizer.pad_token_id)([ExampleDataset(full)[i] for i in (3, 1)])
    assert batch["example_index"].tolist() == [3, 1]
    n3 = len(full[3]["input_ids"])
    assert batch["attention_mask"][0].sum() == n3
    assert batch["labels"][0, :n3].tolist() == [-100] + full[3]["input_ids"][1:]
    assert batch["kd_mask"][0].tolist() == full[3]["loss_mask"][1:] + [0] * (batch["kd_mask"].shape[1] - n3 + 1)

    monkeypatch.setenv("KDGRID_CACHE_DIR", str(tmp_path))
    first, hit1 = load_tokenized(world / "train.json", tokenizer, 256, "all")
    second, hit2 = load_tokenized(world / "train.json", tokenizer, 256, "all")
    _, hit3 = load_tokenized(world / "train.json", tokenizer, 128, "all")
    assert (hit1, hit2, hit3) == (False, True, False)
    assert first == second and first[:5] == full
    assert len(list((tmp_path / "tokenized").glob("*.pt"))) == 2


def test_config_refuses_a_loss_version_this_kdgrid_does_not_compute():
    from kdgrid.training.config import TrainConfig

    base = {"model": "m", "data": "d", "out": "o", "teacher": "t"}
    assert TrainConfig(mode="distill", method="gkd", beta=0.1, loss_version=2, **base).validate()
    assert TrainConfig(mode="distill", method="fkl", loss_version=1, **base).validate()
    with pytest.raises(KdgridError, match="--loss-version 1: this kdgrid computes version 2 of the gkd loss"):
        TrainConfig(mode="distill", method="gkd", beta=0.1, loss_version=1, **base).validate()
    with pytest.raises(KdgridError, match="--loss-version 2: this kdgrid computes version 1 of the fkl loss"):
        TrainConfig(mode="distill", method="fkl", loss_version=2, **base).validate()


def test_config_refuses_bad_combinations(world):
    from kdgrid.training.config import TrainConfig

    base = {"model": "m", "data": "d", "out": "o"}
    with pytest.raises(KdgridError, match="--method"):
        TrainConfig(mode="distill", teacher="t", **base).validate()
    with pytest.raises(KdgridError, match="only applies to --mode distill"):
        TrainConfig(mode="sft", teacher="t", **base).validate()
    with pytest.raises(KdgridError, match="on-policy GKD"):
        TrainConfig(mode="distill", method="gkd", teacher_cache="c.pt", **base).validate()
    with pytest.raises(KdgridError, match="--beta"):
        TrainConfig(mode="distill", method="gkd", teacher="t", beta=1.5, **base).validate()
    with pytest.raises(KdgridError, match="--temperature"):
        TrainConfig(mode="distill", method="fkl", teacher="t", temperature=0, **base).validate()
    cfg = TrainConfig(mode="distill", method="fkl", teacher="t", teacher_cache="c.pt", **base).validate()
    assert cfg.teacher_source == "cache"
    assert TrainConfig(mode="distill", method="fkl", teacher="t", teacher_cache="c.pt", noise_sigma=1,
                       **base).validate().teacher_source == "model"
    assert TrainConfig(mode="distill", method="gkd", lmbda=0, teacher_cache="c.pt", **base).validate() \
        .teacher_source == "cache"
    assert TrainConfig(mode="distill", method="seqkd", **base).validate().teacher_source == "none"


def test_causal_lm_loss_counts_only_targets():
    import torch.nn.functional as F

    from kdgrid.training.trainer import causal_lm_loss

    logits, labels = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    labels[0, :4] = -100
    expected = torch.stack([F.cross_entropy(logits[b, t - 1], labels[b, t]) for b in range(2) for t in range(1, 6)
                            if labels[b, t] != -100]).mean()
    torch.testing.assert_close(causal_lm_loss(logits, labels), expected)
    assert causal_lm_loss(logits, torch.full_like(labels, -100)).item() == 0.0  # no targets: 0, not NaN


# --- SFT ------------------------------------------------------------------------------------------

def test_sft_teacher_learns_the_math_task(world, teacher):
    losses = step_losses(teacher)
    assert len(losses) == 160
    assert sum(losses[-8:]) / 8 < 0.15 * sum(losses[:8]) / 8
    records = json.loads((world / "train.json").read_text())[:32]
    before, after = answers_right(world / "tiny-m", records), answers_right(teacher / "model", records)
    assert after >= before + 8, (before, after)


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_student_sft_loss_falls_and_model_loads(world, finetune):
    from transformers import AutoModelForCausalLM

    cell = train(world, f"sft-{finetune}", "--mode", "sft", "--model", str(world / "tiny-xs"), "--finetune", finetune,
                 "--lr", "3e-2" if finetune == "lora" else "1e-2", "--max-steps", "12", *QUICK)
    rows = log_rows(cell)
    assert rows[0]["event"] == "config" and rows[0]["teacher_source"] == "none"
    assert rows[-1]["event"] == "done" and rows[-1]["steps"] == 12
    assert {"step", "epoch", "loss", "lr", "tokens_per_s", "memory_mb"} <= set(rows[1])
    losses = step_losses(cell)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses  # nats, over 12 steps from a random model
    assert not (cell / "checkpoints").exists()

    model = AutoModelForCausalLM.from_pretrained(cell / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(world / "tiny-xs")
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert any("q_proj" in n for n in changed)
    if finetune == "lora":  # merged adapters touch only the targeted projections
        assert not any("o_proj" in n or "embed" in n or "gate_proj" in n for n in changed)
    out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_examples_truncated_at_the_cutoff_are_counted_in_the_log(world, capsys):
    from transformers import AutoTokenizer

    from kdgrid.training.batches import tokenize_records

    tokenizer = AutoTokenizer.from_pretrained(world / "tiny-xs")
    lengths = sorted(len(e["input_ids"]) for e in tokenize_records(
        json.loads((world / "train.json").read_text()), tokenizer, 10_000, "all"))
    cutoff = lengths[len(lengths) // 2]
    expected = sum(n > cutoff for n in lengths)
    assert 0 < expected < len(lengths)
    cell = train(world, "sft-truncated", "--mode", "sft", "--model", str(world / "tiny-xs"), "--finetune", "full",
                 "--max-steps", "1", *QUICK, "--cutoff", str(cutoff))
    header = log_rows(cell)[0]
    assert header["truncated_examples"] == expected and header["examples"] == len(lengths)
    assert f"{expected} truncated at the cutoff of {cutoff} tokens" in capsys.readouterr().out


# --- distillation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fkl", "rkl", "gkd", "skew_kl", "tvd"])
def test_distill_each_method_loss_falls(world, teacher, method):
    # tiny-xs (768 logits) from tiny-m (896): the shared-width slicing runs on every step.
    cell = train(world, f"kd-{method}", "--mode", "distill", "--method", method, "--model", str(world / "tiny-xs"),
                 "--teacher", str(teacher / "model"), "--finetune", "full", "--lr", "1e-2", "--max-steps", "20",
                 "--gkd-max-new-tokens", "16", *QUICK)
    rows = log_rows(cell)
    assert rows[0]["teacher_source"] == "model"
    losses = step_losses(cell)
    assert all(math.isfinite(loss) and loss >= 0 for loss in losses)
    # tvd (<= 1), the generalized JSD (<= ln 2) and skew_kl (<= ln 10) are bounded and start near their
    # bound against a random student, so they fall by a few percent in 20 steps (tvd by 1.2% in 10)
    assert sum(losses[-3:]) / 3 < 0.985 * sum(losses[:3]) / 3, losses
    assert min(losses[-3:]) < min(losses[:3]), losses


def test_gkd_on_policy_batches_are_student_samples(world, teacher):
    from transformers import AutoTokenizer

    from kdgrid.training.batches import Collator, ExampleDataset, tokenize_records
    from kdgrid.training.config import TrainConfig
    from kdgrid.training.trainer import KDTrainer

    tokenizer = AutoTokenizer.from_pretrained(world / "tiny-xs")
    records = json.loads((world / "train.json").read_text())[:3]
    examples = tokenize_records(records, tokenizer, 256, "response")
    batch = Collator(tokenizer.pad_token_id)([ExampleDataset(examples)[i] for i in range(3)])
    cfg = TrainConfig(mode="distill", method="gkd", model=str(world / "tiny-xs"), data="", out="", cutoff=256,
                      gkd_max_new_tokens=6, token_scope="response")
    trainer = KDTrainer.__new__(KDTrainer)  # only on_policy_batch's own state is needed here
    trainer.cfg, trainer.pad_token_id, trainer.eos_token_id = cfg, tokenizer.pad_token_id, tokenizer.eos_token_id
    trainer.is_deepspeed_enabled = False

    class Unwrap:
        @staticmethod
        def unwrap_model(m):
            return m

    trainer.accelerator = Unwrap()
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(teacher / "model")
    torch.manual_seed(0)
    ids, attention, labels, kd_mask = trainer.on_policy_batch(student, batch["input_ids"], batch["prompt_len"])
    for row, e in enumerate(examples):
        p = e["prompt_len"]
        assert ids[row, :p].tolist() == e["input_ids"][:p]
        n = int(attention[row].sum())
        assert 0 < n - p <= 6
        assert labels[row, :p].eq(-100).all() and labels[row, p:n].tolist() == ids[row, p:n].tolist()
        assert kd_mask[row, p - 1:n - 1].eq(1).all() and kd_mask[row].sum() == n - p


def test_noise_changes_the_teacher_signal_reproducibly(world, teacher):
    flags = ["--mode", "distill", "--method", "fkl", "--model", str(world / "tiny-xs"), "--teacher",
             str(teacher / "model"), "--lr", "1e-2", "--max-steps", "2", *QUICK]
    clean = step_losses(train(world, "noise0", *flags))
    noisy = step_losses(train(world, "noise2a", *flags, "--noise-sigma", "2"))
    again = step_losses(train(world, "noise2b", *flags, "--noise-sigma", "2"))
    assert noisy == again
    assert abs(noisy[0] - clean[0]) > 0.05


def test_seqkd_trains_on_teacher_responses(world, teacher):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdgrid.prompt import build_prompt

    responses = world / "teacher_responses.json"
    assert kdgrid(["teacher-responses", "--teacher", str(teacher / "model"), "--data", str(world / "train.json"),
                   "--out", str(responses), "--max-new-tokens", "40", "--batch-size", "16"]) == 0
    original, made = json.loads((world / "train.json").read_text()), json.loads(responses.read_text())
    assert [(r["instruction"], r["answer"]) for r in made] == [(r["instruction"], r["answer"]) for r in original]
    tokenizer = AutoTokenizer.from_pretrained(teacher / "model")
    model = AutoModelForCausalLM.from_pretrained(teacher / "model")
    ids = tokenizer(build_prompt(original[7]["instruction"]), return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert made[7]["output"] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    cell = world / "seqkd"
    assert kdgrid(["train", "--mode", "distill", "--method", "seqkd", "--model", str(world / "tiny-xs"),
                   "--data", str(responses), "--out", str(cell), "--finetune", "full", "--lr", "1e-2",
                   "--max-steps", "10", *QUICK]) == 0
    assert log_rows(cell)[0]["teacher_source"] == "none"
    losses = step_losses(cell)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3


def test_teacher_cache_replaces_the_teacher_when_it_can(world, teacher, capsys):
    cache = world / "topk16.pt"
    assert kdgrid(["teacher-outputs", "--teacher", str(teacher / "model"), "--data", str(world / "train.json"),
                   "--top-k", "16", "--temperatures", "1,2", "--out", str(cache)]) == 0
    flags = ["--mode", "distill", "--model", str(world / "tiny-xs"), "--lr", "1e-2", "--max-steps", "2",
             "--temperature", "1", *QUICK]
    online = step_losses(train(world, "online", *flags, "--method", "fkl", "--teacher", str(teacher / "model")))
    capsys.readouterr()
    cached_cell = train(world, "cached", *flags, "--method", "fkl", "--teacher-cache", str(cache))
    assert "teacher source: teacher-output cache" in capsys.readouterr().out
    assert log_rows(cached_cell)[0]["teacher_source"] == "cache"
    assert log_rows(cached_cell)[1]["reason"] == "unchecked: no --teacher to measure the cache against"
    cached = step_losses(cached_cell)
    # top-16 + 64 tail samples: an unbiased estimate, close for this peaked teacher at tau 1
    assert abs(cached[0] - online[0]) <= 0.02 * online[0]
    # on-policy GKD cannot use the cache: it loads the teacher, and says so
    gkd = train(world, "gkd-with-cache", *flags, "--method", "gkd", "--teacher-cache", str(cache),
                "--teacher", str(teacher / "model"), "--gkd-max-new-tokens", "8")
    assert log_rows(gkd)[0]["teacher_source"] == "model"
    capsys.readouterr()
    assert kdgrid(["train", "--data", str(world / "train.json"), "--out", str(world / "cache-t5"), *flags,
                   "--temperature", "5", "--method", "fkl", "--teacher-cache", str(cache)]) == 2
    assert "no teacher outputs at --temperature 5.0" in capsys.readouterr().err


def test_a_cell_reads_the_cache_only_if_its_first_step_check_passes(world, teacher, capsys):
    from kdgrid.analysis.table import build_table
    from kdgrid.io import write_json

    good, bad = world / "check-top16.pt", world / "check-top1.pt"
    for path, k, samples in ((good, "16", "64"), (bad, "1", "0")):
        assert kdgrid(["teacher-outputs", "--teacher", str(teacher / "model"), "--data", str(world / "train.json"),
                       "--top-k", k, "--tail-samples", samples, "--out", str(path)]) == 0
    flags = ["--mode", "distill", "--model", str(world / "tiny-xs"), "--lr", "1e-2", "--max-steps", "2",
             "--method", "fkl", "--teacher", str(teacher / "model"), *QUICK]
    online = step_losses(train(world, "check-online", *flags))
    capsys.readouterr()

    passed = train(world, "check-passed", *flags, "--teacher-cache", str(good))
    assert "teacher signal: cache" in capsys.readouterr().out
    signal = next(r for r in log_rows(passed) if r.get("event") == "teacher_signal")
    assert signal["teacher_signal"] == "cache" and abs(signal["loss_error"]) <= 0.005
    assert signal["check_micro_batches"] == 2  # the first optimizer step: --grad-accum 2
    assert signal["online_loss"] == pytest.approx(online[0], rel=1e-5)  # the check saw the online run's first step
    assert log_rows(passed)[-1]["teacher_signal"] == "cache"

    # a top-1 cache without tail samples, against a tolerance of 0.1%: the cell runs its teacher online
    failed = train(world, "check-failed", *flags, "--teacher-cache", str(bad), "--cache-max-loss-error", "0.001")
    out = capsys.readouterr().out
    assert "teacher signal: online" in out and "above the tolerance 0.100%" in out
    signal = next(r for r in log_rows(failed) if r.get("event") == "teacher_signal")
    assert signal["teacher_signal"] == "online" and abs(signal["loss_error"]) > 0.001
    assert step_losses(failed) == pytest.approx(online, rel=1e-5)  # every step on the online teacher

    # and the results table says which signal each cell trained on, and why
    scores = []
    for cell in (passed, failed):
        path = cell / "eval" / "scores.json"
        write_json(path, {"meta": {"cell": cell.name, "family": "math", "role": "kd", "model": "tiny-xs",
                                   "teacher": "tiny-m", "student": "tiny-xs", "method": "fkl", "temperature": "1",
                                   "noise_sigma": "0", "teacher_kind": "sft", "seed": 42},
                          "family": "math", "accuracy": {"syn_arith": 10.0, "Average": 10.0}, "n": {"syn_arith": 10}})
        scores.append(path)
    table = build_table(scores, [], {"tiny-xs": 0.0001, "tiny-m": 0.001}).set_index(["cell", "task"])
    assert table.loc[("check-passed", "Average"), "teacher_signal"] == "cache"
    assert table.loc[("check-failed", "Average"), "teacher_signal"] == "online"
    assert "above the tolerance" in table.loc[("check-failed", "syn_arith"), "cache_decision_reason"]
    assert table.loc[("check-failed", "Average"), "cache_loss_error"] == pytest.approx(signal["loss_error"])


# --- errors ---------------------------------------------------------------------------------------

def test_tokenizer_mismatch_is_refused(world):
    import shutil

    other = world / "tiny-m-other-tokenizer"
    shutil.copytree(world / "tiny-m", other)
    tokenizer_json = json.loads((other / "tokenizer.json").read_text())
    tokenizer_json["model"]["merges"] = tokenizer_json["model"]["merges"][:-5]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(KdgridError, match="different tokenizers"):
        from kdgrid.training.config import TrainConfig
        from kdgrid.training.engine import train as train_cell

        train_cell(TrainConfig(mode="distill", method="fkl", model=str(world / "tiny-xs"), teacher=str(other),
                               data=str(world / "train.json"), out=str(world / "mismatch"), max_steps=1))
    assert not (world / "mismatch").exists()  # refused before checkpoints/ was made


@pytest.mark.parametrize("bad,error", [
    ('[{"instruction": "2+2?", "input": "", "answer": "4"}]', "output"),
    ('[{"instruction": "2+2?", "input": "", "output": "4", "answer": "4"}', "not valid JSON"),
])
def test_bad_training_data_is_refused_before_anything_is_written(world, bad, error):
    from kdgrid.training.config import TrainConfig
    from kdgrid.training.engine import train as train_cell

    data = world / "bad_train.json"
    data.write_text(bad)
    with pytest.raises(KdgridError, match=error):
        train_cell(TrainConfig(mode="sft", model=str(world / "tiny-xs"), data=str(data), out=str(world / "bad_out"),
                               max_steps=1))
    assert not (world / "bad_out").exists()


def test_nan_loss_stops_with_the_cell_and_step(world, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = world / "nan-teacher"
    shutil.copytree(world / "tiny-m", broken)
    weights = load_file(broken / "model.safetensors")
    weights["lm_head.weight"][5] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    code = kdgrid(["train", "--mode", "distill", "--method", "fkl", "--model", str(world / "tiny-xs"),
                   "--teacher", str(broken), "--data", str(world / "train.json"), "--out", str(world / "nan"),
                   "--max-steps", "3", "--cell", "math/nan-cell", *QUICK])
    assert code == 2  # a teacher with a NaN weight is refused before training (its own SFT diverged)
    assert f"teacher {broken} has NaN or infinite weights" in capsys.readouterr().err
    assert not (world / "nan" / "model").exists()
    # a diverging run (the weights turn NaN after step 2 at this lr) stops at the first NaN loss
    code = kdgrid(["train", "--mode", "sft", "--model", str(world / "tiny-xs"), "--data", str(world / "train.json"),
                   "--out", str(world / "nan"), "--finetune", "full", "--lr", "1e6", "--precision", "fp32",
                   "--max-steps", "3", "--cell", "math/nan-cell", *QUICK])
    assert code == 2
    err = capsys.readouterr().err
    assert "cell math/nan-cell" in err and "step 3" in err and "nan" in err
    assert not (world / "nan" / "model").exists()


# --- separate processes: ZeRO with two CPU processes, resume after SIGKILL -------------------------

def run_kdgrid(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "kdgrid", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.e2e  # two DeepSpeed processes per stage, about a minute: make test-e2e
def test_zero2_and_zero3_match_stage0(world, teacher):
    """fkl averages per sequence, then over sequences, so 1 process accumulating 2 micro-batches of 2 and
    2 processes with one micro-batch of 2 each (--grad-accum counts the job's micro-batches: 2 / 2 per
    process) give the same loss and gradients: trajectories must agree to float32 round-off.
    Tolerance: 1e-5 relative on the loss, 1e-5 absolute on the exported weights."""
    from safetensors.torch import load_file

    flags = ["--mode", "distill", "--method", "fkl", "--model", str(world / "tiny-xs"), "--teacher",
             str(teacher / "model"), "--data", str(world / "train.json"), "--lr", "1e-2", "--max-steps", "3",
             "--warmup-steps", "0", "--grad-accum", "2", "--lora-dropout", "0", "--save-steps", "1000"]
    stage0 = world / "zero0"
    assert kdgrid(["train", *flags, "--micro-batch-size", "2", "--out", str(stage0)]) == 0
    reference = step_losses(stage0)
    weights0 = load_file(stage0 / "model" / "model.safetensors")
    for stage in (2, 3):
        cell = world / f"zero{stage}"
        done = run_kdgrid(["train", *flags, "--micro-batch-size", "2", "--nproc", "2", "--zero-stage", str(stage),
                           "--out", str(cell)])
        assert done.returncode == 0, done.stderr[-3000:]
        rows = log_rows(cell)
        assert rows[0]["world_size"] == 2 and rows[0]["deepspeed"]["zero_optimization"]["stage"] == stage
        assert step_losses(cell) == pytest.approx(reference, rel=1e-5)
        weights = load_file(cell / "model" / "model.safetensors")
        assert weights.keys() == weights0.keys()
        for name, tensor in weights0.items():
            torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-5)


def test_grad_accum_is_shared_by_the_processes_so_the_effective_batch_stays():
    from kdgrid.training.engine import accumulation_per_process

    assert accumulation_per_process(4, 1) == 4
    assert accumulation_per_process(4, 2) == 2  # 4 x 4 on one GPU = 4 x 2 x 2 on two
    with pytest.raises(KdgridError, match="--grad-accum 4 is not divisible by the 8 processes"):
        accumulation_per_process(4, 8)


def test_killed_run_resumes_and_matches_an_uninterrupted_one(world, teacher):

    flags = ["train", "--mode", "distill", "--method", "fkl", "--model", str(world / "tiny-xs"), "--teacher",
             str(teacher / "model"), "--data", str(world / "train.json"), "--lr", "1e-2", "--max-steps", "8",
             "--warmup-steps", "2", "--micro-batch-size", "4", "--grad-accum", "2", "--save-steps", "2"]
    cell, reference = world / "resumed", world / "uninterrupted"
    killed = run_kdgrid([*flags, "--out", str(cell)], {"KDGRID_TEST_KILL_AT_STEP": "5"})
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    assert sorted(p.name for p in (cell / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (cell / "model").exists() and not (cell / "train_log.jsonl").exists()

    assert kdgrid([*flags, "--out", str(cell)]) == 0
    assert kdgrid([*flags, "--out", str(reference)]) == 0
    assert_resumed_as_uninterrupted(cell, reference, from_step=4, steps=8, tolerance=1e-6)
    assert not (cell / "checkpoints").exists()


def assert_resumed_as_uninterrupted(cell, reference, from_step, steps, tolerance):
    """The run of `cell` resumed from checkpoint-<from_step> and ended as the uninterrupted `reference`:
    every step logged once, the same losses and weights."""
    from safetensors.torch import load_file

    rows = log_rows(cell)
    assert {"event": "resume", "from_step": from_step, "checkpoint": f"checkpoint-{from_step}"} in rows
    assert [r["step"] for r in rows if "step" in r] == list(range(1, steps + 1))
    assert step_losses(cell) == pytest.approx(step_losses(reference), rel=tolerance)
    resumed, straight = load_file(cell / "model" / "model.safetensors"), load_file(reference / "model" / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=tolerance)


def test_the_done_line_and_the_log_say_what_the_run_cost_and_checkpoints_can_be_kept(world, capsys):
    cell = train(world, "sft-kept", "--mode", "sft", "--model", str(world / "tiny-xs"), "--finetune", "full",
                 "--max-steps", "4", "--save-steps", "2", "--keep-checkpoints", "1", *QUICK)
    rows = log_rows(cell)
    steps, done = [r for r in rows if "step" in r], rows[-1]
    assert done["event"] == "done" and done["tokens"] == sum(r["tokens"] for r in steps) > 0
    assert done["peak_memory_mb"] == max(r["memory_mb"] for r in steps) > 0
    assert done["checkpoint_bytes"] > done["model_bytes"] > 0  # full fine-tuning: weights + Adam states
    assert sorted(p.name for p in (cell / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4"]
    out = capsys.readouterr().out
    assert f"{done['tokens']:,} tokens trained" in out and "checkpoints" in out and "(kept)" in out


# --- a scheduler's stop signal (SLURM preemption / time limit): checkpoint at that step, resume ---------

SIGNAL_FLAGS = ["train", "--mode", "distill", "--method", "fkl", "--lr", "1e-2", "--max-steps", "8",
                "--warmup-steps", "2", "--micro-batch-size", "2", "--grad-accum", "2", "--lora-dropout", "0",
                "--save-steps", "1000"]


def test_sigusr1_saves_a_checkpoint_at_that_step_and_the_rerun_resumes_from_it(world, teacher):
    """--save-steps 1000: the only checkpoint is the one the signal asked for. Two processes under ZeRO-2,
    the signal reaching rank 0 only: both ranks stop at the same step and write their shards."""

    flags = [*SIGNAL_FLAGS, "--model", str(world / "tiny-xs"), "--teacher", str(teacher / "model"),
             "--data", str(world / "train.json")]
    cell, reference = world / "signalled", world / "not-signalled"
    stopped = run_kdgrid([*flags, "--nproc", "2", "--zero-stage", "2", "--out", str(cell)],
                         {"KDGRID_TEST_SIGNAL_AT_STEP": "3:USR1"})
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert "stopped by SIGUSR1 at step 3 of 8; saved checkpoint-3" in stopped.stderr
    assert "stopped by a signal to another process at step 3 of 8" in stopped.stderr  # rank 1 agreed
    assert sorted(p.name for p in (cell / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]
    shards = sorted(p.name for p in (cell / "checkpoints" / "checkpoint-3").glob("global_step3/*optim_states.pt"))
    assert len(shards) == 2 and "rank_0" in shards[0] and "rank_1" in shards[1]
    assert not (cell / "model").exists()

    resumed = run_kdgrid([*flags, "--nproc", "2", "--zero-stage", "2", "--out", str(cell)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert kdgrid([*flags, "--out", str(reference)]) == 0
    assert_resumed_as_uninterrupted(cell, reference, from_step=3, steps=8, tolerance=1e-5)


def test_sigterm_from_outside_mid_run_checkpoints_the_current_step(world):
    """SIGTERM sent to the process group (as SLURM signals a job step) at a moment the test does not
    choose: the checkpoint is at the step the run had reached, and the re-run goes on from there."""
    import signal
    import time

    out = world / "sigterm"
    args = [sys.executable, "-m", "kdgrid", "train", "--mode", "sft", "--model", str(world / "tiny-xs"),
            "--data", str(world / "train.json"), "--max-steps", "60", "--out", str(out), *QUICK]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    progress = out / "checkpoints" / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (progress.is_file() and '"step": 2,' in progress.read_text()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr[-3000:]
    found = re.search(r"stopped by SIGTERM at step (\d+) of 60; saved checkpoint-(\d+)", stderr)
    assert found and found[1] == found[2], stderr[-3000:]
    step = int(found[1])
    assert 2 <= step < 60
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [f"checkpoint-{step}"]
    logged = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [r["step"] for r in logged if "step" in r] == list(range(1, step + 1))

    assert kdgrid(args[3:]) == 0
    rows = log_rows(out)
    assert {"event": "resume", "from_step": step, "checkpoint": f"checkpoint-{step}"} in rows
    assert [r["step"] for r in rows if "step" in r] == list(range(1, 61))
