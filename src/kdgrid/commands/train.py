"""`kdgrid train`: train one cell of the grid (SFT or distillation), see docs/training.md."""

from __future__ import annotations

HELP = "Train one cell: SFT of a model, or distillation of a student from a teacher (any method, ZeRO 0-3)."


def add_arguments(p) -> None:
    from ..training.config import DEFAULT_LORA_TARGETS, FINETUNES, METHODS, MODES, PRECISIONS, TOKEN_SCOPES

    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--model", required=True, help="the model to train: a local HF folder or a hub id")
    p.add_argument("--data", required=True, help="training set, LLM-Adapters JSON")
    p.add_argument("--out", required=True, help="the cell folder: model/, train_log.jsonl, checkpoints/")
    p.add_argument("--teacher", help="teacher model (distill): a local HF folder or a hub id")
    p.add_argument("--teacher-cache", help="teacher-output cache (kdgrid teacher-outputs); used by off-policy "
                   "methods without noise instead of running the teacher")
    p.add_argument("--cache-max-loss-error", type=float,
                   help="with --teacher-cache and --teacher: the largest relative error of the first step's loss "
                        "(cache vs teacher) for which the cell reads the cache; above it the teacher runs online "
                        "(default per method: fkl, skew_kl, tvd, gkd 0.005, rkl 0.02)")
    p.add_argument("--method", choices=METHODS, help="KD loss (distill): fkl (the paper's SeqKD), rkl, gkd, "
                   "skew_kl, tvd, or seqkd (Kim & Rush: cross-entropy on the teacher's responses)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--noise-sigma", type=float, default=0.0, help="Gaussian noise N(0, s^2) on the teacher's logits")
    p.add_argument("--beta", type=float, default=0.5, help="GKD: JSD(beta) as in the GKD paper and TRL >= 1: "
                   "0 forward KL, 1 reverse KL")
    p.add_argument("--lmbda", type=float, default=0.5, help="GKD: share of batches on the student's own samples")
    p.add_argument("--skew", type=float, default=0.1, help="skew_kl: skew of the teacher-student mixture")
    p.add_argument("--kd-weight", type=float, default=1.0, help="w in (1 - w) CE + w KD")
    p.add_argument("--token-scope", choices=TOKEN_SCOPES, default="all",
                   help="tokens in the loss: all (prompt and response, the paper's code) or response")
    p.add_argument("--finetune", choices=FINETUNES, default="lora")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--lora-targets", default=DEFAULT_LORA_TARGETS)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--micro-batch-size", type=int, default=4, help="per process")
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--cutoff", type=int, default=256, help="maximum tokens per example")
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; -1: train --epochs")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=0,
                   help="DeepSpeed ZeRO stage; 0 runs without DeepSpeed (plain data parallel)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 (or fp16) on GPU, fp32 on CPU")
    p.add_argument("--save-steps", type=int, default=200, help="checkpoint every N optimizer steps")
    p.add_argument("--gkd-max-new-tokens", type=int, default=128)
    p.add_argument("--loss-version", type=int, help="the version of the method's loss definition the command "
                   "was written for; refused if this kdgrid computes another (kdgrid.training.config.LOSS_VERSIONS)")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs); > 1 relaunches under torchrun")
    p.add_argument("--cell", help="cell name for logs and errors (default: --out)")
    p.add_argument("--fused-loss", type=int, choices=(0, 1), default=1,
                   help="1 (default): the loss from the last hidden states and the output layer, chunked, without "
                        "the full logits; 0: from the model's logits (the same values to float rounding)")
    p.add_argument("--keep-checkpoints", type=int, choices=(0, 1), default=0,
                   help="1: keep checkpoints/ once model/ is published (default 0: remove it then)")


def run(args) -> int:
    from ..training.config import TrainConfig
    from ..training.engine import train

    train(TrainConfig.from_args(args))
    return 0
