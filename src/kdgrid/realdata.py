"""The paper's real data, from its public source: the LLM-Adapters repository.

Files (LLM-Adapters layout): `ft-training_set/math_10k.json` (Math10K),
`ft-training_set/commonsense_15k.json` (Commonsense15K) and `dataset/<task>/test.json` for the 14
test tasks. They are already LLM-Adapters records; converting them means validating and
normalising every record (`kdgrid.records`).

Integrity: the pinned table (`resources/llm_adapters.json`) holds each file's git blob id at the
pinned commit (the SHA-1 of `b"blob <size>\\0" + content`, as `git hash-object` computes it, read from
that commit's tree). Every listed file, downloaded or local, is checked against its id before it is
converted; a mismatch is an error naming the file, the expected and the found id, and leaves no file
behind. Only a file the table does not list (a task a user added) is trust-on-first-use: its first
download records its sha256 in `sha256.lock.json` beside the files, every later download must match,
and the command says so.

Two ways in:
- download: from raw.githubusercontent.com at the pinned commit, into a download directory
  (`$KDGRID_DATA_CACHE`, else `~/.cache/kdgrid/llm-adapters/<commit>`). Offline (or with
  `KDGRID_OFFLINE=1`) a download fails at once and says how to use local mode.
- local: the same files from a folder the user gives (air-gapped clusters), in the LLM-Adapters
  layout (DIR/ft-training_set/..., DIR/dataset/<task>/test.json) or flat (DIR/math_10k.json,
  DIR/<task>/test.json), checked against the same ids. A folder that is knowingly not the pinned
  files (excerpts, a user's own data in the same format) is opened with `verify=False`
  (`families.<family>.data.verify: false`): its files are read unchecked and marked unverified.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import KdgridError, unknown
from .io import atomic_path, sha256_file, write_json
from .records import validate_records

DOWNLOAD_TIMEOUT_S = 15
LOCK_NAME = "sha256.lock.json"
PIN_FILE = "kdgrid/resources/llm_adapters.json"

# How a source file was checked (SourceFile.verification)
VERIFIED = "git blob id of the pinned commit"
TRUST_ON_FIRST_USE = "trust-on-first-use (not in the pinned table)"
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class SourceFile:
    path: str  # in the repository, e.g. dataset/gsm8k/test.json
    file: Path  # where it was read
    git_blob: str  # its git blob id, as found
    verification: str  # VERIFIED, TRUST_ON_FIRST_USE or UNVERIFIED


@functools.lru_cache(maxsize=1)
def source_pin() -> dict:
    """The pinned source: repository, commit, training files and each file's git blob id (and size)."""
    text = resources.files("kdgrid").joinpath("resources/llm_adapters.json").read_text(encoding="utf-8")
    return json.loads(text)


def train_path(family: str) -> str:
    files = source_pin()["training_sets"]
    if family not in files:
        raise unknown("family", family, files)
    return files[family]


def test_path(task: str) -> str:
    return f"dataset/{task}/test.json"


def raw_url(path: str) -> str:
    pin = source_pin()
    return f"https://raw.githubusercontent.com/{pin['repository']}/{pin['commit']}/{path}"


