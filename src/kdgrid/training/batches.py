"""Training data: LLM-Adapters records -> token ids and loss masks, cached once per
(data file, tokenizer, cutoff, token scope), and a collator that pads a batch.

Conventions shared with the teacher-output cache (kdgrid.teacher_cache):
- example i of `tokenize_records(records, ...)` is record i of the data file;
- `loss_mask[t] = 1` when token t is a training target (predicted from position t - 1);
- a batch's `kd_mask[b, t] = loss_mask[b, t + 1]`: position t's logits count in the loss when the token
  they predict is a target. KD losses take full-length logits with this mask, so cache rows and
  model logits line up position for position with no shift.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import KdgridError
from ..io import atomic_path, sha256_file
from ..prompt import build_training_text
from ..records import load_records

TOKEN_SCOPES = ("all", "response")
TOKENIZED_FORMAT = 2  # part of the tokenised-data cache key: 2 added each example's `truncated` flag


def tokenize_records(records: list[dict], tokenizer, cutoff: int, token_scope: str = "all") -> list[dict]:
    """Each record as {"input_ids": [...], "loss_mask": [...], "prompt_len": n}, in record order.

    The sequence is prompt + response + eos (the eos is kept only if it fits), truncated to `cutoff`
    tokens; `truncated` says whether it was (the whole sequence, eos included, did not fit). Prompt and response are tokenised separately so the prompt's tokens are exactly those a
    model sees at generation time. `token_scope` "all" trains on every token after the first (the
    study's code, LLM-Adapters' train_on_inputs), "response" only on the response and eos.
    """
    if token_scope not in TOKEN_SCOPES:
        raise KdgridError(f"unknown token scope {token_scope!r}; known: {', '.join(TOKEN_SCOPES)}")
    if cutoff < 2:
        raise KdgridError(f"cutoff must be at least 2 tokens, got {cutoff}")
    if tokenizer.eos_token_id is None:
        raise KdgridError(f"tokenizer {tokenizer.name_or_path!r} has no eos token")
    prompts, responses = zip(*(build_training_text(r) for r in records))
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    examples = []
    for p, r in zip(prompt_ids, response_ids):
        whole = list(p) + list(r) + [tokenizer.eos_token_id]
        ids = whole[:cutoff]
        n_prompt = min(len(p), len(ids))
        if token_scope == "all":
            mask = [0] + [1] * (len(ids) - 1)
        else:
            mask = [0] * n_prompt + [1] * (len(ids) - n_prompt)
        examples.append({"input_ids": ids, "loss_mask": mask, "prompt_len": n_prompt, "truncated": len(whole) > cutoff})
    return examples


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides token ids: vocabulary (with added tokens), merges, special ids."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        h.update(json.dumps(model, sort_keys=True, ensure_ascii=False).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, type(tokenizer).__name__]).encode())
    return h.hexdigest()


def tokenized_cache_path(data_path: str | os.PathLike, tokenizer, cutoff: int, token_scope: str) -> Path:
    """Where the tokenised form of `data_path` is cached: $KDGRID_CACHE_DIR/tokenized, or a
    `.kdgrid_cache/` folder beside the data file, named by a hash of everything that decides it
    (and of the format of its examples, so that a cache of an older format is never read)."""
    data_path = Path(data_path)
    key = hashlib.sha256(
        json.dumps([sha256_file(data_path), tokenizer_fingerprint(tokenizer), cutoff, token_scope,
                    TOKENIZED_FORMAT]).encode()
    ).hexdigest()[:24]
    root = Path(os.environ["KDGRID_CACHE_DIR"]) / "tokenized" if os.environ.get("KDGRID_CACHE_DIR") else (
        data_path.parent / ".kdgrid_cache"
    )
    return root / f"{data_path.stem}.{key}.pt"


def load_tokenized(data_path: str | os.PathLike, tokenizer, cutoff: int, token_scope: str) -> tuple[list[dict], bool]:
    """(examples, came_from_cache) for a data file; tokenises and caches on a miss.
    An unwritable cache location only costs the re-tokenisation next time."""
    import torch

    cache = tokenized_cache_path(data_path, tokenizer, cutoff, token_scope)
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True), True
        except (RuntimeError, EOFError, OSError) as e:
            print(f"kdgrid: rebuilding unreadable tokenised-data cache {cache} ({e})")
    examples = tokenize_records(load_records(data_path), tokenizer, cutoff, token_scope)
    try:
        with atomic_path(cache) as tmp:
            torch.save(examples, tmp)
    except OSError:
        pass
    return examples, False


class Collator:
    """Pads a list of examples (right padding) into a batch of tensors:
    input_ids, attention_mask, labels (-100 where not a target), kd_mask (see module doc),
    prompt_len (prompt tokens of each row, for on-policy sampling) and example_index (which example
    of the data file each row is, for the teacher-output cache)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        n = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), n), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), n), dtype=torch.long)
        loss_mask = torch.zeros((len(examples), n), dtype=torch.long)
        for row, e in enumerate(examples):
            k = len(e["input_ids"])
            input_ids[row, :k] = torch.tensor(e["input_ids"])
            attention_mask[row, :k] = 1
            loss_mask[row, :k] = torch.tensor(e["loss_mask"])
        labels = input_ids.masked_fill(loss_mask == 0, -100)
        kd_mask = torch.zeros_like(loss_mask)
        kd_mask[:, :-1] = loss_mask[:, 1:]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "kd_mask": kd_mask,
            "prompt_len": torch.tensor([e["prompt_len"] for e in examples], dtype=torch.long),
            "example_index": torch.tensor([e["index"] for e in examples], dtype=torch.long),
        }


class ExampleDataset:
    """A list of tokenised examples, each tagged with its index in the data file."""

    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return {**self.examples[i], "index": i}
