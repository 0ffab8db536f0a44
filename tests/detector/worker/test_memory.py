"""The allocator settings are best effort: they apply on glibc and never fail elsewhere."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from detector.worker import memory
from detector.worker.memory import release_free_memory

GLIBC = platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c") is not None


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_allocator_settings_apply_and_freed_heap_pages_go_back_on_glibc() -> None:
    # In a child: mallopt changes the whole process, not something a test should leave behind.
    code = (
        "from detector.worker.memory import tune_allocator, release_free_memory\n"
        "assert tune_allocator() is True\n"
        # ~60 MB of small blocks (below the mmap threshold: from the heap), then a live block
        # above them so the heap top cannot shrink by itself: only malloc_trim gives the
        # freed pages back, and says so.
        "blocks = [bytearray(1000) for _ in range(60_000)]\n"
        "keep = bytearray(1000)\n"
        "del blocks\n"
        "print(release_free_memory())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


class _FakeLibc:
    def __init__(self, trimmed: int) -> None:
        self.trimmed = trimmed
        self.calls: list[int] = []

    def malloc_trim(self, pad: ctypes.c_size_t) -> int:
        self.calls.append(pad.value)
        return self.trimmed


@pytest.mark.parametrize(("trimmed", "expected"), [(1, True), (0, False)])
def test_trimming_reports_what_malloc_trim_did(
    monkeypatch: pytest.MonkeyPatch, trimmed: int, expected: bool
) -> None:
    fake = _FakeLibc(trimmed)
    monkeypatch.setattr(memory, "_LIBC", fake)
    assert release_free_memory() is expected
    assert fake.calls == [0]


def test_without_glibc_nothing_is_tried_and_nothing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_LIBC", None)
    assert release_free_memory() is False
    assert memory.tune_allocator() is False
