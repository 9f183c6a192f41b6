"""Content fingerprints of folder inputs (a `path:` model, a prepared test-set folder).

Snakemake judges a folder input by its timestamp only: rewriting a file inside it (new weights, an
edited gold answer) changes nothing Snakemake looks at, so nothing re-runs. The workflow therefore
stands a small *stamp* file in for each folder input (`<outdir>/fingerprints/<kind>/<name>.json`)
holding a hash of the folder's content, and rules take the stamp as input. A stamp is rewritten only
when the content hash changes, so Snakemake sees a new, different file exactly when the folder's
content changed; touching a file, or replacing it by an identical copy, leaves the stamp as it was.

Cost: a folder's hash is the hash of its files' (relative path, sha256) list. File hashes are cached
in `<outdir>/fingerprints/cache.json`, keyed by (path, size, mtime_ns, inode): after the first
pass (about 1 s per GB), a parse only stats the files. A file rewritten in place gets a new mtime,
one replaced by another (`mv`, `cp -p`, `rsync -a`) a new inode, so the key catches every ordinary
change; only a deliberate write that restores size, mtime and inode would go unseen. Entries whose
name starts with "." (hub download caches, temporary files) are not part of a folder's content.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import KdgridError
from .io import sha256_file, write_json


def _content_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
    return files


def _load_cache(cache_file: Path | None) -> dict:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a damaged cache costs a re-hash, never a wrong answer
    return cache if isinstance(cache, dict) else {}


def folder_fingerprint(folder: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> str:
    """The sha256 of a folder's content: its files' relative paths and their sha256 (not their times)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KdgridError(f"{folder}: folder not found (its content fingerprint cannot be taken)")
    cache_file = Path(cache_file) if cache_file is not None else None
    cache = _load_cache(cache_file)
    changed = False
    digest = hashlib.sha256()
    for file in _content_files(folder):
        st = file.stat()
        path = str(file.resolve())
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = cache.get(path)
        if entry and entry.get("key") == key:
            file_hash = entry["sha256"]
        else:
            file_hash = sha256_file(file)
            cache[path] = {"key": key, "sha256": file_hash}
            changed = True
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file_hash}\n".encode())
    if changed and cache_file is not None:
        write_json(cache_file, cache, indent=None)
    return digest.hexdigest()


def _latest_mtime_ns(folder: Path) -> int:
    """The latest timestamp of the folder and of every entry in it, hidden ones included."""
    latest = folder.stat().st_mtime_ns
    for root, dirs, names in os.walk(folder, followlinks=True):
        for name in dirs + names:
            latest = max(latest, os.stat(os.path.join(root, name)).st_mtime_ns)
    return latest


def read_stamp(stamp: str | os.PathLike) -> str | None:
    try:
        return json.loads(Path(stamp).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def write_stamp(folder: str | os.PathLike, stamp: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> bool:
    """Write `stamp` for `folder` unless it already holds the folder's fingerprint; True if written.

    A stamp left as it was but older than its folder or anything in it (a touched file, Snakemake's
    `.snakemake_timestamp` of a directory output) gets its timestamp renewed, so that Snakemake, which
    judges the folder by those timestamps, does not ask rule fingerprint_folder for a new stamp."""
    stamp = Path(stamp)
    fingerprint = folder_fingerprint(folder, cache_file)
    if read_stamp(stamp) == fingerprint:
        if _latest_mtime_ns(Path(folder)) > stamp.stat().st_mtime_ns:
            os.utime(stamp)
        return False
    write_json(stamp, {"fingerprint": fingerprint})
    return True


def refresh_stamps(stamps: dict[str, str], cache_file: str | os.PathLike | None = None) -> list[str]:
    """At workflow parse time: renew every stamp (path -> folder) whose folder exists; the stamps of
    folders the workflow has yet to make are written by their rule. Returns the stamps rewritten."""
    return [stamp for stamp, folder in stamps.items()
            if os.path.isdir(folder) and write_stamp(folder, stamp, cache_file)]
