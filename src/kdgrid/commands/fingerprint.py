"""`kdgrid fingerprint`: write the content stamp of a folder input (kdgrid.fingerprint)."""

from __future__ import annotations

HELP = "Write a folder's content fingerprint (the hash of its files' paths and contents) to a stamp file."


def add_arguments(p) -> None:
    p.add_argument("folder", help="the folder (a model folder, a prepared test-set folder)")
    p.add_argument("--out", required=True, help="the stamp file (JSON), rewritten only if the content changed")
    p.add_argument("--cache", help="the file-hash cache, keyed by (path, size, mtime_ns, inode)")


def run(args) -> int:
    from ..fingerprint import read_stamp, write_stamp

    written = write_stamp(args.folder, args.out, args.cache)
    print(f"{args.folder}: {read_stamp(args.out)} ({'written' if written else 'unchanged'})")
    return 0
