"""The operator gives freed C heap memory back to the system where the C library can."""

from __future__ import annotations

import ctypes.util

import pytest

from modelgrid_operator import heap


def test_freed_memory_is_given_back_where_glibc_is() -> None:
    heap._malloc_trim.cache_clear()
    if heap._malloc_trim() is None:
        pytest.skip("this C library has no malloc_trim")
    junk = [bytearray(256 * 1024) for _ in range(64)]  # 16 MiB from the C heap
    del junk
    assert heap.release_free_heap() is True


def test_without_a_c_library_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    heap._malloc_trim.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        assert heap.release_free_heap() is False
    finally:
        heap._malloc_trim.cache_clear()
