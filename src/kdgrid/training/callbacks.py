"""Trainer callbacks: the per-step JSONL log, the NaN/inf stop, and a crash hook for tests."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

from transformers import TrainerCallback

from ..errors import KdgridError

# Tests set this to make the process SIGKILL itself at the end of that optimizer step (before that
# step's log line and checkpoint), to exercise resume after a real kill.
KILL_AT_STEP_ENV = "KDGRID_TEST_KILL_AT_STEP"


class StepLogCallback(TrainerCallback):
    """Appends one JSON line per optimizer step (main process only): step, epoch, loss, lr,
    grad_norm, tokens (all processes), tokens/s, memory MB."""

    def __init__(self, path: Path, is_main: bool):
        self.path = Path(path)
        self.is_main = is_main

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.is_main or not logs or "loss" not in logs:
            return
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": logs["loss"],
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens": logs.get("tokens"),
            "tokens_per_s": logs.get("tokens_per_s"),
            "memory_mb": logs.get("memory_mb"),
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class NonFiniteLossCallback(TrainerCallback):
    """Stop with an error naming the cell and step when the logged loss is NaN or infinite.
    (Every process sees the same all-gathered loss, so every process stops.)"""

    def __init__(self, cell: str):
        self.cell = cell

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise KdgridError(f"cell {self.cell}: the training loss is {loss} at step {state.global_step}; "
                              f"stopping (lower --lr, check the teacher, or use --precision fp32)")


class KillAtStepCallback(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def crash_hooks_from_env() -> list[TrainerCallback]:
    step = os.environ.get(KILL_AT_STEP_ENV)
    return [KillAtStepCallback(int(step))] if step else []
