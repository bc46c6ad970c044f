"""`rebal.batch.prepare`, run by `rebal plan` before reading: it sets glibc's memory options without
starting a process (finding libc by name ran `ldconfig -p` in a subprocess at every plan)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHECK = """
import ctypes, subprocess
from rebal import batch

def refused(*args, **kwargs):
    raise AssertionError("prepare started a process")

subprocess.Popen = refused
batch.prepare()

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
mapped = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)  # above glibc's default mmap threshold (128 KiB to 32 MiB): kept in the heap
print(libc.mallinfo2().hblks - mapped)
libc.free(block)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_prepare_keeps_large_blocks_in_the_heap_without_starting_a_process() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]  # no new block of its own mapping (mmap): the threshold took
