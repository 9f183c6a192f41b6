"""Prepare a family's data directory: `train.json` and `test/<task>.json` (docs/architecture.md).

Sources:
- `synthetic`: the embedded tasks of `kdgrid.synthetic`, generated from `seed`
  (`n_train` training records mixing the family's tasks, `n_test` records per test task);
- `llm-adapters`: the paper's Math10K / Commonsense15K and its test sets (`kdgrid.realdata`),
  downloaded at a pinned commit or read from `local`; `n_train`, if given, keeps a seeded random
  subset of the training set (in its original order), and `n_test` the first records of each test set.

`limit_test` keeps the first N records of every test set (a quick look at a big grid). A
`source.json` beside the data records where it came from: for llm-adapters each source file's sha256,
git blob id and how it was verified, and `data_verified` (true: every file matched the pinned
commit's blob id; false: some did not get that check; null: synthetic). The directory is written whole, atomically;
an existing one is replaced only if it holds a `source.json` (was made by this function).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .data_options import SOURCES, SYNTHETIC_DEFAULTS, DataOptions
from .errors import KdgridError, unknown
from .grid.layout import TRAIN_FILE
from .io import atomic_dir, write_json
from .tasks import FAMILIES, tasks_of


def family_tasks(family: str, source: str) -> list[str]:
    """The test tasks a source provides for a family."""
    if source not in SOURCES:
        raise unknown("data source", source, SOURCES)
    return [t.name for t in tasks_of(family, synthetic=source == "synthetic")]


def _choose_tasks(family: str, source: str, tasks) -> list[str]:
    known = family_tasks(family, source)
    if not tasks:
        return known
    for task in tasks:
        if task not in known:
            raise unknown(f"{source} {family} task", task, known)
    return list(tasks)


def _check_count(name: str, value) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise KdgridError(f"{name} must be a non-negative integer, got {value!r}")


def _synthetic(family, seed, n_train, n_test, tasks):
    from .synthetic import generate_family

    n_train = SYNTHETIC_DEFAULTS["n_train"] if n_train is None else n_train
    n_test = SYNTHETIC_DEFAULTS["n_test"] if n_test is None else n_test
    train, tests = generate_family(family, seed, n_train, n_test, tasks)
    about = {"generator": "kdgrid.synthetic", "seed": seed, "n_train": n_train, "n_test": n_test}
    return train, tests, about


def _llm_adapters(family, seed, n_train, n_test, tasks, local, download_dir, verify):
    from .io import sha256_file
    from .realdata import load_source_file, source_pin, test_path, train_path

    sources = []
    train, source = load_source_file(train_path(family), local, download_dir, verify)
    sources.append(source)
    if n_train is not None and n_train < len(train):
        keep = sorted(random.Random(f"kdgrid-llm-adapters-{family}-{seed}").sample(range(len(train)), n_train))
        train = [train[i] for i in keep]
    tests = {}
    for task in tasks:
        records, source = load_source_file(test_path(task), local, download_dir, verify)
        sources.append(source)
        tests[task] = records if n_test is None else records[:n_test]
    about = {"repository": source_pin()["repository"], "commit": source_pin()["commit"],
             "local": str(local) if local is not None else None, "verify": verify, "seed": seed,
             "n_train": n_train, "n_test": n_test,
             "sha256": {s.path: sha256_file(s.file) for s in sources},
             "git_blob": {s.path: s.git_blob for s in sources},
             "verification": {s.path: s.verification for s in sources}}
    return train, tests, about


def data_verified(about: dict) -> bool | None:
    """True when every source file matched its pinned git blob id, False when any did not get that
    check (unverified or trust-on-first-use), None for synthetic data (generated here, not downloaded)."""
    from .realdata import VERIFIED

    if "verification" not in about:
        return None
    return all(how == VERIFIED for how in about["verification"].values())


def read_data_verified(data_dir: str | os.PathLike) -> bool | None:
    """`data_verified` of a prepared data directory's source.json (None if it has none)."""
    from .io import read_json

    source = Path(data_dir) / "source.json"
    return read_json(source).get("data_verified") if source.is_file() else None


def prepare_family(family: str, source: str, out_dir: str | os.PathLike, seed: int = DataOptions.seed,
                   n_train: int | None = None, n_test: int | None = None, tasks=None,
                   local: str | os.PathLike | None = None, limit_test: int | None = None,
                   download_dir: str | os.PathLike | None = None, verify: bool = DataOptions.verify) -> Path:
    """Write `out_dir/train.json`, `out_dir/test/<task>.json` and `out_dir/source.json`; return `out_dir`.
    `verify` False (llm-adapters, local folder only) reads files that are knowingly not the pinned ones."""
    if family not in FAMILIES:
        raise unknown("family", family, FAMILIES)
    tasks = _choose_tasks(family, source, tasks)
    for name, value in (("n_train", n_train), ("n_test", n_test), ("limit_test", limit_test)):
        _check_count(name, value)
    if local is not None and source != "llm-adapters":
        raise KdgridError(f"--local reads the LLM-Adapters files; it does not apply to source {source!r}")
    if not verify and (source != "llm-adapters" or local is None):
        raise KdgridError("data.verify: false (--no-verify) declares a local LLM-Adapters folder unverified; "
                          "it applies only with --source llm-adapters and --local (downloads are always verified)")
    if source == "synthetic":
        train, tests, about = _synthetic(family, seed, n_train, n_test, tasks)
    else:
        train, tests, about = _llm_adapters(family, seed, n_train, n_test, tasks, local, download_dir, verify)
    if limit_test is not None:
        tests = {task: records[:limit_test] for task, records in tests.items()}
    if not train:
        raise KdgridError(f"{family} ({source}): the training set is empty")
    for task, records in tests.items():
        if not records:
            raise KdgridError(f"{family} ({source}): the test set of {task} is empty")

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "source.json").is_file():
        raise KdgridError(f"{out_dir} exists and is not a kdgrid data directory (no source.json); "
                          f"refusing to replace it")
    with atomic_dir(out_dir) as tmp:  # the whole directory appears at once, or not at all
        write_json(tmp / TRAIN_FILE, train)
        for task, records in tests.items():
            write_json(tmp / "test" / f"{task}.json", records)
        write_json(tmp / "source.json", {"family": family, "source": source, "tasks": list(tests),
                                         "n_train": len(train), "n_test": {t: len(r) for t, r in tests.items()},
                                         "data_verified": data_verified(about), "details": about})
    return out_dir
