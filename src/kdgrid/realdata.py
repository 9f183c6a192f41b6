"""The paper's real data, from its public source: the LLM-Adapters repository.

Files (LLM-Adapters layout): `ft-training_set/math_10k.json` (Math10K),
`ft-training_set/commonsense_15k.json` (Commonsense15K) and `dataset/<task>/test.json` for the 14
test tasks. They are already LLM-Adapters records; converting them means validating and
normalising every record (`kdgrid.records`).

Two ways in:
- download: from raw.githubusercontent.com at a pinned commit (`resources/llm_adapters.json`),
  into a download directory (`$KDGRID_DATA_CACHE`, else `~/.cache/kdgrid/llm-adapters/<commit>`).
  Integrity: a file whose sha256 is in the pinned table must match it. The table holds only
  checksums computed from files actually downloaded (the project was written on a machine with no
  access to GitHub, so it ships none yet). Every other file is trust-on-first-use: the first download
  records its sha256 in `sha256.lock.json` beside the files, and every later download must match it.
  A mismatch is an error and leaves no file behind. Share or commit the lock file to pin your copy.
  Offline (or with `KDGRID_OFFLINE=1`) a download fails at once and says how to use local mode.
- local: the same files from a folder the user gives (air-gapped clusters), in the LLM-Adapters
  layout (DIR/ft-training_set/..., DIR/dataset/<task>/test.json) or flat (DIR/math_10k.json,
  DIR/<task>/test.json). Pinned checksums are checked there too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from .errors import KdgridError, unknown
from .io import atomic_path, sha256_file, write_json
from .records import validate_records

DOWNLOAD_TIMEOUT_S = 15
LOCK_NAME = "sha256.lock.json"


@functools.lru_cache(maxsize=1)
def source_pin() -> dict:
    """The pinned source: repository, commit, training files and known sha256 checksums."""
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


def _expected_sha256(path: str, lock: dict) -> tuple[str | None, str]:
    """(expected checksum or None, where it comes from)."""
    pinned = source_pin()["sha256"].get(path)
    if pinned:
        return pinned, "the pinned table (kdgrid/resources/llm_adapters.json)"
    return lock.get(path), f"the lock file {LOCK_NAME}"


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


def fetch(path: str, download_dir: str | os.PathLike | None = None) -> Path:
    """The local copy of repository file `path`, downloaded and verified once."""
    download_dir = Path(download_dir) if download_dir is not None else default_download_dir()
    with _locked(download_dir):
        return _fetch_locked(path, download_dir)


def _fetch_locked(path: str, download_dir: Path) -> Path:
    lock_file = download_dir / LOCK_NAME
    lock = _read_lock(lock_file)
    expected, origin = _expected_sha256(path, lock)
    target = download_dir / path
    if target.is_file():
        actual = sha256_file(target)
        if expected and actual != expected:
            raise KdgridError(f"{target}: sha256 {actual} does not match {expected} from {origin}; "
                              f"delete the file to download it again")
        if expected:
            return target
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
    return target


def find_local(path: str, local_dir: str | os.PathLike) -> Path:
    """`path` inside a user's folder, in the LLM-Adapters or the flat layout; pinned checksums checked."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise KdgridError(f"local data folder {local_dir} does not exist")
    flat = path.removeprefix("ft-training_set/").removeprefix("dataset/")
    candidates = [local_dir / path, local_dir / flat]
    for candidate in candidates:
        if candidate.is_file():
            pinned = source_pin()["sha256"].get(path)
            if pinned and sha256_file(candidate) != pinned:
                raise KdgridError(f"{candidate}: sha256 {sha256_file(candidate)} does not match the pinned {pinned}")
            return candidate
    raise KdgridError(f"{path} not found in local folder {local_dir}; looked for "
                      + " and ".join(str(c) for c in candidates))


def load_source_file(path: str, local: str | os.PathLike | None = None,
                     download_dir: str | os.PathLike | None = None) -> tuple[list[dict], Path]:
    """(validated records, file read) of repository file `path`, from `local` or downloaded."""
    from .io import read_json

    file = find_local(path, local) if local is not None else fetch(path, download_dir)
    return validate_records(read_json(file), str(file)), file
