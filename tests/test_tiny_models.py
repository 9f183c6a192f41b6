"""The tiny world's tokenizer and models: determinism, round trip, Hugging Face compatibility."""

import hashlib
import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kdgrid.errors import KdgridError
from kdgrid.tiny_models import TINY_SPECS, build_tiny_model, materialise, tiny_param_count
from kdgrid.tokenizer import EOS_TOKEN, build_tokenizer


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


TEXTS = [
    "Tom has 12 apples. 12 + 3 = 15. The answer is 15",
    "the correct answer is answer2",
    "Below is an instruction that describes a task.\n\n### Response:\n",
    "Unseen wörds, emoji 😀, tabs\tand  spaces, 1,234.56 and -7\r\n",
    "",
    "x<|endoftext|>y",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trip(text):
    tok = build_tokenizer()
    assert tok.decode(tok(text)["input_ids"]) == text


def test_tokenizer_normalises_like_qwen():
    tok = build_tokenizer()
    assert tok.decode(tok("e\u0301")["input_ids"]) == "\u00e9"


def test_tokenizer_specials_and_digits():
    tok = build_tokenizer()
    assert tok.eos_token == tok.pad_token == EOS_TOKEN
    assert tok.bos_token is None
    assert 512 <= len(tok) <= min(s.vocab_size for s in TINY_SPECS.values())
    ids = tok("1234")["input_ids"]
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4"]
    assert tok("hi")["input_ids"][-1] != tok.eos_token_id  # no special tokens added on encode


def test_tokenizer_same_bytes_in_a_fresh_process(tmp_path):
    build_tokenizer().save_pretrained(tmp_path / "here")
    code = "import sys; from kdgrid.tokenizer import build_tokenizer; build_tokenizer().save_pretrained(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there")], check=True)
    assert sha256(tmp_path / "here" / "tokenizer.json") == sha256(tmp_path / "there" / "tokenizer.json")


def test_specs_span_16x_and_counts_are_exact():
    counts = {name: tiny_param_count(name) for name in TINY_SPECS}
    assert {"tiny-xs", "tiny-s", "tiny-m", "tiny-l"} <= set(counts)
    assert max(counts.values()) >= 16 * min(counts.values())
    for name in ("tiny-xs", "tiny-l"):
        model = build_tiny_model(name)
        assert sum(p.numel() for p in model.parameters()) == counts[name]


def test_weights_are_drawn_at_the_tiny_init_scale():
    """Qwen2's 0.02 left the tiny models' attention uniform for hundreds of steps (docs/tiny_world.md)."""
    from kdgrid.tiny_models import INIT_STD

    for name in ("tiny-xs", "tiny-l"):
        model = build_tiny_model(name)
        assert model.config.initializer_range == INIT_STD == 0.05
        std = model.model.layers[0].mlp.up_proj.weight.std().item()
        assert abs(std - INIT_STD) < 0.005, (name, std)


def test_teachers_have_wider_logits_than_students():
    tok_len = len(build_tokenizer())
    student, teacher = TINY_SPECS["tiny-xs"].vocab_size, TINY_SPECS["tiny-l"].vocab_size
    assert tok_len <= student < teacher
    assert TINY_SPECS["tiny-s"].vocab_size == student and TINY_SPECS["tiny-m"].vocab_size == teacher


def test_unknown_tiny_model_lists_known():
    with pytest.raises(KdgridError, match="tiny-xs.*tiny-l|tiny-l.*tiny-xs"):
        tiny_param_count("tiny-xxl")


def test_materialise_is_deterministic_and_loads_like_a_hub_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = materialise("tiny-xs", tmp_path / "a", seed=3)
    b = materialise("tiny-xs", tmp_path / "b", seed=3)
    c = materialise("tiny-xs", tmp_path / "c", seed=4)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(a))
    assert sha256(a / "model.safetensors") == sha256(b / "model.safetensors")
    assert sha256(a / "model.safetensors") != sha256(c / "model.safetensors")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers

    model = AutoModelForCausalLM.from_pretrained(a)
    tok = AutoTokenizer.from_pretrained(a)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == TINY_SPECS["tiny-xs"].vocab_size
    assert tok("The answer is 42")["input_ids"] == build_tokenizer()("The answer is 42")["input_ids"]
    inputs = tok("Tom has 3 apples.", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or out[0, -1].item() == tok.eos_token_id
    reference = build_tiny_model("tiny-xs", seed=3)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference(**inputs).logits)
