"""Atomic writes for everything voiceface persists: a crash never leaves a half-written file,
and `replace_dir` swaps a whole directory tree in one step."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

RENAME_EXCHANGE = 2  # renameat2 flag (linux/fs.h): swap two paths in one step
AT_FDCWD = -100  # renameat2's "paths relative to the working directory"
ASIDE_SUFFIX = ".replaced"  # where the old tree waits while two renames replace it


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: temporary file beside it, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented UTF-8 JSON."""
    return write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write a numpy array (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """Atomically write tensors as safetensors."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return write_bytes(path, safetensors_bytes(tensors, metadata=metadata))


@contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (between processes and threads) while writing."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the directory `new` at `target` (same file system) and delete what was there.

    A reader, or a crash, sees the old tree or the new one at `target`, never a mix: on Linux
    the two are exchanged in one step (renameat2). Where the system cannot exchange, the old
    tree is renamed aside first (`aside_path`) and `restore_aside` undoes a crash between the
    two renames.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        fsync_path(target.parent)
        return target
    if _exchange(new, target):
        fsync_path(target.parent)
        shutil.rmtree(new)  # the old tree, now at the new one's former path
        return target
    aside = aside_path(target)
    os.rename(target, aside)
    os.rename(new, target)
    fsync_path(target.parent)
    shutil.rmtree(aside)
    return target


def aside_path(target: str | os.PathLike) -> Path:
    """Where `replace_dir` keeps the old tree between its two renames."""
    target = Path(target)
    return target.with_name(f".{target.name}{ASIDE_SUFFIX}")


def restore_aside(target: str | os.PathLike) -> None:
    """Finish or undo a `replace_dir` killed between its renames: the old tree goes back to
    `target` if nothing is there, else (the new tree is in place) it is deleted."""
    target, aside = Path(target), aside_path(target)
    if aside.exists():
        if target.exists():
            shutil.rmtree(aside)
        else:
            os.rename(aside, target)
            fsync_path(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # no exchange here
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def link_tree(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """`dst` as a tree of hard links to the files of `src` (copies where links are refused).
    Atomic writes replace files rather than change them, so the two never alias a write."""
    def link(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    return Path(shutil.copytree(src, dst, copy_function=link))
