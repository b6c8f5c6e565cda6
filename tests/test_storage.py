"""Atomic writes: the data reaches the disk before the rename makes it visible."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


def test_write_json_writes_indented_utf8_with_a_final_newline(tmp_path):
    path = storage.write_json(tmp_path / "m.json", {"name": "Zoë", "ids": [1]})
    assert path == tmp_path / "m.json"
    assert path.read_bytes() == '{\n "name": "Zoë",\n "ids": [\n  1\n ]\n}\n'.encode("utf-8")


def test_write_npy_round_trips_and_refuses_pickles(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3).T  # not C-contiguous
    np.testing.assert_array_equal(
        np.load(storage.write_npy(tmp_path / "a.npy", array), allow_pickle=False), array)
    with pytest.raises(ValueError, match="allow_pickle"):
        storage.write_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "o.npy").exists()


def test_a_write_that_cannot_start_raises_its_own_error(tmp_path, monkeypatch):
    """No temporary file was made: cleaning up must not replace the real error."""
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(storage, "open", refuse, raising=False)
    with pytest.raises(PermissionError, match="read-only file system"):
        storage.write_bytes(tmp_path / "report.md", b"contents")


def test_locked_makes_the_directory_and_excludes_other_holders_until_released(tmp_path):
    directory = tmp_path / "a" / "b"
    for _ in range(2):  # the directory and its lock file already exist the second time
        with storage.locked(directory):
            with open(directory / ".lock") as other:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                with pytest.raises(BlockingIOError):  # exclusive: not even a reader shares it
                    fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with open(directory / ".lock") as other:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: free again
            fcntl.flock(other, fcntl.LOCK_UN)


def test_exchange_swaps_two_relative_paths_and_raises_what_it_cannot_swap(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: resolved against the working directory
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    assert storage._exchange(Path("a"), Path("b")) is True
    assert [(tmp_path / n / "f").read_text() for n in ("a", "b")] == ["b", "a"]
    with pytest.raises(FileNotFoundError):
        storage._exchange(Path("a"), Path("missing"))
    assert (tmp_path / "a" / "f").read_text() == "b"


def test_link_tree_links_every_file_and_copies_where_links_are_refused(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"x")
    linked = storage.link_tree(src, tmp_path / "linked")
    assert linked == tmp_path / "linked" and (linked / "sub" / "f").samefile(src / "sub" / "f")

    def refuse(source, target):
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    copied = storage.link_tree(src, tmp_path / "copied")
    assert (copied / "sub" / "f").read_bytes() == b"x"
    assert not (copied / "sub" / "f").samefile(src / "sub" / "f")


def test_exchange_is_refused_where_the_system_cannot_swap(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    # the kernel refuses exchange and no-replace together (EINVAL), as a file system without
    # exchange does: nothing moves and replace_dir renames instead
    monkeypatch.setattr(storage, "RENAME_EXCHANGE", storage.RENAME_EXCHANGE | 1)
    assert storage._exchange(tmp_path / "a", tmp_path / "b") is False
    monkeypatch.undo()
    monkeypatch.setattr(storage.ctypes, "CDLL", lambda *args, **kwargs: SimpleNamespace())
    assert storage._exchange(tmp_path / "a", tmp_path / "b") is False  # no renameat2 (macOS)
    assert [(tmp_path / n / "f").read_text() for n in ("a", "b")] == ["a", "b"]
