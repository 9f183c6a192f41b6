"""The models kdgrid builds itself: the embedded tiny models, by name.

Every other model is declared in config, and only there: `models.<name>` with a `hub_id` (fetched once
into `models_dir` by the workflow, `kdgrid.hub`) or a `path` (a local folder). The config's models are
the one registry of a grid (`kdgrid.grid.ModelSpec`); this module knows the tiny ones, which need no
download (`kdgrid.tiny_models` builds them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import KdgridError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    size_b: float  # parameters, in billions (exact)


def known_models() -> list[str]:
    """The tiny models' names."""
    from .tiny_models import TINY_SPECS

    return sorted(TINY_SPECS)


def get_model(name: str) -> ModelInfo:
    from .tiny_models import TINY_SPECS, tiny_param_count

    if name in TINY_SPECS:
        return ModelInfo(name, tiny_param_count(name) / 1e9)
    raise KdgridError(f"unknown tiny model {name!r}; tiny models: {', '.join(known_models())} (every other model "
                      "is declared in config: models.<name> with a hub_id or a path)")
