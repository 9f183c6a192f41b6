"""The options of `kdgrid evaluate`, defined once: the command line, the grid's `evaluation:` defaults
and flags (config="evaluation"), the checks and docs/evaluation.md's table come from these fields."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from ..tasks import FAMILIES

ANSWER_RULES = ("paper", "strict")


@dataclass(frozen=True)
class EvaluateOptions:
    model: str = option(help="checkpoint folder, hub model name or hub id")
    data_dir: str = option(help="the family's data folder (holds test/<task>.json)")
    family: str = option(choices=FAMILIES, help="the family whose tasks --data-dir holds")
    out: str = option(help="evaluation folder to write")
    tasks: str | None = option(None, help="comma-separated tasks (default: every test set of the family)")
    # the grid passes these four in this order
    max_new_tokens: int = option(256, gt=0, config="evaluation", help="most tokens generated per item")
    batch_size: int = option(16, gt=0, config="evaluation", help="items per generation batch")
    seed: int = option(1234, ge=0, config="evaluation", help="lm-eval's seeds (the draws of --sampling)")
    sampling: bool = option(False, config="evaluation", help="the paper's sampling (temperature 1, top_p 1, "
                            "top_k 0) instead of greedy decoding")
    limit: int | None = option(None, gt=0, config="evaluation",
                               help="score only the first N items of each task (for tests)")
    device: str | None = option(None, help="cpu or cuda (default: cuda when available)")
    threads: int | None = option(None, gt=0, help="torch CPU threads (default: torch's own choice)")
    dtype: str = option("auto", help="model dtype for HFLM (auto, bfloat16, float32...)")
    rule: str = option("paper", choices=ANSWER_RULES,
                       help="answer rule for letter tasks: the paper's first A-E (default) or a stricter one")
    meta: tuple[str, ...] = option((), metavar="KEY=VALUE", help="labels copied into scores.json")

    @property
    def task_list(self) -> list[str] | None:
        return [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks else None
