"""The options of `kdgrid data prepare`, defined once (kdgrid.options): the command line, the grid's
`families.<f>.data` defaults (config="data") and kdgrid.family_data's defaults come from these fields,
and the data sources from SOURCES."""

from __future__ import annotations

from dataclasses import dataclass

from .options import option

SOURCES = ("synthetic", "llm-adapters")
# A family's data where its config names no source (the command asks for --source): the paper's.
DEFAULT_SOURCE = "llm-adapters"
# The synthetic source's sizes where none are given (llm-adapters keeps every record).
SYNTHETIC_DEFAULTS = {"n_train": 600, "n_test": 100}


@dataclass(frozen=True, kw_only=True)  # --out, required, comes last
class DataOptions:
    family: str = option(help="math or commonsense")
    source: str = option(help="synthetic (embedded tasks) or llm-adapters (the paper's data)")
    local: str | None = option(None, config="data",
                               help="llm-adapters only: read the files from this folder instead of downloading")
    download_dir: str | None = option(None, help="llm-adapters only: where downloads live, with the sha256 lock "
                                      "file of files the pinned table lacks (default $KDGRID_DATA_CACHE or "
                                      "~/.cache/kdgrid/llm-adapters/<commit>)")
    seed: int = option(0, config="data", help="synthetic: generator seed; llm-adapters: subsample seed")
    n_train: int | None = option(None, config="data", help="training records (synthetic default "
                                 f"{SYNTHETIC_DEFAULTS['n_train']}; llm-adapters: all)")
    n_test: int | None = option(None, config="data", help="test records per task (synthetic default "
                                f"{SYNTHETIC_DEFAULTS['n_test']}; llm-adapters: all)")
    tasks: str | None = option(None, help="comma-separated test tasks (default: all of the family's tasks for "
                               "the source)")
    limit_test: int | None = option(None, config="data", help="keep only the first N records of every test set")
    verify: bool = option(True, config="data",
                          help="llm-adapters with --local only: the folder is knowingly not the pinned files "
                               "(excerpts, your own data); read them unchecked and mark the data unverified")
    out: str = option(help="the family's data directory to write")

    @property
    def task_list(self) -> list[str] | None:
        return [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks else None
