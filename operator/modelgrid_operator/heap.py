"""Giving freed heap memory back to the system. Does I/O (one libc call, no files or network).

A burst (a thousand qualifications created or deleted at once, a list of every Job) leaves the
C heap with megabytes that Python freed but glibc keeps mapped, so the operator's RSS stays at
its high-water mark and drifts up with every burst (measured: 14 MiB of 41 MiB free but held
after 300 finished). `malloc_trim(0)` returns those pages; the resync calls it once a round,
after a full garbage collection (tens of milliseconds, once every 30 s). The chart, the image
and the sandbox run the operator with `PYTHONMALLOC=malloc`, so Python's own objects live in that
heap too (pymalloc's arenas are returned only when wholly empty, which a burst rarely leaves).
Elsewhere than glibc (musl, macOS) there is nothing to call and it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


def release_free_heap() -> bool:
    """Collect cyclic garbage (a burst's API errors keep their tracebacks, and with them the
    frames and response bodies they saw, until a full collection that may not come for a long
    while), then return the C heap's free pages to the system; whether there was a trim."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
