"""`kdgrid teacher-outputs` end to end on a tiny teacher and synthetic data."""

import json

import pytest
import torch

from kdgrid import cli
from kdgrid.synthetic import generate_family
from kdgrid.teacher_cache import TeacherCache
from kdgrid.tiny_models import materialise
from kdgrid.tokenizer import build_tokenizer
from kdgrid.training.batches import tokenize_records, tokenizer_fingerprint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher_outputs")
    teacher = materialise("tiny-m", root / "tiny-m")
    train, _ = generate_family("math", seed=1, n_train=10, n_test=1)
    data = root / "train.json"
    data.write_text(json.dumps(train))
    return root, teacher, data, train


def test_command_writes_a_cache_aligned_with_training(tiny_world, monkeypatch):
    root, teacher, data, records = tiny_world
    monkeypatch.setenv("KDGRID_CACHE_DIR", str(root / "cache"))
    out = root / "out" / "topk8.pt"
    code = cli.main(["teacher-outputs", "--teacher", str(teacher), "--data", str(data), "--top-k", "8",
                     "--temperatures", "1,2", "--out", str(out), "--cutoff", "48", "--batch-size", "4"])
    assert code == 0
    cache = TeacherCache.load(out)
    tokenizer = build_tokenizer()
    examples = tokenize_records(records, tokenizer, 48, "all")
    cache.check_examples([e["input_ids"] for e in examples])
    assert cache.meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer)
    assert cache.vocab_width == 896 and 768 in cache.widths and cache.temperatures == [1.0, 2.0]

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    ids = examples[3]["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    batch = cache.batch([3], len(ids), 2.0, width=768, input_ids=[ids])
    values, top = logits.topk(8, -1)
    assert torch.equal(batch.topk_ids[0], top)
    torch.testing.assert_close(batch.topk_logits[0], values, atol=5e-3, rtol=0)
    narrow = logits[:, :768] / 2
    rest = narrow.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top, True)[:, :768],
                              -float("inf")).logsumexp(-1)
    torch.testing.assert_close(batch.rest_lse[0], rest, atol=1e-4, rtol=1e-5)


def test_command_refuses_bad_arguments(tiny_world, capsys):
    root, teacher, data, _ = tiny_world
    out = root / "bad.pt"
    assert cli.main(["teacher-outputs", "--teacher", str(teacher), "--data", str(data), "--top-k", "8",
                     "--temperatures", "1,x", "--out", str(out)]) == 2
    assert "--temperatures '1,x'" in capsys.readouterr().err
    assert cli.main(["teacher-outputs", "--teacher", str(teacher), "--data", str(data), "--top-k", "8",
                     "--widths", "5000", "--out", str(out)]) == 2
    assert "--widths 5000" in capsys.readouterr().err
    assert not out.exists()
