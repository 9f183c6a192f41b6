"""Train one cell: `train(cfg)` is what `kdgrid train` runs, from config to the exported model.

Layout of a cell folder CELL_DIR:
  model/             the trained model, a HF folder (LoRA merged), written atomically at the end;
  train_log.jsonl    config line, one line per optimizer step, resume events, a final line;
  checkpoints/       resumable Trainer checkpoints (+ the in-progress log), removed once model/ and
                     train_log.jsonl are published (kept with --keep-checkpoints).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import KdgridError
from ..hub import revisions_of, write_revisions
from ..io import read_jsonl, write_jsonl, write_text
from ..provenance import provenance
from .config import TrainConfig

CONFIG_FILE = "kdgrid_train_config.json"
PROGRESS_LOG = "train_log.jsonl"


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """Checkpoint folders the Trainer finished writing (trainer_state.json is written last), oldest first."""
    if not checkpoints.is_dir():
        return []
    found = []
    for path in checkpoints.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(step), path))
    return [p for _, p in sorted(found)]


def prepare_checkpoints(cfg: TrainConfig, checkpoints: Path) -> tuple[Path | None, str]:
    """(checkpoint to resume from or None, why). Checkpoints of a different config are discarded,
    as are half-written ones (a job killed while saving). Runs on the main process only."""
    config_file = checkpoints / CONFIG_FILE
    wanted = json.dumps(cfg.identity(), sort_keys=True)
    if checkpoints.is_dir():
        saved = config_file.read_text(encoding="utf-8") if config_file.is_file() else None
        if saved != wanted:
            shutil.rmtree(checkpoints)
            why = "checkpoints of a different configuration discarded" if saved else "fresh start"
            checkpoints.mkdir(parents=True)
            write_text(config_file, wanted)
            return None, why
        complete = complete_checkpoints(checkpoints)
        for path in checkpoints.glob("checkpoint-*"):
            if path not in complete[-1:]:
                shutil.rmtree(path)
        if complete:
            return complete[-1], f"resuming from {complete[-1].name}"
        return None, "fresh start (no complete checkpoint)"
    checkpoints.mkdir(parents=True)
    write_text(config_file, wanted)
    return None, "fresh start"


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def accumulation_per_process(grad_accum: int, processes: int) -> int:
    """--grad-accum counts micro-batches of the whole job, so the effective batch (micro x accumulation,
    16 in the study) stays the same however many processes share it, as LLM-Adapters' trainer does."""
    if grad_accum % processes:
        raise KdgridError(f"--grad-accum {grad_accum} is not divisible by the {processes} processes of this job: "
                          f"the effective batch micro x accumulation would change; pick a multiple of {processes} "
                          f"(and a smaller --micro-batch-size to keep the batch)")
    return grad_accum // processes


def training_arguments(cfg: TrainConfig, precision: str, checkpoints: Path):
    import torch
    from transformers import TrainingArguments

    from .distributed import deepspeed_config, world_size

    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accumulation_per_process(cfg.grad_accum, world_size()),
        learning_rate=cfg.lr,
        lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        deepspeed=deepspeed_config(cfg.zero_stage),
        ddp_backend=None if on_gpu or world_size() == 1 else "gloo",
        ddp_find_unused_parameters=False,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN loss must reach the log (and stop the job), not be averaged away
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        report_to=[],
        remove_unused_columns=False,  # the collator's example_index, kd_mask and prompt_len reach the loss
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def _resolved_model(name: str, role: str) -> str:
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise KdgridError(f"--{role} {name}: a folder without config.json is not a Hugging Face model")
    return name


def train(cfg: TrainConfig) -> None:
    cfg.validate()
    if not Path(cfg.data).is_file():
        raise KdgridError(f"--data {cfg.data}: file not found")
    _resolved_model(cfg.model, "model")
    if cfg.teacher:
        _resolved_model(cfg.teacher, "teacher")

    from .distributed import in_distributed_launch, relaunch_under_torchrun

    if cfg.nproc > 1 and not in_distributed_launch():
        relaunch_under_torchrun(cfg)
        return
    from .preemption import RecordedSignal

    received = RecordedSignal().install()  # from here on, SIGTERM/SIGUSR1 means "checkpoint and stop"
    try:
        _train_in_this_process(cfg, received)
    finally:
        received.restore()


