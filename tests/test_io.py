"""Atomic writes: the result appears whole or not at all, with ordinary permissions."""

import os
import stat

import pytest

from kdgrid.io import atomic_dir, atomic_path, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out" / "scores.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_results_are_readable_like_any_file_the_user_writes(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "scores.json", {"a": 1})
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "scores.json") == 0o644
    assert _mode(tmp_path / "model") == 0o755
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
