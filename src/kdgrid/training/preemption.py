"""Checkpoint-and-stop on a scheduler's warning signal.

SLURM sends SIGTERM to a job that is preempted or reaches its time limit, and SIGKILL after the
site's KillWait; the profile asks for the signal early (`--signal=TERM@N`). Many sites use SIGUSR1
for the same purpose. On either signal, training saves a checkpoint at the end of the current optimizer
step, stops, and the command exits non-zero (`TrainingStopped`), so the retry (Snakemake's `retries`,
or SLURM's requeue) resumes from that step instead of from the last `--save-steps` checkpoint.

With several processes every one of them may receive the signal, at slightly different steps, or
only some of them (torchrun's agent forwards it): the processes agree at each step end (an all-reduce
of "any process signalled") so that all of them stop at the same step and write one checkpoint together.
"""

from __future__ import annotations

import os
import signal
import time

from transformers import TrainerCallback

from ..errors import KdgridError

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

# Tests set this ("STEP:SIGNAL", e.g. "5:USR1") to make the process send itself that signal at the end
# of that optimizer step, the way a scheduler would mid-run.
SIGNAL_AT_STEP_ENV = "KDGRID_TEST_SIGNAL_AT_STEP"
# The SLURM test sets this (seconds) to hold each optimizer step open long enough to signal the job mid-run.
STEP_DELAY_ENV = "KDGRID_TEST_STEP_DELAY_S"

# torchrun's agent forwards these to the workers and waits for them to finish saving (its default list
# lacks SIGUSR1 and its default wait is 30 s, too short to save a large model).
TORCHRUN_FLAGS = ["--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout=600"]


class TrainingStopped(KdgridError):
    """Training stopped on a signal after saving a checkpoint; a re-run resumes from it."""


class RecordedSignal:
    """Installs handlers for STOP_SIGNALS that only remember the signal (first one wins)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> RecordedSignal:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


class StopOnSignalCallback(TrainerCallback):
    """At each optimizer step's end: if this or any other process got a stop signal, save and stop."""

    def __init__(self, received: RecordedSignal):
        self.received = received
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and _any_process(self.received.signum is not None, args.device):
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def check(self, cell: str, state) -> None:
        """Raise TrainingStopped if training stopped early on a signal (a signal during the last step or
        after training lets the run finish)."""
        if self.stopped_at is not None and state.global_step < state.max_steps:
            raise TrainingStopped(f"cell {cell}: stopped by {self.received.name or 'a signal to another process'} "
                                  f"at step {self.stopped_at} of {state.max_steps}; saved checkpoint-{self.stopped_at}, "
                                  f"a re-run of the same command resumes from it")


def _any_process(flag: bool, device) -> bool:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class SignalAtStepCallback(TrainerCallback):
    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and args.process_index == 0:
            os.kill(os.getpid(), self.signum)


class SlowStepsCallback(TrainerCallback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


def signal_hooks_from_env() -> list[TrainerCallback]:
    hooks: list[TrainerCallback] = []
    if os.environ.get(STEP_DELAY_ENV):
        hooks.append(SlowStepsCallback(float(os.environ[STEP_DELAY_ENV])))
    if os.environ.get(SIGNAL_AT_STEP_ENV):
        step, name = os.environ[SIGNAL_AT_STEP_ENV].split(":")
        hooks.append(SignalAtStepCallback(int(step), getattr(signal, f"SIG{name}")))
    return hooks
