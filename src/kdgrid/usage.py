"""What a job measured about itself, for its log line: wall time, peak memory, bytes on disk."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under `path` (a file's own size; 0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def cost_line(started: float, written: str | os.PathLike | None = None) -> str:
    """`cost: 12.3 s wall, peak memory 456 MB (RSS)[, wrote 7.8 MB]` since `started` (time.time())."""
    line = f"cost: {time.time() - started:.1f} s wall, peak memory {peak_rss_mb():.0f} MB (RSS)"
    if written is not None:
        line += f", wrote {folder_bytes(written) / 1e6:.1f} MB"
    return line
