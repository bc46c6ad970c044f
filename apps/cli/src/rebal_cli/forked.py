"""`rebal plan --json` on a second core: the desired tree read, and most of the JSON's chunks made, by a
forked process while this one does the rest (docs/performance.md, "Target 1 on two cores").

Reading a tree and writing the plan's text are Python-level work a node at a time that holds the
interpreter's lock: a thread would not run beside it, a process does. A forked helper starts with
this process's memory as it is (copy-on-write, nothing pickled) and hands back only what it made:

- the desired tree, read while this process reads the prices, markets and the real tree, comes back
  pickled through a pipe, without its `names` and `kinds` lists (a million strings pickle at 1 µs
  each): they are the name and kind codes' vocabularies picked by code, so they are made again here;
- the plan's chunks (`rebal.render.plan_parts`): three of every five chunks of rows are made by the
  helper and sent through a pipe, this process makes the others and writes all of them in order.

Used only where it pays (`PARALLEL_FROM_BYTES` of the two trees' files; the environment variable
`REBAL_PARALLEL_FROM` sets another size, 0 for always), with a second CPU and `os.fork`. The output is
byte for byte the single process's. Whatever goes wrong in a helper (it fails, dies or is killed)
falls back to this process doing that part itself, so an error is the one the single process gives:
a bad desired tree is reported after the other inputs, as before. A helper is killed and reaped on
the way out, however that way is taken (an error, Ctrl-C); it dies with this process (the kernel's
parent-death signal) and leaves nothing behind (pipes only).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from rebal import render
    from rebal.core.plan import Plan
    from rebal.core.tree import Role, Tree

# From this many bytes of tree files (the real and the desired one together) a helper process pays:
# below it, forking and handing back cost more than they save (measured in docs/performance.md).
PARALLEL_FROM_BYTES = 4 << 20
PARALLEL_FROM = "REBAL_PARALLEL_FROM"
PIPE_BYTES = 1 << 20  # the pipe's buffer (Linux's default most), so a chunk goes in few system calls
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
LENGTH = struct.Struct("<q")
AHEAD = 4  # chunks the helper may make before this process takes them (some 13 MB each)
# Of every 5 chunks of rows, the helper makes 3: this process also makes what all chunks use before
# the helper starts, and writes every chunk (docs/performance.md).
HELPER_SHARE = (3, 5)
Work = Callable[[BinaryIO], None]  # what a helper does, given the pipe it writes to


def parallel(*paths: Path) -> bool:
    """Whether a helper process pays for reading these files and writing their plan."""
    if not hasattr(os, "fork") or _cpus() < 2:
        return False
    threshold = os.environ.get(PARALLEL_FROM, "")
    least = int(threshold) if threshold.strip().isdigit() else PARALLEL_FROM_BYTES
    try:
        size = sum(path.stat().st_size for path in paths)
    except OSError:  # the reader names the problem
        return False
    return size >= least


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass
class _Helper:
    """A forked process and the pipe it writes to."""

    pid: int
    pipe: BinaryIO

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Killed (if still running) and reaped: no zombie."""
        self.kill()
        self.pipe.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _fork(work: Work) -> _Helper | None:
    """A helper running `work(pipe)` then exiting at once (none of this process's exit handlers, none
    of its buffers flushed twice); None when the system will not fork."""
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(write, F_SETPIPE_SZ, PIPE_BYTES)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the helper
        code = 1
        try:
            os.close(read)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it with the parent
            _die_with(parent)
            with open(write, "wb") as pipe:
                work(pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return _Helper(pid, open(read, "rb"))


def _die_with(parent: int) -> None:
    """The kernel kills this process when its parent ends, however it ends (Linux; elsewhere the
    closed pipe ends it at its next write)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


# The desired tree, read by a helper.


@contextlib.contextmanager
def tree_read_apart(path: Path, role: Role, apart: bool) -> Iterator[Callable[[], Tree]]:
    """A function giving the tree at `path` (or raising its `FileError`), read meanwhile by a helper
    when `apart`, else by this process when called."""
    from rebal.io import load_tree

    helper = _fork(lambda pipe: _send_tree(pipe, path, role)) if apart else None
    if helper is None:
        yield lambda: load_tree(path, role)
        return

    def tree() -> Tree:
        received = _received_tree(helper)
        helper.kill()  # its work is done (or failed): reaped when the caller leaves the context
        helper.pipe.close()
        return received if received is not None else load_tree(path, role)

    try:
        yield tree
    finally:
        helper.stop()


def _send_tree(pipe: BinaryIO, path: Path, role: Role) -> None:
    """The tree, or nothing when it cannot be read: this process's caller reads it again and names the
    problem as the single process does."""
    from rebal.io import load_tree

    tree = load_tree(path, role)
    pickle.dump(dataclasses.replace(tree, names=[], kinds=[]), pipe, protocol=pickle.HIGHEST_PROTOCOL)


def _received_tree(helper: _Helper) -> Tree | None:
    from rebal.core.tree import Tree, pick

    try:
        light = pickle.load(helper.pipe)
    except (EOFError, pickle.UnpicklingError, OSError):  # it failed, or died
        return None
    if not isinstance(light, Tree):
        return None
    names = light.name_codes.vocabulary
    kinds = [*light.kind_codes.vocabulary, None]  # code -1: no kind
    return dataclasses.replace(
        light,
        names=pick(names, light.name_codes.ids.tolist()),  # by itemgetter: a third of a map's time
        kinds=pick(kinds, light.kind_codes.ids.tolist()),
    )


# The plan's JSON, most of its chunks made by a helper.


def write_plan_json(plan: Plan, out: BinaryIO, apart: bool) -> None:
    """The plan's compact JSON and a newline, as `rebal.render.write_plan_json` writes it; most chunks
    of rows made by a helper when `apart` (`HELPER_SHARE`). What all chunks use (the paths, the
    orders' columns) is made here first and shared: made by both side by side, it cost more CPU than
    the helper's wait saved, on this shared machine (docs/performance.md)."""
    from rebal import render

    if not apart:
        render.write_plan_json(plan, out, pretty=False)
        return
    parts = list(render.plan_parts(plan))
    helper = _fork(lambda pipe: _send_chunks(pipe, parts))
    if helper is None:
        render.write_chunks(render.made(parts), out)
        return
    inbox = _Inbox(helper)
    try:
        render.write_chunks(_chunks(parts, inbox), out)
    finally:
        inbox.close()


class _Inbox:
    """The helper's chunks, read from its pipe by a thread as soon as they come (the read runs without
    the interpreter's lock): the helper runs up to `AHEAD` chunks ahead of this process instead of
    waiting, a megabyte at a time, for it to ask for each one. None once the helper has failed."""

    def __init__(self, helper: _Helper) -> None:
        self.helper = helper
        self.queue: queue.Queue[bytes | None] = queue.Queue(AHEAD)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def get(self) -> bytes | None:
        return self.queue.get()

    def _read(self) -> None:
        chunk: bytes | None = b""
        while chunk is not None and not self.stopped.is_set():
            try:
                chunk = _received_chunk(self.helper)
            except (OSError, ValueError):
                chunk = None
            while not self.stopped.is_set():
                try:
                    self.queue.put(chunk, timeout=0.05)
                    break
                except queue.Full:
                    continue

    def close(self) -> None:
        """The helper killed and reaped, the thread ended (the helper's end ends its read)."""
        self.stopped.set()
        self.helper.kill()
        self.thread.join()
        self.helper.stop()


def _mine(parts: Iterable[render.Part], helper: bool) -> Iterator[tuple[bool, render.Part]]:
    """The parts with whose they are: of every `HELPER_SHARE[1]` chunks of rows, the helper makes
    `HELPER_SHARE[0]`, spread evenly, the first one this process's (so that neither waits for the
    other at the start); the texts are this process's."""
    made, of = HELPER_SHARE
    chunk = 0
    for part in parts:
        if isinstance(part, bytes):
            yield not helper, part
        else:
            yield ((chunk + 1) * made // of > chunk * made // of) == helper, part
            chunk += 1


def _send_chunks(pipe: BinaryIO, parts: Iterable[render.Part]) -> None:
    for mine, part in _mine(parts, helper=True):
        if mine and not isinstance(part, bytes):  # a failure ends the helper: the parent makes it
            chunk = part()
            pipe.write(LENGTH.pack(len(chunk)))
            pipe.write(chunk)
    pipe.flush()


def _chunks(parts: Iterable[render.Part], inbox: _Inbox) -> Iterator[bytes]:
    """Every part's text in order: this process's made here, the helper's from its pipe (made here
    too once the helper has failed)."""
    working = True
    for mine, part in _mine(parts, helper=False):
        if isinstance(part, bytes):
            yield part
            continue
        chunk = inbox.get() if working and not mine else None
        if chunk is None:
            working = working and mine
            chunk = part()
        yield chunk


def _received_chunk(helper: _Helper) -> bytes | None:
    header = helper.pipe.read(LENGTH.size)
    if len(header) < LENGTH.size:
        return None
    (length,) = LENGTH.unpack(header)
    chunk = helper.pipe.read(length)
    return chunk if len(chunk) == length else None
