"""Teacher outputs computed once: per token, the teacher's top-k logits and enough to keep the
distribution exact on them.

A distill cell that uses off-policy data (fkl, rkl, jsd, skew_kl, tvd at any temperature) reads the
teacher's signal from this cache instead of running the teacher every step. For every position t of
every training example (rows t = the teacher's logits at input position t, the same rows a forward
pass gives) the cache keeps the k largest logits with their token ids and, for each temperature
tau the grid needs, the log-sum-exp of logits / tau over the whole row and over the tokens outside
the top-k ("rest"). The teacher's distribution is therefore exact on its top-k tokens, and the
losses compare teacher and student on k + 1 buckets (see `kdgrid.losses`).

File format (one `torch.save` dict, written atomically; N = total tokens, E = examples):
  format "kdgrid-teacher-outputs/1"; meta {k, temperatures, widths, vocab_width, teacher,
  tokenizer_fingerprint, ...}; offsets int64 [E+1] (example i is rows offsets[i]:offsets[i+1]);
  input_hashes [E] str (a hash of each example's input ids, to detect misaligned use);
  topk_ids int32 [N, k]; topk_max float32 [N] (the row's largest logit);
  topk_delta float16 [N, k] (each top-k logit minus the row's largest: <= 0, so float16 rounds the
  most probable tokens finest: |error| <= |delta| * 2^-11); lse float32 [len(temperatures), N];
  rest_lse float32 [len(temperatures), len(widths), N] (rest over the first `width` logits, for each
  width in `widths`: the teacher rows sliced to a narrower student's width, see `batch`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import KdgridError
from .io import atomic_path

FORMAT = "kdgrid-teacher-outputs/1"
ROWS_PER_CHUNK = 512


@dataclass
class SparseTeacher:
    """The teacher's distribution at one temperature, kept exactly on its top-k tokens per position.

    topk_logits [B, T, k] float32: raw logits (not divided by the temperature) of the top-k tokens;
    topk_ids [B, T, k] long: their token ids (-1 on padding rows the cache has no entry for);
    lse [B, T] float32: log-sum-exp of the row's first `width` logits / temperature;
    rest_lse [B, T] float32: log-sum-exp of logits / temperature over the first `width` tokens that
      are NOT in the top-k (-inf when the top-k covers them all);
    temperature: the temperature `lse` and `rest_lse` were computed at;
    width: how many logits of each row `lse` and `rest_lse` cover (ids >= width are not in the row).
    The teacher's probability of a top-k token is exp(topk_logits / temperature - lse), the total of
    all the others exp(rest_lse - lse).
    """

    topk_logits: torch.Tensor
    topk_ids: torch.Tensor
    lse: torch.Tensor
    rest_lse: torch.Tensor
    temperature: float
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.topk_ids.shape[:2])

    @property
    def k(self) -> int:
        return self.topk_ids.shape[-1]

    def to(self, device) -> SparseTeacher:
        return SparseTeacher(
            self.topk_logits.to(device), self.topk_ids.to(device), self.lse.to(device),
            self.rest_lse.to(device), self.temperature, self.width,
        )


def example_hash(input_ids) -> str:
    """A short hash of one example's token ids."""
    return hashlib.sha256(",".join(str(int(i)) for i in input_ids).encode()).hexdigest()[:16]


def _find_temperature(temperatures: list[float], temperature: float, where: str) -> int:
    for i, t in enumerate(temperatures):
        if math.isclose(t, temperature):
            return i
    raise KdgridError(f"{where}: no teacher outputs at temperature {temperature}; cached temperatures: "
                      f"{', '.join(str(t) for t in temperatures)} (rerun teacher-outputs with --temperatures)")


