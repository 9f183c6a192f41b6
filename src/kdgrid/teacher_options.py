"""The options of the two teacher commands, defined once (kdgrid.options): `kdgrid teacher-outputs`
(the teacher-output cache, kdgrid.teacher_cache) and `kdgrid teacher-responses` (seqkd's data,
kdgrid.training.responses). Where they repeat a training setting (cutoff, token scope, precision) or a
config default, the default is taken from there."""

from __future__ import annotations

from dataclasses import dataclass

from .grid.spec import DEFAULT_KD, DEFAULT_TEACHER_CACHE
from .options import option
from .training.config import PRECISIONS, TOKEN_SCOPES, TrainConfig


@dataclass(frozen=True)
class TeacherOutputsOptions:
    teacher: str = option(help="the teacher: a local Hugging Face folder or a hub id")
    data: str = option(help="the training set (LLM-Adapters JSON) the students train on")
    top_k: int = option(gt=0, help="how many of the largest logits to keep per token (config key teacher_cache.top_k)")
    out: str = option(help="the cache file to write (.pt)")
    temperatures: str = option("1", help="comma-separated temperatures the students use")
    tail_samples: int = option(DEFAULT_TEACHER_CACHE["tail_samples"], ge=0,
                               help="ids per token drawn from the teacher's distribution outside the top-k "
                                    "(0: top-k only, biased for every loss; config key teacher_cache.tail_samples)")
    seed: int = option(0, help="seed of the tail sampling")
    fidelity_out: str | None = option(None, help="also write the cache's fidelity figures here (JSON)")
    cutoff: int = option(TrainConfig.cutoff, ge=8, help="tokens per example, as in training")
    batch_size: int = option(8, gt=0, help="examples per teacher forward pass")
    token_scope: str = option(TrainConfig.token_scope, choices=TOKEN_SCOPES,
                              help="tokenisation as in training (the cache keeps every position either way)")
    widths: str = option("auto", help="comma-separated logits widths of the students that will read the cache; "
                         "'auto': the teacher's width and every multiple of 128 from the tokenizer's length up to it")
    precision: str = option(TrainConfig.precision, choices=PRECISIONS,
                            help="teacher weights' precision (auto: bf16 on a GPU that has it, fp32 on CPU)")
    device: str = option("auto", help="cpu, cuda, cuda:1 ... (auto: cuda when available)")


@dataclass(frozen=True)
class TeacherResponsesOptions:
    teacher: str = option(help="teacher model: a local HF folder or a hub id")
    data: str = option(help="training set, LLM-Adapters JSON")
    out: str = option(help="output JSON (records with output = the teacher's response)")
    max_new_tokens: int = option(DEFAULT_KD["seqkd_max_new_tokens"], gt=0,
                                 help="most tokens per response (config key kd.seqkd_max_new_tokens)")
    batch_size: int = option(16, gt=0, help="prompts per generation batch")
    precision: str = option(TrainConfig.precision, choices=PRECISIONS)
