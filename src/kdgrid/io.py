"""Atomic writes: nothing half-written is ever taken for a result.

Every result file is written to a temporary path beside its target and renamed into place
once complete, so a killed job leaves either the old file or no file, never a partial one; a folder
is swapped in whole. A full disk is reported naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import KdgridError

# A temporary sits beside its target as `.<name>.<host>-<pid>.<random>.tmp`, so that a later write of
# the same target can tell the litter of a killed writer (same host, process gone) from a live one.
TMP_SUFFIX = ".tmp"
STALE_AFTER_S = 24 * 3600  # a temporary of another host is taken as litter after a day
_HOST = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname().split(".")[0]) or "host"
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths in one step


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.{_HOST}-{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Is process `pid` running on this host (one we may not signal counts as running)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer of `target` left beside it (return them); an old version
    it had set aside whole before it was killed goes back to `target` if nothing took its place."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?P<host>.+)-(?P<pid>\d+)\.[^.]+(\.old)?\.tmp$")
    removed = []
    for path in target.parent.iterdir():
        m = pattern.match(path.name)
        if not m:
            continue
        if m["host"] == _HOST:
            stale = int(m["pid"]) != os.getpid() and not process_alive(int(m["pid"]))
        else:
            try:
                stale = time.time() - path.lstat().st_mtime > STALE_AFTER_S
            except FileNotFoundError:
                continue
        if stale and path.name.endswith(".old" + TMP_SUFFIX) and not (target.exists() or target.is_symlink()):
            os.rename(path, target)  # the old version, whole, set aside by a writer killed before the swap
        elif stale:
            _remove(path)
            removed.append(path)
    return removed


def _make_readable(path: Path) -> None:
    """Give `path` (and what it holds) the modes a plain write under the umask gives: results must stay
    readable by the group, whatever mode a library wrote them with (mkstemp and safetensors use 0600)."""
    mask = _umask()
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                file = os.path.join(root, name)
                executable = os.stat(file).st_mode & 0o111
                os.chmod(file, (0o777 if executable else 0o666) & ~mask)


def _unwritable(target: Path, error: OSError):
    """The error for a folder nothing can be written to (read-only, no permission): an OSError as well,
    so that callers treating an unwritable cache as a mere miss keep doing so."""
    from .errors import KdgridError

    class UnwritableError(KdgridError, OSError):
        pass

    return UnwritableError(f"{target}: cannot write here ({error.strerror or error})")


class DiskFullError(KdgridError):
    def __init__(self, message: str, file: str):
        super().__init__(message)
        self.file = file  # the file that did not fit


def _disk_full_error(target: Path, tmp: Path, error: BaseException):
    """A DiskFullError naming `target` if `error` comes from a full disk, else None. (torch's writer reports
    a full disk as a RuntimeError such as "unexpected pos"; the free space tells.)"""
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and isinstance(error, (OSError, RuntimeError)):
        try:
            usage = shutil.disk_usage(tmp.parent)
            full = usage.free < min(1 << 20, usage.total // 20)
        except OSError:
            pass
    if isinstance(error, DiskFullError):  # a file of a folder being written: name the folder
        return DiskFullError(f"{target}: no space left on the device while writing it ({error.file} in it); "
                             "nothing was written there: free some space and run the job again", error.file)
    if not full:
        return None
    return DiskFullError(f"{target}: no space left on the device while writing it ({error}); nothing was "
                         "written there: free some space and run the job again", target.name)


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one step (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    global _renameat2
    if _renameat2 is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _renameat2 = getattr(libc, "renameat2", False)
        if _renameat2:
            _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if not _renameat2:
        return False
    import ctypes

    at_fdcwd = -100
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # a file system without exchange (NFS, some FUSE): the fallback below
    raise OSError(err, os.strerror(err), str(b))


_renameat2 = None


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put the complete folder `tmp` at `target`. Where `target` exists, the two are swapped in one step
    and the old one deleted afterwards, so that `target` is at every moment the old folder or the new
    one, whole; a kill leaves at worst the old one as a temporary that the next write removes. Without
    an exchange call, the old folder is renamed aside first (a moment without `target`, never a
    partial one)."""
    if not (target.exists() or target.is_symlink()):
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        _remove(tmp)  # now the old folder
        return
    aside = tmp.with_name(tmp.name.removesuffix(TMP_SUFFIX) + ".old" + TMP_SUFFIX)
    os.rename(target, aside)
    os.rename(tmp, target)
    _remove(aside)


def _publish_or_discard(target: Path, tmp: Path, publish, discard) -> Iterator[Path]:
    """Yield `tmp`; `publish(tmp, target)` if the block succeeds, `discard(tmp)` whatever happens to it."""
    try:
        try:
            yield tmp
        except BaseException as e:
            full = _disk_full_error(target, tmp, e)
            if full is not None:
                raise full from e
            raise
        _make_readable(tmp)
        publish(tmp, target)
    finally:
        if tmp.exists():
            discard(tmp)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` if the block succeeds."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(target)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as e:
        raise _unwritable(target, e) from e
    os.close(fd)
    yield from _publish_or_discard(target, Path(tmp), os.replace, Path.unlink)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `target`; put it at `target` if the block succeeds: `target`
    is at every moment absent, the old folder or the new one, never a partial one (see _replace_dir)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(target)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent))
    except OSError as e:
        raise _unwritable(target, e) from e
    yield from _publish_or_discard(target, tmp, _replace_dir, lambda path: shutil.rmtree(path, ignore_errors=True))


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj, indent: int | None = 2) -> None:
    write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(target: str | os.PathLike, rows) -> None:
    write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike):
    from .errors import KdgridError

    path = Path(path)
    if not path.is_file():
        raise KdgridError(f"{path}: file not found")
    try:
        return json.loads(_read_utf8(path))
    except json.JSONDecodeError as e:
        raise KdgridError(f"{path}: not valid JSON ({e})") from e


def _read_utf8(path: Path) -> str:
    from .errors import KdgridError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KdgridError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          "save it as UTF-8") from None


def read_jsonl(path: str | os.PathLike) -> list:
    from .errors import KdgridError

    path = Path(path)
    if not path.is_file():
        raise KdgridError(f"{path}: file not found")
    rows = []
    for i, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise KdgridError(f"{path}, line {i}: not valid JSON ({e})") from e
    return rows


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
