"""Atomic writes: the data reaches the disk before the rename makes it visible."""

from __future__ import annotations

import os

import pytest

from voiceface import storage


def test_write_bytes_syncs_the_file_before_renaming_it(tmp_path, monkeypatch):
    """Without the fsync, a power cut after the rename can leave an empty file under the
    real name: the rename is journaled before the data is written."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "report.md"
    storage.write_bytes(path, b"contents")
    assert path.read_bytes() == b"contents"
    replaced = [e for e in events if e[0] == "replace"]
    assert len(replaced) == 1 and replaced[0][2] == str(path)
    temporary = os.path.realpath(replaced[0][1])
    assert events.index(("fsync", temporary)) < events.index(replaced[0])
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    storage.write_bytes(path, b"old")

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]