def default_download_dir() -> Path:
    if os.environ.get("KDGRID_DATA_CACHE"):
        return Path(os.environ["KDGRID_DATA_CACHE"])
    return Path.home() / ".cache" / "kdgrid" / "llm-adapters" / source_pin()["commit"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's content: SHA-1 of b"blob <size>\\0" + content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def git_blob_id_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_blob(path: str) -> dict | None:
    """{"git_blob": id, "size": bytes or None} of repository file `path`, or None if the table lacks it."""
    return source_pin()["files"].get(path)


def check_blob(path: str, where: str, found: str, size: int, then: str) -> None:
    """Refuse `where` (a file or URL holding repository file `path`) unless `found` is the pinned id.
    `then` says what became of the file."""
    expected = pinned_blob(path)
    if found == expected["git_blob"]:
        return
    sizes = "" if expected.get("size") in (None, size) else f"; it has {size} bytes, the pinned file {expected['size']}"
    raise KdgridError(f"{where}: git blob id {found} does not match {expected['git_blob']}, the id of {path} at "
                      f"commit {source_pin()['commit']} ({PIN_FILE}){sizes}; {then}")


def note(message: str) -> None:
    print(f"kdgrid data: {message}", file=sys.stderr, flush=True)


def offline_message(url: str, reason: str) -> str:
    return (f"cannot download {url} ({reason}). On a machine without network access, copy the "
            f"LLM-Adapters files (repository {source_pin()['repository']}, commit {source_pin()['commit']}) "
            f"into a folder and use local mode: `kdgrid data prepare --source llm-adapters --local DIR ...` "
            f"(DIR/ft-training_set/<file>.json and DIR/dataset/<task>/test.json, or DIR/<file>.json and "
            f"DIR/<task>/test.json)")


def http_get(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The body of `url`; any network failure is a KdgridError that explains local mode."""
    import urllib.error
    import urllib.request

    if os.environ.get("KDGRID_OFFLINE") == "1":
        raise KdgridError(offline_message(url, "KDGRID_OFFLINE=1"))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        raise KdgridError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise KdgridError(offline_message(url, str(getattr(e, "reason", e)))) from e


def _read_lock(lock_file: Path) -> dict:
    if not lock_file.is_file():
        return {}
    try:
        lock = json.loads(lock_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KdgridError(f"{lock_file}: not valid JSON ({e})") from e
    if lock.get("commit") != source_pin()["commit"]:
        raise KdgridError(f"{lock_file}: records commit {lock.get('commit')!r}, expected {source_pin()['commit']!r}")
    return lock.get("sha256", {})


@contextmanager
def _locked(download_dir: Path):
    """Serialise fetches into one download directory (two data jobs may run at once)."""
    import fcntl

    download_dir.mkdir(parents=True, exist_ok=True)
    with open(download_dir / f".{LOCK_NAME}.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(path: str, download_dir: str | os.PathLike | None = None) -> SourceFile:
    """The local copy of repository file `path`, downloaded and verified once."""
    download_dir = Path(download_dir) if download_dir is not None else default_download_dir()
    with _locked(download_dir):
        return _fetch_locked(path, download_dir)


def _fetch_locked(path: str, download_dir: Path) -> SourceFile:
    target = download_dir / path
    if pinned_blob(path) is None:
        return _fetch_trusting_first_use(path, download_dir)
    if target.is_file():
        found = git_blob_id_file(target)
        check_blob(path, str(target), found, target.stat().st_size, "delete the file to download it again")
        return SourceFile(path, target, found, VERIFIED)
    url = raw_url(path)
    data = http_get(url)
    found = git_blob_id(data)
    check_blob(path, url, found, len(data), "nothing was written")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return SourceFile(path, target, found, VERIFIED)


def _fetch_trusting_first_use(path: str, download_dir: Path) -> SourceFile:
    lock_file = download_dir / LOCK_NAME
    lock = _read_lock(lock_file)
    expected = lock.get(path)
    origin = f"the lock file {lock_file}"
    note(f"{path} is not in the pinned table ({PIN_FILE}): trust-on-first-use, "
         + (f"checked against the sha256 of its first download in {lock_file}" if expected else
            f"this first download's sha256 is recorded in {lock_file}"))
    target = download_dir / path
    if target.is_file() and expected:
        actual = sha256_file(target)
        if actual != expected:
            raise KdgridError(f"{target}: sha256 {actual} does not match {expected} from {origin}; "
                              f"delete the file to download it again")
        return SourceFile(path, target, git_blob_id_file(target), TRUST_ON_FIRST_USE)
    url = raw_url(path)
    data = http_get(url)
    actual = sha256_bytes(data)
    if expected and actual != expected:
        raise KdgridError(f"{url}: sha256 {actual} does not match {expected} from {origin}; nothing was written")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    if not expected:
        lock[path] = actual
        write_json(lock_file, {"repository": source_pin()["repository"], "commit": source_pin()["commit"],
                               "sha256": dict(sorted(lock.items()))})
    return SourceFile(path, target, git_blob_id(data), TRUST_ON_FIRST_USE)


def _local_candidates(path: str, local_dir: Path) -> list[Path]:
    """Where `path` may be in a local folder: the LLM-Adapters layout, then the flat one."""
    return [local_dir / path, local_dir / path.removeprefix("ft-training_set/").removeprefix("dataset/")]


def find_local(path: str, local_dir: str | os.PathLike, verify: bool = True) -> SourceFile:
    """`path` inside a user's folder, in the LLM-Adapters or the flat layout, checked against its pinned
    git blob id (unless `verify` is False: a folder knowingly not the pinned files)."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise KdgridError(f"local data folder {local_dir} does not exist")
    candidates = _local_candidates(path, local_dir)
    for candidate in candidates:
        if candidate.is_file():
            found = git_blob_id_file(candidate)
            if not verify:
                note(f"{candidate}: not verified (data.verify: false), git blob id {found}")
                return SourceFile(path, candidate, found, UNVERIFIED)
            if pinned_blob(path) is None:
                note(f"{candidate}: not verified, {path} is not in the pinned table ({PIN_FILE})")
                return SourceFile(path, candidate, found, UNVERIFIED)
            check_blob(path, str(candidate), found, candidate.stat().st_size,
                       "a local copy must be the file at the pinned commit (or declare the folder "
                       "unverified: data.verify: false)")
            return SourceFile(path, candidate, found, VERIFIED)
    raise KdgridError(f"{path} not found in local folder {local_dir}; looked for "
                      + " and ".join(str(c) for c in candidates))


def load_source_file(path: str, local: str | os.PathLike | None = None,
                     download_dir: str | os.PathLike | None = None,
                     verify: bool = True) -> tuple[list[dict], SourceFile]:
    """(validated records, where and how verified) of repository file `path`, from `local` or downloaded.
    Downloads are always verified: `verify` False applies to a local folder only."""
    from .io import read_json

    if not verify and local is None:
        raise KdgridError("data.verify: false applies to a local folder (data.local); downloads at the "
                          "pinned commit are always verified")
    source = find_local(path, local, verify) if local is not None else fetch(path, download_dir)
    return validate_records(read_json(source.file), str(source.file)), source


def source_ids(paths, local: str | os.PathLike | None = None, verify: bool = True) -> dict[str, str | None]:
    """{path: git blob id} of the files data would be made from: the pinned ids (what verified data
    are exactly), or with `verify` False the ids of the local folder's files as they are now (None
    where a file is missing; preparing then fails with the reason). What a re-run decision compares."""
    ids = {}
    for path in paths:
        if verify or local is None:
            ids[path] = (pinned_blob(path) or {}).get("git_blob")
        else:
            found = [c for c in _local_candidates(path, Path(local)) if c.is_file()]
            ids[path] = git_blob_id_file(found[0]) if found else None
    return ids
