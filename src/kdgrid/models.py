"""Model names the grid knows: the study's hub models and the embedded tiny models.

Config refers to every model by a short name (`Qwen2.5-0.5B`, `tiny-xs`); this module maps a name to
where its weights come from and its size in billions of parameters. Tiny models are built locally by
`kdgrid.tiny_models` (no hub), hub models are loaded by their hub id or from a local mirror.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import unknown


@dataclass(frozen=True)
class ModelInfo:
    name: str
    size_b: float  # parameters, in billions (nominal for hub models, exact for tiny ones)
    hub_id: str | None = None  # None for tiny models
    lineage: str = "qwen2.5"  # models of one lineage share a tokenizer


HUB_MODELS = {
    m.name: m
    for m in [
        ModelInfo("Qwen2.5-0.5B", 0.5, "Qwen/Qwen2.5-0.5B"),
        ModelInfo("Qwen2.5-1.5B", 1.5, "Qwen/Qwen2.5-1.5B"),
        ModelInfo("Qwen2.5-3B", 3.0, "Qwen/Qwen2.5-3B"),
        ModelInfo("Qwen2.5-7B", 7.0, "Qwen/Qwen2.5-7B"),
        ModelInfo("Qwen2.5-14B", 14.0, "Qwen/Qwen2.5-14B"),
        ModelInfo("Llama-3.2-1B", 1.0, "meta-llama/Llama-3.2-1B", "llama3"),
        ModelInfo("Llama-3.2-3B", 3.0, "meta-llama/Llama-3.2-3B", "llama3"),
        ModelInfo("Llama-3.1-8B", 8.0, "meta-llama/Llama-3.1-8B", "llama3"),
    ]
}


def known_models() -> list[str]:
    from .tiny_models import TINY_SPECS

    return sorted(HUB_MODELS) + sorted(TINY_SPECS)


def get_model(name: str) -> ModelInfo:
    from .tiny_models import TINY_SPECS, tiny_param_count

    if name in HUB_MODELS:
        return HUB_MODELS[name]
    if name in TINY_SPECS:
        return ModelInfo(name, tiny_param_count(name) / 1e9, None, "tiny")
    raise unknown("model", name, known_models())


def is_tiny(name: str) -> bool:
    return get_model(name).hub_id is None
