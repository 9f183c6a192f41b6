"""Teacher outputs computed once: per token, the teacher's top-k logits and enough to keep the
distribution exact on them.

A distill cell the cache can serve (`kdgrid.methods.cache_serves`: an off-policy method that reads
logits, no teacher noise, a temperature up to teacher_cache.max_temperature) reads the teacher's
signal from this cache instead of running the teacher every step, once the cache has passed its
check on the cell's first step (docs/teacher_cache.md). For every position t of
every training example (rows t = the teacher's logits at input position t, the same rows a forward
pass gives) the cache keeps the k largest logits with their token ids and, for each temperature
tau the grid needs, the log-sum-exp of logits / tau over the whole row and over the tokens outside
the top-k ("rest"). The teacher's distribution is therefore exact on its top-k tokens, and the
losses compare teacher and student on k + 1 buckets (see `kdgrid.losses`).

Beyond the top-k, the cache keeps S ids drawn at random (with replacement) from the teacher's
distribution over the rest, with their logits, per temperature ("tail samples"). They make the
losses whose tail can be written as an expectation under the teacher (`Method.cache_unbiased`)
unbiased estimates of the dense loss and gradient instead of a biased (k+1)-bucket value; see
`kdgrid.losses` and docs/teacher_cache.md. S = 0 gives the bucket-only cache.

File format (one `torch.save` dict, written atomically; N = total tokens, E = examples):
  format "kdgrid-teacher-outputs/2"; meta {k, tail_samples, temperatures, widths, vocab_width, teacher,
  tokenizer_fingerprint, ...}; offsets int64 [E+1] (example i is rows offsets[i]:offsets[i+1]);
  input_hashes [E] str (a hash of each example's input ids, to detect misaligned use);
  topk_ids int32 [N, k]; topk_max float32 [N] (the row's largest logit);
  topk_delta float16 [N, k] (each top-k logit minus the row's largest: <= 0, so float16 rounds the
  most probable tokens finest: |error| <= |delta| * 2^-11); lse float32 [len(temperatures), N];
  rest_lse float32 [len(temperatures), len(widths), N] (rest over the first `width` logits, for each
  width in `widths`: the teacher rows sliced to a narrower student's width, see `batch`);
  tail_ids int32 [len(temperatures), N, S] (drawn from softmax(logits / tau) outside the top-k, over
  the teacher's whole row); tail_delta float16 [len(temperatures), N, S] (their logits minus the
  row's largest); fidelity {per temperature: the teacher's mass outside the top-k, mean/p50/p90/p99/max}.
Version 1 files (top-k only) are refused with a message saying to recompute them.
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

FORMAT = "kdgrid-teacher-outputs/2"
OLD_FORMATS = ("kdgrid-teacher-outputs/1",)
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
    tail_logits [B, T, S] float32, tail_ids [B, T, S] long (or None): ids drawn from the teacher's
      distribution over the rest (not in the top-k) at this temperature, and their raw logits; ids -1
      on padding rows and ids >= width are not samples of this width's rest (the losses skip them).
    The teacher's probability of a top-k token is exp(topk_logits / temperature - lse), the total of
    all the others exp(rest_lse - lse).
    """

    topk_logits: torch.Tensor
    topk_ids: torch.Tensor
    lse: torch.Tensor
    rest_lse: torch.Tensor
    temperature: float
    width: int
    tail_logits: torch.Tensor | None = None
    tail_ids: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.topk_ids.shape[:2])

    @property
    def k(self) -> int:
        return self.topk_ids.shape[-1]

    @property
    def tail_samples(self) -> int:
        return 0 if self.tail_ids is None else self.tail_ids.shape[-1]


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
                 tail_ids, tail_delta, path: str = "<memory>"):
        self.meta = meta
        self.offsets = offsets
        self.input_hashes = list(input_hashes)
        self.topk_ids = topk_ids
        self.topk_max = topk_max
        self.topk_delta = topk_delta
        self.lse = lse
        self.rest_lse = rest_lse
        self.tail_ids = tail_ids
        self.tail_delta = tail_delta
        self.path = str(path)

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @property
    def tail_samples(self) -> int:
        return int(self.meta.get("tail_samples", 0))

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

    # --- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            torch.save({
                "format": FORMAT, "meta": self.meta, "offsets": self.offsets,
                "input_hashes": self.input_hashes, "topk_ids": self.topk_ids, "topk_max": self.topk_max,
                "topk_delta": self.topk_delta, "lse": self.lse, "rest_lse": self.rest_lse,
                "tail_ids": self.tail_ids, "tail_delta": self.tail_delta,
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
        if isinstance(blob, dict) and blob.get("format") in OLD_FORMATS:
            raise KdgridError(f"{path}: teacher-output cache of an older format ({blob['format']}, top-k only, "
                              f"biased on real models); this kdgrid reads {FORMAT}: delete it and rerun "
                              f"teacher-outputs (Snakemake: --forcerun teacher_outputs)")
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise KdgridError(f"{path}: not a teacher-output cache (expected format {FORMAT!r})")
        missing = [key for key in ("meta", "offsets", "input_hashes", "topk_ids", "topk_max", "topk_delta",
                                   "lse", "rest_lse", "tail_ids", "tail_delta") if key not in blob]
        if missing:
            raise KdgridError(f"{path}: teacher-output cache lacks {', '.join(missing)}")
        cache = cls(blob["meta"], blob["offsets"], blob["input_hashes"], blob["topk_ids"], blob["topk_max"],
                    blob["topk_delta"], blob["lse"], blob["rest_lse"], blob["tail_ids"], blob["tail_delta"],
                    path=str(path))
        n_rows, n_temps = int(cache.offsets[-1]), len(cache.temperatures)
        tail_shape = (n_temps, n_rows, cache.tail_samples)
        if cache.topk_ids.shape != (n_rows, cache.k) or cache.lse.shape != (n_temps, n_rows) \
                or cache.rest_lse.shape != (n_temps, len(cache.widths), n_rows) \
                or cache.tail_ids.shape != tail_shape or cache.tail_delta.shape != tail_shape:
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
        s = self.tail_samples
        tail_logits = torch.zeros(len(example_indices), seq_len, s)
        tail_ids = torch.full((len(example_indices), seq_len, s), -1, dtype=torch.long)
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
            if s:
                tail_logits[b, :n] = self.topk_max[start:end, None] + self.tail_delta[t_index, start:end].float()
                tail_ids[b, :n] = self.tail_ids[t_index, start:end].long()
        if width < self.vocab_width:
            # the whole-row lse at the narrower width: its top-k tokens plus its rest
            inside = (topk_logits / temperature).masked_fill(topk_ids >= width, -math.inf)
            lse = torch.logaddexp(torch.logsumexp(inside, -1), rest_lse)
        tail = (tail_logits.to(device), tail_ids.to(device)) if s else (None, None)
        return SparseTeacher(topk_logits.to(device), topk_ids.to(device), lse.to(device), rest_lse.to(device),
                             float(temperature), width, *tail)

    def rest_mass(self, temperature: float) -> torch.Tensor:
        """The teacher's probability outside its top-k, per cached token, at the widest cached width."""
        t_index = _find_temperature(self.temperatures, temperature, self.path)
        w_index = self.widths.index(max(self.widths))
        return (self.rest_lse[t_index, w_index] - self.lse[t_index]).exp()