class TeacherCache:
    """A teacher's top-k outputs over one training set (see the module doc for the layout)."""

    def __init__(self, meta: dict, offsets, input_hashes, topk_ids, topk_max, topk_delta, lse, rest_lse,
                 path: str = "<memory>"):
        self.meta = meta
        self.offsets = offsets
        self.input_hashes = list(input_hashes)
        self.topk_ids = topk_ids
        self.topk_max = topk_max
        self.topk_delta = topk_delta
        self.lse = lse
        self.rest_lse = rest_lse
        self.path = str(path)

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def temperatures(self) -> list[float]:
        return [float(t) for t in self.meta["temperatures"]]

    @property
    def widths(self) -> list[int]:
        return [int(w) for w in self.meta["widths"]]

    @property
    def vocab_width(self) -> int:
        return int(self.meta["vocab_width"])

    def __len__(self) -> int:
        return len(self.input_hashes)

    def example_length(self, index: int) -> int:
        return int(self.offsets[index + 1] - self.offsets[index])

    # --- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            torch.save({
                "format": FORMAT, "meta": self.meta, "offsets": self.offsets,
                "input_hashes": self.input_hashes, "topk_ids": self.topk_ids, "topk_max": self.topk_max,
                "topk_delta": self.topk_delta, "lse": self.lse, "rest_lse": self.rest_lse,
            }, tmp)
        self.path = str(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherCache:
        path = Path(path)
        if not path.is_file():
            raise KdgridError(f"{path}: teacher-output cache not found")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # torch raises several types for a corrupt or foreign file
            raise KdgridError(f"{path}: not a readable teacher-output cache ({e})") from e
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise KdgridError(f"{path}: not a teacher-output cache (expected format {FORMAT!r})")
        missing = [key for key in ("meta", "offsets", "input_hashes", "topk_ids", "topk_max", "topk_delta",
                                   "lse", "rest_lse") if key not in blob]
        if missing:
            raise KdgridError(f"{path}: teacher-output cache lacks {', '.join(missing)}")
        cache = cls(blob["meta"], blob["offsets"], blob["input_hashes"], blob["topk_ids"], blob["topk_max"],
                    blob["topk_delta"], blob["lse"], blob["rest_lse"], path=str(path))
        n_rows = int(cache.offsets[-1])
        if cache.topk_ids.shape != (n_rows, cache.k) or cache.lse.shape != (len(cache.temperatures), n_rows) \
                or cache.rest_lse.shape != (len(cache.temperatures), len(cache.widths), n_rows):
            raise KdgridError(f"{path}: teacher-output cache tensors do not match its offsets and metadata")
        return cache

    # --- use -------------------------------------------------------------------------------------

    def check_examples(self, examples) -> None:
        """Raise unless `examples` (token-id lists, in data-file order) are the cached ones."""
        if len(examples) != len(self):
            raise KdgridError(f"{self.path}: cached {len(self)} examples, the training data has {len(examples)}")
        for i, ids in enumerate(examples):
            self._check_example(i, ids)

    def _check_example(self, index: int, input_ids) -> None:
        if example_hash(input_ids) != self.input_hashes[index]:
            raise KdgridError(
                f"{self.path}: example {index} differs from the cached one (other data, tokenizer, cutoff "
                f"or order); recompute the teacher outputs for this training set")

    def batch(self, example_indices, seq_len: int, temperature: float, device="cpu", width: int | None = None,
              input_ids=None) -> SparseTeacher:
        """The cached rows of some examples, right-padded to `seq_len`, as a SparseTeacher.

        `width`: the student's logits width when it is narrower than the teacher's (the shared width;
        must be one the cache was computed for). `input_ids`: the examples' token ids, checked
        against the cache when given. Padding rows have topk_ids -1.
        """
        example_indices = [int(i) for i in example_indices]
        t_index = _find_temperature(self.temperatures, temperature, self.path)
        width = self.vocab_width if width is None else min(int(width), self.vocab_width)
        if width not in self.widths:
            raise KdgridError(f"{self.path}: no teacher outputs at vocabulary width {width}; cached widths: "
                              f"{', '.join(map(str, self.widths))} (rerun teacher-outputs with --widths)")
        w_index = self.widths.index(width)
        k = self.k
        topk_logits = torch.zeros(len(example_indices), seq_len, k)
        topk_ids = torch.full((len(example_indices), seq_len, k), -1, dtype=torch.long)
        lse = torch.zeros(len(example_indices), seq_len)
        rest_lse = torch.zeros(len(example_indices), seq_len)
        for b, i in enumerate(example_indices):
            if not 0 <= i < len(self):
                raise KdgridError(f"{self.path}: example index {i} out of range (cache has {len(self)} examples)")
            if input_ids is not None:
                self._check_example(i, input_ids[b])
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            n = end - start
            if n > seq_len:
                raise KdgridError(f"{self.path}: example {i} has {n} cached positions, more than the batch's "
                                  f"{seq_len}; the training data is cut differently from the cache")
            topk_logits[b, :n] = self.topk_max[start:end, None] + self.topk_delta[start:end].float()
            topk_ids[b, :n] = self.topk_ids[start:end].long()
            rest_lse[b, :n] = self.rest_lse[t_index, w_index, start:end]
            lse[b, :n] = self.lse[t_index, start:end]
        if width < self.vocab_width:
            # the whole-row lse at the narrower width: its top-k tokens plus its rest
            inside = (topk_logits / temperature).masked_fill(topk_ids >= width, -math.inf)
            lse = torch.logaddexp(torch.logsumexp(inside, -1), rest_lse)
        return SparseTeacher(topk_logits.to(device), topk_ids.to(device), lse.to(device), rest_lse.to(device),
                             float(temperature), width)


def default_widths(vocab_width: int, tokenizer_length: int, multiple: int = 128) -> list[int]:
    """The teacher's width and every multiple of `multiple` from the tokenizer's length up to it:
    the widths a padded output layer of a model sharing the tokenizer can have (Qwen2.5: 151936 and
    152064; the tiny models: 768 and 896)."""
    first = -(-tokenizer_length // multiple) * multiple
    return sorted({vocab_width, *range(first, vocab_width, multiple)})


@torch.inference_mode()
def compute_teacher_outputs(model, examples, k: int, temperatures, batch_size: int = 8, device="cpu",
                            widths=None, pad_token_id: int = 0) -> TeacherCache:
    """Run `model` over `examples` (lists of token ids) and keep its top-k outputs per position.

    Examples go through the model right-padded in batches of `batch_size`; row t of an example is
    the logits at its input position t. `widths` (default: the model's logits width) are the row
    widths the rest mass is kept for. Metadata about the teacher is added by the caller (`meta`).
    """
    temperatures = [float(t) for t in temperatures]
    if not temperatures or any(not t > 0 for t in temperatures):
        raise KdgridError(f"teacher outputs need positive temperatures, got {temperatures}")
    if not examples or any(len(e) == 0 for e in examples):
        raise KdgridError("teacher outputs need a non-empty list of non-empty examples")
    vocab_width = None
    ids_rows, max_rows, delta_rows, lse_rows, rest_rows = [], [], [], [], []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first:first + batch_size]
        longest = max(len(e) for e in chunk)
        input_ids = torch.full((len(chunk), longest), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), longest), dtype=torch.long)
        for b, e in enumerate(chunk):
            input_ids[b, :len(e)] = torch.tensor(e, dtype=torch.long)
            attention_mask[b, :len(e)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        if vocab_width is None:
            vocab_width = logits.shape[-1]
            widths = sorted({vocab_width} if widths is None else {int(w) for w in widths})
            if not 0 < k <= vocab_width:
                raise KdgridError(f"top-k must be between 1 and the teacher's {vocab_width} logits, got {k}")
            if widths[-1] > vocab_width or widths[0] < 1:
                raise KdgridError(f"widths {widths} must lie between 1 and the teacher's {vocab_width} logits")
        rows = torch.cat([logits[b, :len(e)] for b, e in enumerate(chunk)])
        for start in range(0, rows.shape[0], ROWS_PER_CHUNK):
            part = _top_k_rows(rows[start:start + ROWS_PER_CHUNK].float(), k, temperatures, widths)
            for store, value in zip((ids_rows, max_rows, delta_rows, lse_rows, rest_rows), part):
                store.append(value.cpu())
    lengths = torch.tensor([len(e) for e in examples], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    meta = {"k": int(k), "temperatures": temperatures, "widths": widths, "vocab_width": int(vocab_width),
            "value_dtype": "float16 deltas from the row max", "n_examples": len(examples),
            "n_tokens": int(offsets[-1])}
    return TeacherCache(meta, offsets, [example_hash(e) for e in examples], torch.cat(ids_rows),
                        torch.cat(max_rows), torch.cat(delta_rows), torch.cat(lse_rows, 1), torch.cat(rest_rows, 2))


def _top_k_rows(rows: torch.Tensor, k: int, temperatures: list[float], widths: list[int]):
    """One chunk of float32 logit rows -> (ids, max, deltas, lse [temps, n], rest_lse [temps, widths, n])."""
    values, ids = rows.topk(k, dim=-1)
    row_max = values[:, 0]
    lse, rest_lse = [], []
    for tau in temperatures:
        scaled = rows / tau
        lse.append(torch.logsumexp(scaled, -1))
        rest = scaled.scatter_(1, ids, -math.inf)
        rest_lse.append(torch.stack([torch.logsumexp(rest[:, :w], -1) for w in widths]))
    return (ids.to(torch.int32), row_max, (values - row_max[:, None]).to(torch.float16),
            torch.stack(lse), torch.stack(rest_lse))
