"""Loading students, teachers and tokenizers; LoRA through peft; exporting the trained model as a
plain Hugging Face folder (LoRA merged) that AutoModelForCausalLM and lm-eval's HFLM load."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import KdgridError
from ..io import atomic_dir
from .config import TrainConfig


def resolve_precision(precision: str) -> str:
    """'auto' -> bf16 on a GPU that has it, else fp16 on a GPU, else fp32 (CPU)."""
    import torch

    if precision == "fp16" and not torch.cuda.is_available():
        raise KdgridError("--precision fp16 needs a GPU; use fp32 (or bf16) on CPU")
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _hub_hint(name: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return " (HF_HUB_OFFLINE is set: only local folders and models already in the hub cache load)"
    return ""


def load_tokenizer(name_or_path: str):
    """The tokenizer of a model folder or hub id, with a pad token (eos if it has none), right padding."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise KdgridError(f"cannot load the tokenizer of {name_or_path!r}{_hub_hint(name_or_path)}: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def check_tokenizers_agree(student_tokenizer, teacher_tokenizer, student: str, teacher: str) -> None:
    """Refuse a teacher whose tokenizer differs from the student's (vocabulary, merges, special ids):
    token-level KD compares distributions over the same token ids."""
    from .batches import tokenizer_fingerprint

    if tokenizer_fingerprint(student_tokenizer) != tokenizer_fingerprint(teacher_tokenizer):
        raise KdgridError(
            f"teacher {teacher!r} and student {student!r} have different tokenizers "
            f"({len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens, or different merges/special tokens); "
            f"token-level distillation needs one shared tokenizer"
        )


def load_causal_lm(name_or_path: str, dtype, role: str):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except SafetensorError as e:  # a truncated or corrupt weights file
        raise KdgridError(f"cannot load the {role} model {name_or_path!r}: its weights file "
                          f"{_weights_files(name_or_path)} is damaged ({e}); rebuild or re-download it") from e
    except (OSError, ValueError) as e:
        raise KdgridError(f"cannot load the {role} model {name_or_path!r}{_hub_hint(name_or_path)}: {e}") from e


def _weights_files(name_or_path: str) -> str:
    files = sorted(Path(name_or_path).glob("*.safetensors")) if Path(name_or_path).is_dir() else []
    return ", ".join(map(str, files)) or "model.safetensors"


def non_finite_tensors(named_tensors) -> list[str]:
    """Names of the tensors holding a NaN or an infinity."""
    import torch

    return [name for name, t in named_tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite_weights(model, what: str) -> None:
    """Refuse a model with NaN or infinite weights (a diverged training), naming it."""
    bad = non_finite_tensors(model.named_parameters())
    if bad:
        raise KdgridError(f"{what} has NaN or infinite weights in {len(bad)} tensor(s) (e.g. {bad[0]}): "
                          "its training diverged; lower its lr (or use --precision fp32) and train it again")


def apply_lora(model, cfg: TrainConfig):
    """Wrap `model` with LoRA adapters on the configured projections (the study's r=8, alpha=16)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in cfg.lora_target_modules if t not in present]
    if missing:
        raise KdgridError(f"--lora-targets: model {cfg.model!r} has no module named {', '.join(missing)}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_student(cfg: TrainConfig, precision: str):
    """The trainable student: half precision weights under LoRA or DeepSpeed (which keeps fp32
    master weights itself), fp32 weights for plain full fine-tuning (autocast does the rest)."""
    import torch
    from transformers import set_seed

    half = precision != "fp32" and (cfg.finetune == "lora" or cfg.zero_stage > 0)
    model = load_causal_lm(cfg.model, torch_dtype(precision) if half else torch.float32, "student")
    model.config.use_cache = False
    if cfg.finetune == "lora":
        set_seed(cfg.seed)  # the adapters' initialisation, identical for any world size or ZeRO stage
        model = apply_lora(model, cfg)
    return model


def load_teacher(name_or_path: str, precision: str):
    """The frozen teacher, in eval mode, in the run's compute precision."""
    model = load_causal_lm(name_or_path, torch_dtype(precision), "teacher")
    check_finite_weights(model, f"teacher {name_or_path}")
    model.requires_grad_(False)
    return model.eval()


TRAINED_WITH_FILE = "kdgrid_trained_with.json"  # in every exported model folder: its config and provenance


def check_saved_model(folder: Path, expected: set[str], cell: str) -> None:
    """What `folder` holds loads back: a config, and weight files holding exactly the `expected` tensors,
    all finite."""
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig

    AutoConfig.from_pretrained(folder)
    found = set()
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    found.add(name)
                    bad = non_finite_tensors([(name, f.get_tensor(name))])
                    if bad:
                        raise KdgridError(f"cell {cell}: the saved weights {file.name} hold NaN or infinite "
                                          f"values ({name})")
        except SafetensorError as e:
            raise KdgridError(f"cell {cell}: the saved weights {file} do not load back ({e})") from e
    if found != expected:
        raise KdgridError(f"cell {cell}: the saved weights do not hold the model's tensors (missing "
                          f"{sorted(expected - found)[:3]}, unexpected {sorted(found - expected)[:3]})")


def _save_folder(model, tokenizer, out_dir: Path, dtype, trained_with: dict, cell: str) -> None:
    """The model's folder, published only once checked: finite weights that load back, and the config it
    was trained with (TRAINED_WITH_FILE). A diverged training fails here, naming its cell, and publishes
    nothing (so a teacher's divergence fails the teacher's own SFT job)."""
    from ..io import write_json

    check_finite_weights(model, f"cell {cell}: the trained model")
    with atomic_dir(out_dir) as tmp:
        model.to(dtype).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / TRAINED_WITH_FILE, trained_with)
        check_saved_model(tmp, set(model.state_dict()) - _tied_names(model), cell)


def _tied_names(model) -> set[str]:
    """Tensors save_pretrained leaves out because they are tied to another (lm_head to the embeddings)."""
    if getattr(model.config, "tie_word_embeddings", False):
        return {name for name in model.state_dict() if name.endswith("lm_head.weight")}
    return set()


def export_trained_model(model, tokenizer, out_dir: Path, dtype, trained_with: dict | None = None,
                         cell: str | None = None) -> None:
    """Write a trained (not sharded) model to `out_dir` as a HF folder, merging LoRA in place."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    model.config.use_cache = True
    _save_folder(model, tokenizer, out_dir, dtype, trained_with or {}, cell or str(out_dir))


def export_from_state_dict(state_dict: dict, cfg: TrainConfig, tokenizer, out_dir: Path, dtype) -> None:
    """Write a model gathered from ZeRO-3 shards: rebuild the student (no sharding), load the full
    state dict into it, merge LoRA, save. Runs on one process after training."""
    import torch
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # the rebuilt copy must not be partitioned again
    model = load_causal_lm(cfg.model, torch.float32, "student")
    if cfg.finetune == "lora":
        model = apply_lora(model, cfg)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise KdgridError(f"gathered ZeRO-3 state dict does not fit {cfg.model!r}: missing "
                          f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    export_trained_model(model, tokenizer, out_dir, dtype, trained_with(cfg), cfg.cell_name)


def trained_with(cfg: TrainConfig) -> dict:
    from ..provenance import provenance

    return {"config": cfg.to_dict(), "provenance": provenance()}
