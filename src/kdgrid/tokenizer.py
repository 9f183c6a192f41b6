"""The tokenizer shared by every tiny model, built locally and deterministically (no hub).

A byte-level BPE like Qwen2.5's, pre-tokenized with Qwen2.5's own split pattern (so every digit
is its own token and arithmetic stays learnable), trained with the `tokenizers` library on a fixed
corpus: the Alpaca prompt, the answer keywords of every task, and text from the synthetic
generator at a fixed seed. Same library version, same bytes.

Like Qwen2.5's, text is NFC-normalised before the byte-level BPE: `AutoTokenizer` rebuilds every
Qwen2 checkpoint's tokenizer that way, so ours does too, and `decode(encode(text)) == text` holds
exactly for any NFC-normalised text (every ASCII text included); other text comes back as its NFC
form.

`<|endoftext|>` is the end-of-sequence and padding token, as in Qwen2.5 base models; there is no
beginning-of-sequence token.
"""

from __future__ import annotations

import functools

EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 768  # upper bound of the trained vocabulary (special token and 256 bytes included)
MODEL_MAX_LENGTH = 1024

# Qwen2.5's pre-tokenization pattern: words, single digits, punctuation runs, whitespace.
SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

KEYWORDS = (
    ["true", "false", "the correct answer is", "The answer is", "Answer Choices:"]
    + [f"answer{i}" for i in range(1, 6)]
    + [f"option{i}" for i in range(1, 3)]
    + [f"solution{i}" for i in range(1, 3)]
    + [f"ending{i}" for i in range(1, 5)]
    + [f"({c})" for c in "ABCDE"]
)


def training_corpus() -> list[str]:
    """The fixed texts the BPE merges are learnt from."""
    from .prompt import build_prompt
    from .synthetic import corpus_records

    texts = [build_prompt("", ""), build_prompt("", "x")]
    texts += [" ".join(KEYWORDS)] * 20
    for record in corpus_records():
        prompt = build_prompt(record["instruction"], record["input"])
        texts.append(prompt + record["output"])
    return texts


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok.to_str()


def build_tokenizer():
    """A fresh Qwen2 tokenizer over the tiny vocabulary (the BPE itself is trained once per process).

    It is the class `AutoTokenizer` picks for a Qwen2 checkpoint folder (`Qwen2Tokenizer`, a
    `PreTrainedTokenizerFast`), so a materialised model's tokenizer behaves exactly like this one.
    """
    import json

    from transformers import Qwen2Tokenizer

    bpe = json.loads(_tokenizer_json())["model"]
    return Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]],
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=None,
        bos_token=None,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
