"""The embedded tiny models: Qwen2 causal LMs small enough to train the whole grid on a CPU.

Four sizes (`tiny-xs` ... `tiny-l`, about 40x apart in parameters) share one locally built
tokenizer (`kdgrid.tokenizer`). They are the Qwen2 architecture the real students and teachers
use, saved as ordinary Hugging Face folders, so `from_pretrained`, peft, DeepSpeed and lm-eval load
them exactly as they load `Qwen/Qwen2.5-0.5B`.

Decision: the tiny base models are randomly initialised, not pre-trained. Initialisation is seeded,
so the same name and seed give byte-identical weights, and building one costs nothing. Their "base
model" evaluation therefore scores near zero; all task ability comes from SFT on the synthetic data.
Weights are drawn with standard deviation INIT_STD = 0.05 instead of Qwen2's 0.02 (a value chosen
for widths in the thousands): at widths 32-192 the smaller scale leaves attention uniform for
hundreds of steps, and whether a model learns to read the prompt within the demo's budget became
a matter of the seed (measured in docs/tiny_world.md).

As in Qwen2.5 (0.5B-3B: 151936 logits, tied embeddings; 7B-14B: 152064 logits, untied), the
students' output layer is narrower than the teachers' over the same tokenizer (768 vs 896 rows, both
padded beyond the tokenizer's length), so the trainer's logit-slicing path runs in the tiny world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import KdgridError, unknown

STUDENT_VOCAB = 768
TEACHER_VOCAB = 896


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool


TINY_SPECS: dict[str, TinySpec] = {
    "tiny-xs": TinySpec(32, 2, 4, 2, 96, STUDENT_VOCAB, True),
    "tiny-s": TinySpec(64, 2, 4, 2, 192, STUDENT_VOCAB, True),
    "tiny-m": TinySpec(128, 3, 4, 2, 384, TEACHER_VOCAB, False),
    "tiny-l": TinySpec(192, 4, 6, 2, 576, TEACHER_VOCAB, False),
}
MAX_POSITION_EMBEDDINGS = 1024
INIT_STD = 0.05


def get_spec(name: str) -> TinySpec:
    if name not in TINY_SPECS:
        raise unknown("tiny model", name, TINY_SPECS)
    return TINY_SPECS[name]


def tiny_param_count(name: str) -> int:
    """Exact number of parameters of a tiny model, counted from its spec (Qwen2 layout)."""
    s = get_spec(name)
    head_dim = s.hidden_size // s.num_attention_heads
    q_out, kv_out = s.num_attention_heads * head_dim, s.num_key_value_heads * head_dim
    attention = (s.hidden_size * q_out + q_out) + 2 * (s.hidden_size * kv_out + kv_out) + q_out * s.hidden_size
    mlp = 3 * s.hidden_size * s.intermediate_size
    layer = attention + mlp + 2 * s.hidden_size  # two RMSNorm weights
    embeddings = s.vocab_size * s.hidden_size
    lm_head = 0 if s.tie_word_embeddings else s.vocab_size * s.hidden_size
    return embeddings + s.num_hidden_layers * layer + s.hidden_size + lm_head


def build_config(name: str):
    from transformers import Qwen2Config

    from .tokenizer import EOS_TOKEN, build_tokenizer

    s = get_spec(name)
    tokenizer = build_tokenizer()
    if s.vocab_size < len(tokenizer):
        raise KdgridError(f"tiny model {name}: vocab_size {s.vocab_size} is smaller than the tokenizer ({len(tokenizer)})")
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    return Qwen2Config(
        vocab_size=s.vocab_size,
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        tie_word_embeddings=s.tie_word_embeddings,
        initializer_range=INIT_STD,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        use_sliding_window=False,
        bos_token_id=eos_id,  # as Qwen2.5: bos id = eos id, and the tokenizer adds no bos
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="float32",
        architectures=["Qwen2ForCausalLM"],
    )


def build_tiny_model(name: str, seed: int = 0):
    """A freshly initialised tiny model; the same name and seed give the same weights."""
    import torch
    from transformers import Qwen2ForCausalLM

    config = build_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    return model.eval()


def materialise(name: str, out_dir, seed: int = 0) -> Path:
    """Write the tiny model `name` as a Hugging Face folder (config, safetensors, tokenizer) at `out_dir`."""
    from .io import atomic_dir
    from .tokenizer import build_tokenizer

    get_spec(name)
    out_dir = Path(out_dir)
    model = build_tiny_model(name, seed)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        build_tokenizer().save_pretrained(tmp)
    return out_dir


def world_fingerprint() -> str:
    """A hash of the code that defines the embedded world (tokenizer corpus, synthetic tasks, model
    specs, prompt). The workflow passes it as a param of the jobs that build tiny models and synthetic
    data, so editing that code rebuilds them (and everything downstream) instead of mixing models
    with different tokenizers."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("tokenizer.py", "synthetic.py", "tiny_models.py", "prompt.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]
