"""Content fingerprints of folder inputs (kdgrid.fingerprint): content in, timestamps out, and a cache
that hashes each file once."""

import json
import os

import pytest

from kdgrid import fingerprint as fp
from kdgrid.cli import main
from kdgrid.errors import KdgridError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "model.safetensors").write_bytes(b"\x00" * 4096)
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_the_fingerprint_follows_content_not_timestamps(folder):
    before = fp.folder_fingerprint(folder)
    for file in folder.rglob("*"):
        os.utime(file, ns=(1, 1))
    assert fp.folder_fingerprint(folder) == before
    (folder / "model.safetensors").write_bytes(b"\x00" * 4095 + b"\x01")
    changed = fp.folder_fingerprint(folder)
    assert changed != before
    (folder / "sub" / "tokenizer.json").rename(folder / "sub" / "tokenizer2.json")
    assert fp.folder_fingerprint(folder) not in (before, changed)


def test_hidden_entries_are_not_content(folder):
    before = fp.folder_fingerprint(folder)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "download.metadata").write_text("x")
    (folder / ".model.safetensors.tmp").write_text("partial")
    assert fp.folder_fingerprint(folder) == before


def test_the_cache_hashes_each_file_once_and_sees_every_ordinary_change(folder, tmp_path, monkeypatch):
    cache = tmp_path / "fingerprints" / "cache.json"
    hashed = []
    real_hash = fp.sha256_file
    monkeypatch.setattr(fp, "sha256_file", lambda path: hashed.append(path.name) or real_hash(path))
    first = fp.folder_fingerprint(folder, cache)
    assert sorted(hashed) == ["config.json", "model.safetensors", "tokenizer.json"]
    hashed.clear()
    assert fp.folder_fingerprint(folder, cache) == first and hashed == []  # a parse only stats the files

    weights = folder / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"\x01" * 4096)  # rewritten in place: new mtime
    assert fp.folder_fingerprint(folder, cache) != first and hashed == ["model.safetensors"]

    hashed.clear()
    replacement = folder / "new.bin"
    replacement.write_bytes(b"\x00" * 4096)  # the original content, same size ...
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and mtime (cp -p, rsync -a)
    os.replace(replacement, weights)  # but another inode
    assert fp.folder_fingerprint(folder, cache) == first and hashed == ["model.safetensors"]


def test_a_damaged_cache_costs_a_rehash_not_a_wrong_answer(folder, tmp_path):
    cache = tmp_path / "cache.json"
    expected = fp.folder_fingerprint(folder)
    cache.write_text("{not json")
    assert fp.folder_fingerprint(folder, cache) == expected
    assert json.loads(cache.read_text())  # rewritten whole


def test_a_stamp_is_rewritten_only_when_the_content_changed(folder, tmp_path):
    stamp = tmp_path / "fingerprints" / "models" / "m.json"
    assert fp.write_stamp(folder, stamp) is True
    written = stamp.stat().st_mtime_ns
    os.utime(stamp, ns=(written - 10**9, written - 10**9))  # the stamp is a second older ...
    os.utime(folder, ns=(written, written))  # ... than its folder (a file replaced by an identical copy)
    assert fp.write_stamp(folder, stamp) is False
    assert stamp.stat().st_mtime_ns >= written  # renewed timestamp, same content: no new stamp job
    renewed = stamp.stat().st_mtime_ns
    os.utime(stamp, ns=(renewed - 10**9, renewed - 10**9))
    (folder / ".snakemake_timestamp").touch()  # a hidden file is no content, but its time counts
    assert fp.write_stamp(folder, stamp) is False and stamp.stat().st_mtime_ns >= renewed
    (folder / "config.json").write_text('{"layers": 3}')
    assert fp.write_stamp(folder, stamp) is True
    assert fp.read_stamp(stamp) == fp.folder_fingerprint(folder)


def test_refresh_skips_folders_the_workflow_has_yet_to_make(folder, tmp_path):
    stamps = {str(tmp_path / "a.json"): str(folder), str(tmp_path / "b.json"): str(tmp_path / "not-yet")}
    assert fp.refresh_stamps(stamps) == [str(tmp_path / "a.json")]
    assert not (tmp_path / "b.json").exists()
    assert fp.refresh_stamps(stamps) == []


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(KdgridError, match="not-there"):
        fp.folder_fingerprint(tmp_path / "not-there")


def test_the_command_writes_the_stamp(folder, tmp_path, capsys):
    stamp = tmp_path / "s.json"
    assert main(["fingerprint", str(folder), "--out", str(stamp), "--cache", str(tmp_path / "c.json")]) == 0
    assert fp.read_stamp(stamp) == fp.folder_fingerprint(folder)
    assert "written" in capsys.readouterr().out
