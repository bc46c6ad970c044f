"""Memory set up for a short process that plans once (`rebal plan`): most of a cold plan's time at a
million wallets was the kernel handing out fresh memory, not the planning.

- numpy asks for transparent huge pages for every array of 4 MB or more; with the kernel's default
  `defrag=madvise` each such page fault may first compact memory to find 2 MB: the first (cold)
  diff and plan of a million wallets spent as long in the kernel as in numpy. Plain pages are
  handed out without that stall.
- glibc gives large freed blocks back to the kernel (and trims the heap), so every new temporary
  array is zeroed again by a page fault. A process that exits in seconds keeps them for reuse.
- Once the inputs are read (`settled`), what they hold lives until the process ends: the garbage
  collector's full collections, set off by the plan's own objects, walked them again each time (the
  real tree's million names: some 120 ms per collection at a million wallets). They are frozen out of
  its scans, as the services freeze what start-up made (`rebal.service.tune_garbage_collector`).

These only change how memory is obtained and kept, never what is computed; both are skipped where the
libraries do not offer them (another libc, a numpy without the switch).
"""

from __future__ import annotations

import ctypes
import gc
import platform

import numpy as np

# mallopt(3) parameters and the size from which glibc keeps freed memory instead of returning it.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30


def prepare() -> None:
    """Plain pages for numpy, and freed memory kept for reuse (see the module doc)."""
    set_hugepage = getattr(getattr(np, "_core", None), "multiarray", None)
    if set_hugepage is not None and hasattr(set_hugepage, "_set_madvise_hugepage"):
        set_hugepage._set_madvise_hugepage(False)
    if platform.libc_ver()[0] != "glibc":
        return
    # The process's own symbols, glibc's among them: `ctypes.util.find_library` would run
    # `ldconfig -p` in a subprocess to find the same library (some 5-10 ms of `rebal plan`'s start).
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)


def settled() -> None:
    """The inputs are read and kept to the end: out of the garbage collector's scans (see the module doc).
    Nothing is collected first: reading makes no cycles (and runs with the collector paused)."""
    gc.freeze()