def default_widths(vocab_width: int, tokenizer_length: int, multiple: int = 128) -> list[int]:
    """The teacher's width and every multiple of `multiple` from the tokenizer's length up to it:
    the widths a padded output layer of a model sharing the tokenizer can have (Qwen2.5: 151936 and
    152064; the tiny models: 768 and 896)."""
    first = -(-tokenizer_length // multiple) * multiple
    return sorted({vocab_width, *range(first, vocab_width, multiple)})


@torch.inference_mode()
def compute_teacher_outputs(model, examples, k: int, temperatures, batch_size: int = 8, device="cpu",
                            widths=None, pad_token_id: int = 0, tail_samples: int = 0,
                            seed: int = 0) -> TeacherCache:
    """Run `model` over `examples` (lists of token ids) and keep its top-k outputs per position.

    Examples go through the model right-padded in batches of `batch_size`; row t of an example is
    the logits at its input position t. `widths` (default: the model's logits width) are the row
    widths the rest mass is kept for. `tail_samples` ids per position and temperature are drawn from
    the teacher's distribution outside the top-k (a generator seeded with `seed`: the same inputs
    give the same file). Metadata about the teacher is added by the caller (`meta`).
    """
    if tail_samples < 0:
        raise KdgridError(f"tail samples must be >= 0, got {tail_samples}")
    generator = torch.Generator(device=device).manual_seed(int(seed))
    temperatures = [float(t) for t in temperatures]
    if not temperatures or any(not t > 0 for t in temperatures):
        raise KdgridError(f"teacher outputs need positive temperatures, got {temperatures}")
    if not examples or any(len(e) == 0 for e in examples):
        raise KdgridError("teacher outputs need a non-empty list of non-empty examples")
    vocab_width = None
    ids_rows, max_rows, delta_rows, lse_rows, rest_rows, tail_id_rows, tail_delta_rows = [], [], [], [], [], [], []
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
            part = _top_k_rows(rows[start:start + ROWS_PER_CHUNK].float(), k, temperatures, widths,
                               tail_samples, generator)
            for store, value in zip((ids_rows, max_rows, delta_rows, lse_rows, rest_rows, tail_id_rows,
                                     tail_delta_rows), part):
                store.append(value.cpu())
    lengths = torch.tensor([len(e) for e in examples], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    meta = {"k": int(k), "tail_samples": int(tail_samples), "tail_seed": int(seed), "temperatures": temperatures,
            "widths": widths, "vocab_width": int(vocab_width), "value_dtype": "float16 deltas from the row max",
            "n_examples": len(examples), "n_tokens": int(offsets[-1])}
    cache = TeacherCache(meta, offsets, [example_hash(e) for e in examples], torch.cat(ids_rows),
                         torch.cat(max_rows), torch.cat(delta_rows), torch.cat(lse_rows, 1), torch.cat(rest_rows, 2),
                         torch.cat(tail_id_rows, 1), torch.cat(tail_delta_rows, 1))
    cache.meta["fidelity"] = {fmt_temperature(t): rest_mass_summary(cache.rest_mass(t)) for t in temperatures}
    cache.meta["bytes_per_token"] = bytes_per_token(k, tail_samples, len(temperatures), len(widths))
    return cache


def cache_teacher_outputs(teacher: str, data: str, top_k: int, temperatures: list[float], *, tail_samples: int,
                          seed: int, cutoff: int, batch_size: int, token_scope: str, widths: list[int] | None,
                          precision: str, device: str) -> TeacherCache:
    """Load the teacher (a folder or a hub id) and its tokenizer, tokenise the training set `data` as
    training does (`cutoff`, `token_scope`) and run `compute_teacher_outputs` over it (the arguments of
    `kdgrid teacher-outputs`, checked by kdgrid.teacher_options.TeacherOutputsOptions). `widths` None: the
    teacher's width and every multiple of 128 from the tokenizer's length up to it; `device` "auto":
    cuda when available. The cache's meta records the teacher, its tokenizer and the tokenisation."""
    from .training.batches import load_tokenized, tokenizer_fingerprint
    from .training.model_io import (
        check_finite_weights,
        load_causal_lm,
        load_tokenizer,
        resolve_precision,
        torch_dtype,
    )

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(precision)

    tokenizer = load_tokenizer(teacher)
    examples, _ = load_tokenized(data, tokenizer, cutoff, token_scope)
    model = load_causal_lm(teacher, torch_dtype(precision), "teacher").to(device).eval()
    check_finite_weights(model, f"teacher {teacher}")
    vocab_width = model.get_output_embeddings().weight.shape[0]
    if top_k > vocab_width:
        raise KdgridError(f"--top-k {top_k}: more than the {vocab_width} logits of teacher {teacher} "
                          f"(config key teacher_cache.top_k)")
    if widths is None:
        widths = default_widths(vocab_width, len(tokenizer))
    elif any(not 0 < w <= vocab_width for w in widths):
        raise KdgridError(f"--widths {','.join(map(str, widths))}: each must lie between 1 and the teacher's "
                          f"{vocab_width} logits")
    cache = compute_teacher_outputs(model, [e["input_ids"] for e in examples], top_k, temperatures, batch_size,
                                    device, widths=widths, pad_token_id=tokenizer.pad_token_id,
                                    tail_samples=tail_samples, seed=seed)
    cache.meta.update(teacher=str(teacher), tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), data=str(data),
                      cutoff=cutoff, token_scope=token_scope, precision=precision)
    return cache


def fmt_temperature(t: float) -> str:
    return format(float(t), "g")


def rest_mass_summary(rest: torch.Tensor) -> dict:
    """The teacher's mass outside its cached top-k over the tokens: what a top-k-only cache would lose."""
    rest = rest.double()
    q = torch.quantile(rest, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)) if rest.numel() <= 1 << 24 \
        else torch.tensor([float("nan")] * 3)
    return {"teacher_rest_mass_mean": float(rest.mean()), "teacher_rest_mass_p50": float(q[0]),
            "teacher_rest_mass_p90": float(q[1]), "teacher_rest_mass_p99": float(q[2]),
            "teacher_rest_mass_max": float(rest.max())}


