"""TrainConfig: everything that decides one training cell, checked once, with the study's defaults."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import KdgridError

MODES = ("sft", "distill")
METHODS = ("fkl", "rkl", "gkd", "skew_kl", "tvd", "seqkd")
OFF_POLICY_METHODS = ("fkl", "rkl", "skew_kl", "tvd")  # plus gkd with lmbda = 0
FINETUNES = ("lora", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOKEN_SCOPES = ("all", "response")
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,up_proj,down_proj"
# The version of each method's loss definition in kdgrid.losses (1 where it never changed). A distill
# command names it (--loss-version) only where the versions differ in value, so that upgrading kdgrid
# re-runs exactly the cells whose loss changed (kdgrid.grid.Grid.distill_args).
# gkd 2: kd.beta as in the GKD paper and TRL >= 1.0, M = beta p_T + (1 - beta) p_S; version 1 had
# M = beta p_S + (1 - beta) p_T with the weights the other way round, the same loss only at beta 0.5.
LOSS_VERSIONS = {"gkd": 2}


@dataclass
class TrainConfig:
    mode: str
    model: str
    data: str
    out: str
    teacher: str | None = None
    teacher_cache: str | None = None
    cache_max_loss_error: float | None = None
    method: str | None = None
    temperature: float = 1.0
    noise_sigma: float = 0.0
    beta: float = 0.5
    lmbda: float = 0.5
    skew: float = 0.1
    kd_weight: float = 1.0
    token_scope: str = "all"
    finetune: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = DEFAULT_LORA_TARGETS
    lr: float = 3e-4
    micro_batch_size: int = 4
    grad_accum: int = 4
    warmup_steps: int = 100
    cutoff: int = 256
    epochs: float = 4.0
    max_steps: int = -1
    seed: int = 42
    zero_stage: int = 0
    precision: str = "auto"
    save_steps: int = 200
    gkd_max_new_tokens: int = 128
    loss_version: int | None = None
    nproc: int = 1
    cell: str | None = None
    fused_loss: bool = True  # losses from the last hidden states and the output layer, no full logits (kdgrid.losses_from_hidden)
    keep_checkpoints: bool = False  # keep checkpoints/ once model/ is published (decides nothing the model depends on)

    @classmethod
    def from_args(cls, args) -> TrainConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What a checkpoint of this run depends on: everything but what only decides its clean-up."""
        return {k: v for k, v in self.to_dict().items() if k != "keep_checkpoints"}

    @property
    def cell_name(self) -> str:
        return self.cell or self.out

    @property
    def lora_target_modules(self) -> list[str]:
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    @property
    def is_on_policy(self) -> bool:
        return self.method == "gkd" and self.lmbda > 0

    @property
    def uses_teacher(self) -> bool:
        """Does the loss need the teacher's outputs (from a model or the cache)?"""
        return self.mode == "distill" and self.method != "seqkd"

    @property
    def can_use_cache(self) -> bool:
        """Can the teacher-output cache stand in for the teacher model in this cell?"""
        off_policy = self.method in OFF_POLICY_METHODS or (self.method == "gkd" and self.lmbda == 0)
        return self.uses_teacher and off_policy and self.noise_sigma == 0

    @property
    def checks_cache(self) -> bool:
        """Does this cell measure the cache against its online teacher before trusting it? (Whenever it
        has both; a cache given without --teacher is used unchecked, and the log says so.)"""
        return self.teacher_source == "cache" and bool(self.teacher)

    @property
    def cache_tolerance(self) -> float:
        """The largest relative first-step loss error of the cache this cell accepts."""
        from ..teacher_cache import DEFAULT_MAX_LOSS_ERROR

        if self.cache_max_loss_error is not None:
            return float(self.cache_max_loss_error)
        return DEFAULT_MAX_LOSS_ERROR[self.method]

    @property
    def teacher_source(self) -> str:
        """'cache' (read the teacher-output cache), 'model' (run the teacher online) or 'none'."""
        if not self.uses_teacher:
            return "none"
        if self.teacher_cache and self.can_use_cache:
            return "cache"
        return "model"

    def validate(self) -> TrainConfig:
        def bad(key: str, value, why: str) -> KdgridError:
            return KdgridError(f"--{key.replace('_', '-')} {value!r}: {why}")

        for key, known in [("mode", MODES), ("finetune", FINETUNES), ("precision", PRECISIONS),
                           ("token_scope", TOKEN_SCOPES)]:
            if getattr(self, key) not in known:
                raise bad(key, getattr(self, key), f"must be one of {', '.join(known)}")
        if self.mode == "sft":
            for key in ("teacher", "teacher_cache", "method"):
                if getattr(self, key) is not None:
                    raise bad(key, getattr(self, key), "only applies to --mode distill")
        else:
            if self.method is None:
                raise KdgridError(f"--mode distill needs --method (one of {', '.join(METHODS)})")
            if self.method not in METHODS:
                raise bad("method", self.method, f"must be one of {', '.join(METHODS)}")
            if self.method == "seqkd" and self.teacher_cache:
                raise bad("teacher_cache", self.teacher_cache,
                          "seqkd trains on the teacher's responses (the --data file); it reads no teacher cache")
            if self.uses_teacher and self.teacher_source == "model" and not self.teacher:
                why = ("needs --teacher" if not self.teacher_cache else
                       "needs --teacher: the cache cannot stand in for the teacher with on-policy GKD "
                       "(lmbda > 0) or teacher noise")
                raise KdgridError(f"--method {self.method} (cell {self.cell_name}) {why}")
        if self.loss_version is not None:
            current = LOSS_VERSIONS.get(self.method, 1)
            if self.mode != "distill" or self.loss_version != current:
                raise bad("loss_version", self.loss_version,
                          f"this kdgrid computes version {current} of the {self.method or self.mode} loss")
        positive = {"temperature": self.temperature, "lr": self.lr, "epochs": self.epochs,
                    "micro_batch_size": self.micro_batch_size, "grad_accum": self.grad_accum,
                    "lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "save_steps": self.save_steps,
                    "nproc": self.nproc, "gkd_max_new_tokens": self.gkd_max_new_tokens}
        for key, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise bad(key, value, "must be > 0")
        for key in ("beta", "lmbda", "skew", "kd_weight"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise bad(key, value, "must be in [0, 1]")
        if self.cache_max_loss_error is not None and not (math.isfinite(self.cache_max_loss_error)
                                                          and self.cache_max_loss_error >= 0):
            raise bad("cache_max_loss_error", self.cache_max_loss_error, "must be >= 0 (a relative loss error)")
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise bad("noise_sigma", self.noise_sigma, "must be >= 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise bad("lora_dropout", self.lora_dropout, "must be in [0, 1)")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", self.warmup_steps, "must be >= 0")
        if self.cutoff < 8:
            raise bad("cutoff", self.cutoff, "must be at least 8 tokens")
        if self.max_steps == 0 or self.max_steps < -1:
            raise bad("max_steps", self.max_steps, "must be -1 (train --epochs) or > 0")
        if self.zero_stage not in (0, 1, 2, 3):
            raise bad("zero_stage", self.zero_stage, "must be 0, 1, 2 or 3")
        if self.finetune == "lora" and not self.lora_target_modules:
            raise bad("lora_targets", self.lora_targets, "names no module")
        return self
