"""The embedded world's difficulty target (issue: a tiny teacher clearly above the tiny students within
the demo's budget): the demo's own SFT settings, on the demo's commonsense data, through `kdgrid train`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from kdgrid.cli import main as kdgrid

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def greedy_accuracy(model_dir: Path, task: str, records: list[dict]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdgrid.answers import is_correct
    from kdgrid.prompt import build_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    batch = tokenizer([build_prompt(r["instruction"], r["input"]) for r in records], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return 100 * sum(is_correct(task, t, r["answer"]) for t, r in zip(texts, records)) / len(records)


def test_demo_sft_teacher_is_clearly_above_the_smallest_student(tmp_path):
    from kdgrid.grid import expand_grid, load_config
    from kdgrid.synthetic import generate_family
    from kdgrid.tiny_models import materialise

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = load_config(ROOT / "config" / "tiny.yaml")
    data = config["families"]["commonsense"]["data"]
    train, tests = generate_family("commonsense", data["seed"], data["n_train"], data["n_test"])
    (tmp_path / "train.json").write_text(json.dumps(train))
    flags = expand_grid(config).training_args("commonsense")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = {}
        for name in ("tiny-xs", "tiny-m"):
            materialise(name, tmp_path / name)
            out = tmp_path / f"sft-{name}"
            assert kdgrid(["train", "--mode", "sft", "--model", str(tmp_path / name), "--data",
                           str(tmp_path / "train.json"), "--out", str(out), "--seed", "1", *flags]) == 0
            per_task = [greedy_accuracy(out / "model", task, records) for task, records in tests.items()]
            scores[name] = sum(per_task) / len(per_task)
    finally:
        torch.set_num_threads(threads)
    majority = sum(max(sum(r["answer"] == a for r in rs) for a in {r["answer"] for r in rs}) / len(rs)
                   for rs in tests.values()) * 100 / len(tests)
    # measured here (benchmarks/tiny_difficulty.py, seed 1): tiny-m 97.8, tiny-xs 61.1, majority 44.4;
    # seeds 2 and 3: tiny-m 100 and 100, tiny-xs 44.4 and 44.4
    assert scores["tiny-m"] >= majority + 25, (scores, majority)
    assert scores["tiny-m"] >= scores["tiny-xs"] + 20, scores