def _train_in_this_process(cfg: TrainConfig, received) -> None:
    import torch
    from transformers import set_seed

    from ..family_data import read_data_verified
    from . import model_io
    from .batches import Collator, ExampleDataset, load_tokenized
    from .callbacks import NonFiniteLossCallback, StepLogCallback, crash_hooks_from_env
    from .distributed import deepspeed_config
    from .preemption import StopOnSignalCallback, signal_hooks_from_env
    from .trainer import KDTrainer

    started = time.time()
    stop_on_signal = StopOnSignalCallback(received)
    out = Path(cfg.out)
    checkpoints, model_dir, final_log = out / "checkpoints", out / "model", out / "train_log.jsonl"
    progress_log = checkpoints / PROGRESS_LOG
    precision = model_io.resolve_precision(cfg.precision)
    args = training_arguments(cfg, precision, checkpoints)
    _ = args.device  # starts the process group of a distributed launch
    if cfg.zero_stage > 0:
        import deepspeed

        deepspeed.init_distributed()  # deepspeed.comm on that group: ZeRO-3 loading partitions over it
    is_main = args.process_index == 0
    # the data and tokenizers are checked before checkpoints/ exists: bad input leaves nothing behind
    tokenizer = model_io.load_tokenizer(cfg.model)
    source = cfg.teacher_source
    if cfg.teacher and cfg.uses_teacher:
        model_io.check_tokenizers_agree(tokenizer, model_io.load_tokenizer(cfg.teacher), cfg.model, cfg.teacher)
    with args.main_process_first(desc="tokenise the training data"):
        examples, from_cache = load_tokenized(cfg.data, tokenizer, cfg.cutoff, cfg.token_scope)

    why = prepare_checkpoints(cfg, checkpoints)[1] if is_main else ""
    _barrier()
    complete = complete_checkpoints(checkpoints)
    resume = complete[-1] if complete else None

    truncated = sum(e["truncated"] for e in examples)
    set_seed(cfg.seed)
    student = model_io.load_student(cfg, precision)
    student_width = student.config.vocab_size
    teacher_cache = open_teacher_cache(cfg, examples, tokenizer, student_width) if source == "cache" else None
    # a cache with its teacher at hand is measured against it on the first step (KDTrainer's CacheCheck)
    teacher = model_io.load_teacher(cfg.teacher, precision) if source == "model" or cfg.checks_cache else None
    decided = previous_teacher_signal(progress_log) if resume is not None else None

    def record_signal(row: dict) -> None:
        if is_main:
            with open(progress_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(f"kdgrid train [{cfg.cell_name}]: teacher signal: {row['teacher_signal']} ({row['reason']})", flush=True)

    trainer = KDTrainer(
        model=student,
        args=args,
        train_dataset=ExampleDataset(examples),
        data_collator=Collator(tokenizer.pad_token_id),
        callbacks=[StepLogCallback(progress_log, is_main), NonFiniteLossCallback(cfg.cell_name),
                   *crash_hooks_from_env(), *signal_hooks_from_env(), stop_on_signal],
        cfg=cfg,
        teacher=teacher,
        teacher_cache=teacher_cache,
        student_width=student_width,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        teacher_signal=decided,
        on_teacher_signal=record_signal,
    )

    teacher_line = {"none": "no teacher (cross-entropy)", "model": f"teacher model {cfg.teacher} run online",
                    "cache": f"teacher-output cache {cfg.teacher_cache}"}[source]
    if cfg.checks_cache:
        teacher_line += (f", checked against teacher model {cfg.teacher} on the first step (tolerance "
                         f"{cfg.cache_tolerance:.3%} for {cfg.method})")
    elif source == "cache":
        teacher_line += " (unchecked: no --teacher to measure it against)"
    if is_main:
        print(f"kdgrid train [{cfg.cell_name}]: {cfg.mode} {cfg.method or ''} | teacher source: {teacher_line} | "
              f"{why} | {len(examples)} examples ({'tokenised-data cache hit' if from_cache else 'tokenised'}), "
              f"{truncated} truncated at the cutoff of {cfg.cutoff} tokens | "
              f"{args.world_size} process(es), ZeRO stage {cfg.zero_stage}, {precision}", flush=True)
        header = {"event": "config", "config": cfg.to_dict(), "provenance": provenance(), "teacher_source": source,
                  "teacher": teacher_line, **revisions_of_cell(cfg),
                  "precision": precision, "world_size": args.world_size,
                  "deepspeed": deepspeed_config(cfg.zero_stage), "examples": len(examples),
                  "truncated_examples": truncated,
                  "tokenized_cache_hit": from_cache,
                  "data_verified": read_data_verified(Path(cfg.data).parent)}
        if resume is None:
            write_jsonl(progress_log, [header])
        else:
            step = int(resume.name.removeprefix("checkpoint-"))
            rows = [r for r in read_jsonl(progress_log) if r.get("step", 0) <= step] if progress_log.is_file() \
                else [header]
            write_jsonl(progress_log, rows + [{"event": "resume", "from_step": step, "checkpoint": resume.name}])
        if resume is None and source == "model":
            record_signal({"event": "teacher_signal", "teacher_signal": "online",
                           "reason": "no teacher-output cache for this cell" if not cfg.teacher_cache else
                           "the cache cannot stand in for the teacher (on-policy GKD or teacher noise)"})
        elif resume is None and source == "cache" and not cfg.checks_cache:
            record_signal({"event": "teacher_signal", "teacher_signal": "cache",
                           "reason": "unchecked: no --teacher to measure the cache against"})

    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    stop_on_signal.check(cfg.cell_name, trainer.state)
    if trainer.cache_check is not None:  # a run shorter than one optimizer step: decide on what it saw
        trainer.teacher_signal = trainer.cache_check.decide(trainer._all_reduce)
        record_signal(trainer.teacher_signal)
    _export(trainer, cfg, tokenizer, model_dir, precision, is_main)
    if is_main:
        from ..usage import folder_bytes, peak_rss_mb

        write_revisions(model_dir, cfg.model, cfg.teacher if cfg.teacher and cfg.uses_teacher else None)
        rows = read_jsonl(progress_log)
        steps = [r for r in rows if "step" in r]
        losses = [r["loss"] for r in steps]
        done = {"event": "done", "steps": trainer.state.global_step, "mean_loss": sum(losses) / max(len(losses), 1),
                "teacher_signal": (trainer.teacher_signal or {}).get("teacher_signal"),
                "last_session_wall_s": round(time.time() - started, 2),
                "tokens": sum(r.get("tokens") or 0 for r in steps),
                "peak_memory_mb": max((r.get("memory_mb") or 0 for r in steps), default=0),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "checkpoint_bytes": folder_bytes(checkpoints), "model_bytes": folder_bytes(model_dir)}
        rows.append(done)
        write_jsonl(final_log, rows)
        if not cfg.keep_checkpoints:  # only now: model/ and the log are published, nothing needs to resume
            shutil.rmtree(checkpoints, ignore_errors=True)
        print(f"kdgrid train [{cfg.cell_name}]: wrote {model_dir} after {trainer.state.global_step} steps | "
              f"cost: {done['last_session_wall_s']:.1f} s wall (this session), {done['tokens']:,} tokens trained, "
              f"peak memory {done['peak_memory_mb']:.0f} MB, model {done['model_bytes'] / 1e6:.1f} MB, "
              f"checkpoints {done['checkpoint_bytes'] / 1e6:.1f} MB "
              f"({'kept' if cfg.keep_checkpoints else 'removed'})", flush=True)
    _barrier()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def revisions_of_cell(cfg: TrainConfig) -> dict:
    """The hub revisions a cell trains from: its model's, and its teacher's (a teacher checkpoint
    carries its own base model's revision)."""
    teacher = cfg.teacher if cfg.teacher and cfg.uses_teacher else None
    return {"model_revision": revisions_of(cfg.model)["model_revision"],
            "teacher_revision": revisions_of(teacher)["model_revision"] if teacher else None}


def previous_teacher_signal(progress_log: Path) -> dict | None:
    """The cache decision a resumed run took before it was stopped (kept for the rest of the run)."""
    if not progress_log.is_file():
        return None
    signals = [r for r in read_jsonl(progress_log) if r.get("event") == "teacher_signal"]
    return signals[-1] if signals else None


def teacher_signal_of(train_log: Path) -> dict | None:
    """The teacher signal a finished cell trained on (its train_log.jsonl): cache|online and why."""
    return previous_teacher_signal(Path(train_log))


def open_teacher_cache(cfg: TrainConfig, examples: list[dict], tokenizer, student_width: int):
    """The teacher-output cache, checked against this cell's tokenizer, examples, temperature and
    vocabulary width."""
    import math

    from ..teacher_cache import TeacherCache
    from .batches import tokenizer_fingerprint

    cache = TeacherCache.load(cfg.teacher_cache)
    fingerprint = cache.meta.get("tokenizer_fingerprint")
    if fingerprint and fingerprint != tokenizer_fingerprint(tokenizer):
        raise KdgridError(f"{cfg.teacher_cache}: made with a tokenizer other than the student's ({cfg.model}); "
                          f"token-level distillation needs one shared tokenizer")
    cache.check_examples([e["input_ids"] for e in examples])
    if not any(math.isclose(t, cfg.temperature) for t in cache.temperatures):
        raise KdgridError(f"{cfg.teacher_cache}: no teacher outputs at --temperature {cfg.temperature} "
                          f"(cached: {', '.join(map(str, cache.temperatures))})")
    width = min(student_width, cache.vocab_width)
    if width not in cache.widths:
        raise KdgridError(f"{cfg.teacher_cache}: no teacher outputs at the student's vocabulary width {width} "
                          f"(cached widths: {', '.join(map(str, cache.widths))})")
    return cache


def _export(trainer, cfg: TrainConfig, tokenizer, model_dir: Path, precision: str, is_main: bool) -> None:
    from . import model_io

    dtype = model_io.torch_dtype(precision)
    if trainer.is_deepspeed_enabled and cfg.zero_stage == 3:
        state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed)  # gathered on the main process
        if is_main:
            model_io.export_from_state_dict(state_dict, cfg, tokenizer, model_dir, dtype)
    elif is_main:
        model_io.export_trained_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer, model_dir, dtype,
                                      model_io.trained_with(cfg), cfg.cell_name)
    _barrier()
