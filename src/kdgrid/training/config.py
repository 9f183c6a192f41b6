"""TrainConfig: everything that decides one training cell, checked once, with the study's defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import options
from ..errors import KdgridError
from ..methods import METHODS, REGISTRY, cache_serves, get_method
from ..options import option

MODES = ("sft", "distill")
FINETUNES = ("lora", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TOKEN_SCOPES = ("all", "response")
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,up_proj,down_proj"


@dataclass
class TrainConfig:
    """The options of `kdgrid train`. Those marked config="training" are a family's `training:` settings
    in the config (their defaults are the grid's, in this order), those marked config="kd" the `kd:` ones."""

    mode: str = option(choices=MODES, help="sft: fine-tune on the data; distill: learn from --teacher")
    model: str = option(help="the model to train: a local HF folder or a hub id")
    data: str = option(help="training set, LLM-Adapters JSON")
    out: str = option(help="the cell folder: model/, train_log.jsonl, checkpoints/")
    teacher: str | None = option(None, help="teacher model (distill): a local HF folder or a hub id")
    teacher_cache: str | None = option(None, help="teacher-output cache (kdgrid teacher-outputs); used by "
                                       "off-policy methods without noise instead of running the teacher")
    cache_max_loss_error: float | None = option(
        None, ge=0, help="with --teacher-cache and --teacher: the largest relative error of the first step's "
        "loss (cache vs teacher) for which the cell reads the cache; above it the teacher runs online "
        "(default per method: " + ", ".join(f"{m.name} {m.max_loss_error:g}" for m in REGISTRY.values()
                                          if m.max_loss_error is not None) + ")")
    method: str | None = option(None, choices=METHODS, help="KD method (distill), kdgrid.methods: " + ", ".join(
        f"{m.name} = {m.label}" for m in REGISTRY.values()))
    temperature: float = option(1.0, gt=0, help="divides both models' logits in the KD loss (scaled by its square)")
    noise_sigma: float = option(0.0, ge=0, help="Gaussian noise N(0, s^2) on the teacher's logits")
    beta: float = option(0.5, ge=0, le=1, config="kd",
                         help="GKD: JSD(beta) as in the GKD paper and TRL >= 1: 0 forward KL, 1 reverse KL")
    lmbda: float = option(0.5, ge=0, le=1, config="kd", help="GKD: share of batches on the student's own samples")
    skew: float = option(0.1, ge=0, le=1, config="kd", help="skew_kl: skew of the teacher-student mixture")
    kd_weight: float = option(1.0, ge=0, le=1, config="kd", help="w in (1 - w) CE + w KD")
    finetune: str = option("lora", choices=FINETUNES, config="training", help="LoRA adapters or every weight")
    lora_r: int = option(8, gt=0, config="training", only_if={"finetune": "lora"}, help="LoRA rank")
    lora_alpha: int = option(16, gt=0, config="training", only_if={"finetune": "lora"}, help="LoRA alpha")
    lora_dropout: float = option(0.05, ge=0, lt=1, config="training", only_if={"finetune": "lora"},
                                 help="LoRA dropout")
    lora_targets: str = option(DEFAULT_LORA_TARGETS, config="training", listed=True, only_if={"finetune": "lora"},
                               help="comma-separated module names (a list in the config)")
    lr: float = option(3e-4, gt=0, config="training", help="peak learning rate (linear schedule, AdamW)")
    micro_batch_size: int = option(4, gt=0, config="training", help="per process")
    grad_accum: int = option(4, gt=0, config="training",
                             help="micro-batches per optimizer step, over all processes (divisible by --nproc)")
    warmup_steps: int = option(100, ge=0, config="training", help="linear warmup, in optimizer steps")
    cutoff: int = option(256, ge=8, config="training", help="maximum tokens per example")
    # 4, not 4.0: the grid passes a default as `--epochs 4` (the command line parses it to 4.0)
    epochs: float = option(4, gt=0, config="training", help="passes over the training set")
    max_steps: int = option(-1, config="training", help="optimizer steps; -1: train --epochs")
    token_scope: str = option("all", choices=TOKEN_SCOPES, config="training",
                              help="tokens in the loss: all (prompt and response, the paper's code) or response")
    seed: int = option(42, help="seed of the data order, the on-policy draws and the noise")
    zero_stage: int = option(0, choices=(0, 1, 2, 3),
                             help="DeepSpeed ZeRO stage; 0 runs without DeepSpeed (plain data parallel)")
    precision: str = option("auto", choices=PRECISIONS, config="training",
                            help="auto: bf16 (or fp16) on GPU, fp32 on CPU")
    save_steps: int = option(200, gt=0, config="training", help="checkpoint every N optimizer steps")
    gkd_max_new_tokens: int = option(128, gt=0, config="kd", help="GKD: most tokens of a student sample")
    loss_version: int | None = option(None, help="the version of the method's loss definition the command was "
                                      "written for; refused if this kdgrid computes another "
                                      "(kdgrid.methods, Method.loss_version)")
    nproc: int = option(1, gt=0, help="processes (GPUs); > 1 relaunches under torchrun")
    cell: str | None = option(None, help="cell name for logs and errors (default: --out)")
    fused_loss: bool = option(True, cli_choices=(0, 1),
                              help="1 (default): the loss from the last hidden states and the output layer, chunked, "
                                   "without the full logits (kdgrid.losses_from_hidden); 0: from the model's logits "
                                   "(the same values to float rounding)")
    # decides nothing the model depends on (not in `identity`)
    keep_checkpoints: bool = option(False, cli_choices=(0, 1),
                                    help="1: keep checkpoints/ once model/ is published (default 0: remove it then)")

    @classmethod
    def from_args(cls, args) -> TrainConfig:
        return options.from_args(cls, args)

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
        return self.mode == "distill" and not get_method(self.method).off_policy(self.lmbda)

    @property
    def uses_teacher(self) -> bool:
        """Does the loss need the teacher's logits (from a model or the cache)?"""
        return self.mode == "distill" and get_method(self.method).reads_logits

    @property
    def can_use_cache(self) -> bool:
        """Can the given teacher-output cache stand in for the teacher model in this cell? (The grid gives
        a cache only to the cells that may read it, `kdgrid.methods.cache_serves`; this is the same rule.)"""
        return self.uses_teacher and cache_serves(self.method, enabled=bool(self.teacher_cache), lmbda=self.lmbda,
                                                  noise_sigma=self.noise_sigma, temperature=self.temperature)

    @property
    def loss_kwargs(self) -> dict:
        """The keyword arguments of this cell's loss function (kdgrid.losses)."""
        return {"temperature": self.temperature,
                **{key: getattr(self, key) for key in get_method(self.method).loss_settings}}

    @property
    def checks_cache(self) -> bool:
        """Does this cell measure the cache against its online teacher before trusting it? (Whenever it
        has both; a cache given without --teacher is used unchecked, and the log says so.)"""
        return self.teacher_source == "cache" and bool(self.teacher)

    @property
    def cache_tolerance(self) -> float:
        """The largest relative first-step loss error of the cache this cell accepts."""
        if self.cache_max_loss_error is not None:
            return float(self.cache_max_loss_error)
        return get_method(self.method).max_loss_error

    @property
    def teacher_source(self) -> str:
        """'cache' (read the teacher-output cache), 'model' (run the teacher online) or 'none'."""
        if not self.uses_teacher:
            return "none"
        if self.can_use_cache:
            return "cache"
        return "model"

    def validate(self) -> TrainConfig:
        def bad(key: str, value, why: str) -> KdgridError:
            return KdgridError(f"--{key.replace('_', '-')} {value!r}: {why}")

        options.check(self)  # every choice and bound of the fields above
        if self.mode == "sft":
            for key in ("teacher", "teacher_cache", "method"):
                if getattr(self, key) is not None:
                    raise bad(key, getattr(self, key), "only applies to --mode distill")
        else:
            if self.method is None:
                raise KdgridError(f"--mode distill needs --method (one of {', '.join(METHODS)})")
            if not get_method(self.method).reads_logits and self.teacher_cache:
                raise bad("teacher_cache", self.teacher_cache,
                          f"{self.method} trains on the teacher's responses (the --data file); it reads no "
                          "teacher cache")
            if self.uses_teacher and self.teacher_source == "model" and not self.teacher:
                why = ("needs --teacher" if not self.teacher_cache else
                       "needs --teacher: the cache cannot stand in for the teacher with on-policy GKD "
                       "(lmbda > 0) or teacher noise")
                raise KdgridError(f"--method {self.method} (cell {self.cell_name}) {why}")
        if self.loss_version is not None:
            current = REGISTRY[self.method].loss_version if self.method in REGISTRY else 1
            if self.mode != "distill" or self.loss_version != current:
                raise bad("loss_version", self.loss_version,
                          f"this kdgrid computes version {current} of the {self.method or self.mode} loss")
        if self.max_steps == 0 or self.max_steps < -1:
            raise bad("max_steps", self.max_steps, "must be -1 (train --epochs) or > 0")
        if self.finetune == "lora" and not self.lora_target_modules:
            raise bad("lora_targets", self.lora_targets, "names no module")
        return self