def bytes_per_token(k: int, tail_samples: int, n_temperatures: int, n_widths: int) -> int:
    """Storage per cached token: top-k ids (int32) and logits (float16 deltas), the row max (float32),
    the normalisers (float32, per temperature: the row's and each width's rest), tail samples (int32 id
    + float16 logit, per temperature)."""
    return k * 6 + 4 + 4 * n_temperatures * (1 + n_widths) + 6 * tail_samples * n_temperatures


def _top_k_rows(rows: torch.Tensor, k: int, temperatures: list[float], widths: list[int], tail_samples: int,
                generator: torch.Generator):
    """One chunk of float32 logit rows -> (ids, max, deltas, lse [temps, n], rest_lse [temps, widths, n],
    tail ids [temps, n, S], tail deltas [temps, n, S])."""
    values, ids = rows.topk(k, dim=-1)
    row_max = values[:, 0]
    lse, rest_lse, tail_ids, tail_delta = [], [], [], []
    for tau in temperatures:
        scaled = rows / tau
        lse.append(torch.logsumexp(scaled, -1))
        rest = scaled.scatter_(1, ids, -math.inf)
        rest_lse.append(torch.stack([torch.logsumexp(rest[:, :w], -1) for w in widths]))
        if tail_samples and k < rows.shape[1]:
            drawn = torch.multinomial(torch.softmax(rest, -1), tail_samples, replacement=True, generator=generator)
        else:  # nothing outside the top-k (k = the width) or no samples asked for
            drawn = torch.full((rows.shape[0], tail_samples), -1, dtype=torch.long, device=rows.device)
        tail_ids.append(drawn.to(torch.int32))
        tail_delta.append((rows.gather(1, drawn.clamp(min=0)) - row_max[:, None]).to(torch.float16))
    return (ids.to(torch.int32), row_max, (values - row_max[:, None]).to(torch.float16),
            torch.stack(lse), torch.stack(rest_lse), torch.stack(tail_ids), torch.stack(tail_delta))
