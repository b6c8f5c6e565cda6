"""Atomic writes for everything voiceface persists: a crash never leaves a half-written file."""

from __future__ import annotations

import fcntl
import io
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes


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
