"""Freed memory given back to the system, for a server that keeps it otherwise.

glibc keeps freed heap memory for reuse, the more so after
`stylegan2_ops.reuse_freed_memory` (blocks up to 1 GiB stay in the heap), and in one arena
per thread that allocated it (up to 8 per core; Gradio runs handlers on a pool of threads).
A request that decodes a large photo then left hundreds of MB resident in its thread's arena
for good: 50 photos of 40 megapixels took a server from 0.87 to 4.6 GB
(`python -m benchmarks.memory`). `limit_arenas` makes the threads share a few arenas, so
what one request freed serves the next; `release_freed_memory` returns the free pages of
every arena (the next render faults its pages in again, so it is called after large decodes
only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

SERVER_ARENAS = 2  # malloc arenas a server's threads share (one per core here)
_M_ARENA_MAX = -8  # glibc mallopt parameter number


@functools.cache
def libc_function(name: str):
    """glibc's function `name` (through ctypes), or None where there is no such function."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to call
        return None


def limit_arenas(arenas: int = SERVER_ARENAS) -> bool:
    """Let at most `arenas` malloc arenas serve all threads from now on (glibc's
    M_ARENA_MAX; call at start-up, before the threads run). Process-wide. Returns False
    where unsupported (not glibc)."""
    mallopt = libc_function("mallopt")
    return bool(mallopt(_M_ARENA_MAX, arenas)) if mallopt is not None else False


def release_freed_memory() -> bool:
    """Return the free pages of every malloc arena to the system (glibc's `malloc_trim(0)`).
    True if any memory was released; False also where unsupported (not glibc)."""
    trim = libc_function("malloc_trim")
    return bool(trim(0)) if trim is not None else False
