"""DeepSpeed and multi-process launch.

- `deepspeed_config(stage)`: the ZeRO config the command generates ("auto" values are filled by
  the HF Trainer from the run's batch sizes, clipping and precision flags). Stage 0 runs without
  DeepSpeed (plain data parallel, which is what ZeRO stage 0 is).
- `zero3_inference_engine(teacher, accelerator)`: the frozen teacher sharded with ZeRO-3 inference.
- `relaunch_under_torchrun(cfg)`: `--nproc N > 1` outside a distributed launch re-executes the same
  `kdgrid train` command under `torchrun --standalone --nproc_per_node N`.
On CPU, DeepSpeed 0.19's CPU accelerator uses gloo unless oneCCL's torch bindings are installed
(they are not a kdgrid dependency), and the HF Trainer's process group is gloo on CPU.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

from ..errors import KdgridError
from .config import TrainConfig


def in_distributed_launch() -> bool:
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def deepspeed_config(stage: int) -> dict | None:
    if stage == 0:
        return None
    zero: dict = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def zero3_inference_engine(teacher, accelerator):
    """Shard a frozen model with ZeRO-3 for inference, using the student's DeepSpeed config (the way
    TRL prepares reference and teacher models): no optimizer, buckets sized to the model."""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    hidden = getattr(teacher.config, "hidden_size", None)
    if hidden:
        config["zero_optimization"].update({
            "reduce_bucket_size": hidden * hidden,
            "stage3_param_persistence_threshold": 10 * hidden,
            "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        })
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine


CONFIG_ENV = "KDGRID_TRAIN_CONFIG"


def relaunch_under_torchrun(cfg: TrainConfig) -> None:
    """Run this same training cell as `cfg.nproc` processes under torchrun; wait for them.
    The config travels as JSON in the environment (torchrun would misread `--nproc` in an argv)."""
    from .preemption import TORCHRUN_FLAGS, RecordedSignal, TrainingStopped

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}",
               *TORCHRUN_FLAGS, "-m", "kdgrid.training.worker"]
    print(f"kdgrid train [{cfg.cell_name}]: launching {cfg.nproc} processes: {' '.join(command)}", flush=True)
    env = {**os.environ, CONFIG_ENV: json.dumps(cfg.to_dict())}
    # A scheduler's stop signal reaches every process of the job: torchrun forwards it to the workers,
    # which save and stop; this process only has to survive it and report.
    received = RecordedSignal().install()
    try:
        code = subprocess.run(command, env=env, check=False).returncode
    finally:
        received.restore()
    if code != 0 and received.signum:
        raise TrainingStopped(f"cell {cfg.cell_name}: the {cfg.nproc} processes stopped on {received.name} "
                              f"(see their messages above); a re-run resumes from the checkpoint they saved")
    if code != 0:
        raise KdgridError(f"cell {cfg.cell_name}: distributed training ({cfg.nproc} processes) failed "
                          f"with exit code {code}; see the messages above")
