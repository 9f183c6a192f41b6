"""`kdgrid train`: train one cell of the grid (SFT or distillation), see docs/training.md."""

from __future__ import annotations

HELP = "Train one cell: SFT of a model, or distillation of a student from a teacher (any method, ZeRO 0-3)."


def add_arguments(p) -> None:
    from ..options import add_arguments
    from ..training.config import TrainConfig

    add_arguments(p, TrainConfig)


def run(args) -> int:
    from ..training.config import TrainConfig
    from ..training.engine import train

    train(TrainConfig.from_args(args))
    return 0
