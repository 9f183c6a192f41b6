"""Hub models: fetched once into the models folder at a pinned revision, and loaded offline from then on.

`fetch_model` downloads the files a causal LM needs (config, safetensors weights, tokenizer files; no
`.bin`/`.pth`/GGUF copies, no subfolders such as Llama's `original/`) of one hub model at one commit
into a folder of its own, atomically: a failed or refused fetch leaves no folder behind. The folder
holds `kdgrid_fetch.json` (hub id, commit, files and their sizes): the revision is the folder's identity.

Revisions: `models.<name>.revision` in config pins a commit. A model without one is resolved on its
first fetch (the hub's default branch) and the commit is recorded in `revisions.lock.json` in the models
folder; every later fetch of that hub id must resolve to the same commit, or it is an error that says
how to pin or move on, so that one grid never mixes two revisions of a model.

Every checkpoint trained from a model carries the revisions it came from in `kdgrid_revisions.json`
(`model_revision`, `teacher_revision`); `revisions_of(folder)` reads either record, so evaluations and
the results table can say which revision each row used.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import KdgridError
from .io import atomic_dir, read_json, write_json

FETCH_RECORD = "kdgrid_fetch.json"  # in a fetched folder: hub_id, revision, files
REVISIONS_RECORD = "kdgrid_revisions.json"  # in a trained checkpoint: model_revision, teacher_revision
LOCK_NAME = "revisions.lock.json"
COMMIT_REGEX = r"[0-9a-f]{40}"
# Top-level files a causal LM loads from (weights only as safetensors).
NEEDED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".tiktoken", ".jinja")
BYTES_PER_PARAMETER = 2  # hub checkpoints of the study's models are bf16 safetensors
TOKEN_HELP = ("provide a token of an account that has accepted the model's licence on its hub page: "
              "`export HF_TOKEN=hf_...` or `hf auth login` on the machine Snakemake runs on (the login node)")


def estimated_bytes(size_b: float) -> int:
    """Disk a fetched model takes, estimated from its size in billions of parameters (bf16 weights)."""
    return int(size_b * 1e9 * BYTES_PER_PARAMETER)


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def fetch_record(folder: str | os.PathLike) -> dict | None:
    """What `fetch_model` wrote into `folder`, or None for a folder it did not fetch."""
    path = Path(folder) / FETCH_RECORD
    return read_json(path) if path.is_file() else None


def revisions_of(folder: str | os.PathLike | None) -> dict:
    """`{"model_revision", "teacher_revision"}` of a model folder: a fetched hub model's commit, or what a
    trained checkpoint records; None where a folder is no hub model (tiny, `path:`) or not a folder."""
    revisions = {"model_revision": None, "teacher_revision": None}
    if folder is None or not Path(folder).is_dir():
        return revisions
    fetched = fetch_record(folder)
    if fetched is not None:
        return {**revisions, "model_revision": fetched.get("revision")}
    path = Path(folder) / REVISIONS_RECORD
    if path.is_file():
        recorded = read_json(path)
        return {key: recorded.get(key) for key in revisions}
    return revisions


def write_revisions(folder: str | os.PathLike, model: str, teacher: str | None = None) -> dict:
    """Record in a trained checkpoint `folder` the revisions of the model it was trained from and of its
    teacher (the teacher's own base revision when the teacher is itself a checkpoint)."""
    revisions = {"model_revision": revisions_of(model)["model_revision"],
                 "teacher_revision": revisions_of(teacher)["model_revision"] if teacher else None}
    write_json(Path(folder) / REVISIONS_RECORD, revisions)
    return revisions


# ---------------------------------------------------------------------------------------------
# The lock file


def read_lock(lock_file: Path) -> dict[str, str]:
    if not lock_file.is_file():
        return {}
    lock = read_json(lock_file)
    if not isinstance(lock, dict) or not isinstance(lock.get("revisions"), dict):
        raise KdgridError(f"{lock_file}: expected {{\"revisions\": {{hub_id: commit}}}}")
    return lock["revisions"]


def _write_lock(lock_file: Path, revisions: dict[str, str]) -> None:
    write_json(lock_file, {"about": "commits of the hub models fetched without a pinned revision "
                                    "(kdgrid models fetch); delete an entry to move that model on",
                           "revisions": dict(sorted(revisions.items()))})


@contextmanager
def _locked(lock_file: Path):
    """Serialise read-check-write of the lock file (several fetch jobs may run at once)."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file.parent / f".{lock_file.name}.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_locked(name: str, hub_id: str, commit: str, lock_file: Path) -> str | None:
    locked = read_lock(lock_file).get(hub_id)
    if locked is not None and locked != commit:
        raise KdgridError(
            f"model {name} ({hub_id}): the hub resolves its default branch to commit {commit}, but {lock_file} "
            f"records commit {locked} from its first fetch, which the grid's results so far were made with. "
            f"To keep them, pin it: `models.{name}.revision: {locked}` in config (the hub keeps old commits). "
            f"To move to the new commit, delete {hub_id!r} from {lock_file}: every job of the model then re-runs."
        )
    return locked


# ---------------------------------------------------------------------------------------------
# Fetching


def needed_files(siblings: list[str]) -> list[str]:
    """The files of a repository a causal LM needs (top level only; safetensors weights only)."""
    return sorted(f for f in siblings if "/" not in f and f.endswith(NEEDED_SUFFIXES))


def _hub_error(name: str, hub_id: str, revision: str, endpoint: str, error: Exception) -> KdgridError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"model {name} ({hub_id})"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, GatedRepoError) or (isinstance(error, HfHubHTTPError) and status in (401, 403)):
        refused = "the hub refused the token given" if _token() else "no Hugging Face token was found"
        return KdgridError(f"{where} is gated and {refused} (HTTP {status}): {TOKEN_HELP}")
    if isinstance(error, RevisionNotFoundError):
        return KdgridError(f"{where}: the hub at {endpoint} has no revision {revision!r} "
                           f"(check models.{name}.revision)")
    if isinstance(error, RepositoryNotFoundError):
        return KdgridError(f"{where}: no such model on the hub at {endpoint} (check models.{name}.hub_id; a "
                           f"private model needs a token: {TOKEN_HELP})")
    offline = " (HF_HUB_OFFLINE is set in this shell)" if _offline() else ""
    return KdgridError(f"{where}: cannot fetch from the hub at {endpoint}{offline} ({type(error).__name__}: "
                       f"{error}). Fetch where the hub can be reached (the login node), or copy the model to a "
                       f"folder and give it as models.{name}.path")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def fetch_model(name: str, hub_id: str, out_dir: str | os.PathLike, *, lock_file: str | os.PathLike,
                revision: str | None = None, endpoint: str | None = None) -> dict:
    """Download hub model `hub_id` (config name `name`) at `revision` (a commit; None: the default
    branch, checked against and recorded in `lock_file`) into `out_dir`. Returns the fetch record.

    A folder already holding that commit is kept as it is. The token is huggingface_hub's own
    (HF_TOKEN or `hf auth login`); `endpoint` defaults to HF_ENDPOINT.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    out_dir, lock_file = Path(out_dir), Path(lock_file)
    endpoint = endpoint or constants.ENDPOINT
    if revision is not None and not re.fullmatch(COMMIT_REGEX, revision):
        raise KdgridError(f"models.{name}.revision: {revision!r} is not a commit (40 hex digits); "
                          "a branch or tag can move, a commit cannot")
    existing = fetch_record(out_dir) if out_dir.is_dir() else None
    if existing and revision and existing.get("hub_id") == hub_id and existing.get("revision") == revision:
        return existing  # a pinned commit never changes: no need to ask the hub

    wanted = revision or "main"
    try:
        info = HfApi(endpoint=endpoint).model_info(hub_id, revision=wanted, files_metadata=True)
    except Exception as e:  # every way the hub can fail, named in one message
        raise _hub_error(name, hub_id, wanted, endpoint, e) from e
    commit = info.sha
    if revision and commit != revision:
        raise KdgridError(f"model {name} ({hub_id}): asked for the pinned revision {revision}, the hub at "
                          f"{endpoint} answered with commit {commit}; nothing was fetched")
    if not revision:
        with _locked(lock_file):
            _check_locked(name, hub_id, commit, lock_file)
    if existing and existing.get("hub_id") == hub_id and existing.get("revision") == commit:
        return existing
    if info.gated and not _token():
        raise KdgridError(f"model {name} ({hub_id}) is gated and no Hugging Face token was found: {TOKEN_HELP}")

    sizes = {s.rfilename: s.size for s in info.siblings or []}
    files = needed_files(list(sizes))
    for required, what in (("config.json", "config.json"), (".safetensors", "safetensors weights")):
        if not any(f == required or f.endswith(required) for f in files):
            raise KdgridError(f"model {name} ({hub_id}) at {commit}: no {what} among its files "
                              f"({', '.join(sorted(sizes)) or 'none'}); kdgrid loads causal LMs from safetensors")

    with atomic_dir(out_dir) as tmp:
        try:
            snapshot_download(hub_id, revision=commit, allow_patterns=files, local_dir=tmp,
                              cache_dir=tmp / ".cache" / "hub", endpoint=endpoint)
        except Exception as e:
            raise _hub_error(name, hub_id, commit, endpoint, e) from e
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        for f in files:
            got = (tmp / f).stat().st_size if (tmp / f).is_file() else None
            if got is None or (sizes[f] is not None and got != sizes[f]):
                raise KdgridError(f"model {name} ({hub_id}) at {commit}: {f} arrived with {got} bytes, "
                                  f"the hub lists {sizes[f]}; nothing was kept")
        record = {"name": name, "hub_id": hub_id, "revision": commit, "pinned": revision is not None,
                  "files": {f: (tmp / f).stat().st_size for f in files},
                  "bytes": sum((tmp / f).stat().st_size for f in files)}
        write_json(tmp / FETCH_RECORD, record)
        if not revision:
            with _locked(lock_file):  # a concurrent fetch of the same hub id may have locked it meanwhile
                locked = _check_locked(name, hub_id, commit, lock_file)
                if locked is None:
                    _write_lock(lock_file, {**read_lock(lock_file), hub_id: commit})
    return record
