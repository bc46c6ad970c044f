"""The cyclic garbage collector paused around work that makes many objects, none in a cycle.

Python's collector runs a full collection after enough new container objects, walking every object alive:
a million-wallet tree being read, or a where plan's thousands of moves and transfers (two plans made,
one kept), would set off full collections that find nothing to free. Pausing it changes no result:
whatever cycles are made are collected once it runs again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """The collector off inside the block, back as it was after (a block inside another leaves it off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
