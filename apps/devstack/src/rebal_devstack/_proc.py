"""Process plumbing shared by the servers: free ports, child reaping, and the exit-time sweep.

Every server that starts a process registers it here; an ``atexit`` hook stops whatever is still
running when the interpreter exits, so a test run or ``make run`` never leaves a server behind. On
Linux the children also get a parent-death signal, which covers a parent killed with SIGKILL (where
``atexit`` cannot run).
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

log = logging.getLogger("rebal_devstack")

LOOPBACK = "127.0.0.1"

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class Stoppable(Protocol):
    """What the exit-time sweep needs from a server."""

    @property
    def running(self) -> bool: ...

    def stop(self, timeout: float = ...) -> None: ...


_live: dict[int, Stoppable] = {}
_live_lock = threading.Lock()


def register(server: Stoppable) -> None:
    """Remember a started server so that interpreter exit stops it."""
    with _live_lock:
        _live[id(server)] = server


def unregister(server: Stoppable) -> None:
    with _live_lock:
        _live.pop(id(server), None)


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live.values())
        _live.clear()
    for server in reversed(servers):
        if not server.running:
            continue
        try:
            server.stop(timeout=10.0)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            # Exit must go on for the other servers; say what was left behind.
            print(f"rebal_devstack: could not stop {server!r} at exit: {exc}", file=sys.stderr)


atexit.register(_stop_all_at_exit)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct free ports (all held open together while choosing, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


_prctl = _load_prctl()


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies.

    Linux delivers the parent-death signal when the *thread* that forked the child exits, so this is
    used only when the server is started from the main thread; elsewhere it returns None.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), int(sig))

    return preexec


def is_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc (not Linux): fall back to signal 0.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # The state follows the command name, which is in parentheses and may hold spaces.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in {"Z", "X"}


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` according to /proc (empty where /proc is missing)."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; returns the ones still alive at the deadline."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = [pid for pid in remaining if is_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return remaining


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[bool]:
    """Make this process a child subreaper for the duration, so orphans come to us to be reaped.

    Where PID 1 is not an init that reaps promptly (containers), the backends of a killed server
    would otherwise linger as zombies. Yields whether adoption is on.
    """
    if _prctl is None:
        yield False
        return
    before = ctypes.c_int(0)
    if _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0) != 0:
        yield False
        return
    if _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        yield False
        return
    try:
        yield True
    finally:
        _prctl(_PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


def _reap_adopted(known: set[int], deadline: float) -> None:
    """Reap our children that were not ours before (``known``): orphans adopted meanwhile."""
    while True:
        pending = False
        for pid in children_of(os.getpid()):
            if pid in known:
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done == 0:
                pending = True
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL a child started with ``start_new_session=True``, its process group and its children.

    Its children are killed by pid as well as by group because Postgres backends call setsid().
    """
    if proc.poll() is not None:
        return  # already exited and reaped: its pid may belong to someone else by now
    deadline = time.monotonic() + timeout
    known = set(children_of(os.getpid()))
    with _adopting_orphans() as adopting:
        descendants = children_of(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)
        if adopting:
            _reap_adopted(known, deadline)
    left = wait_gone(descendants, max(0.0, deadline - time.monotonic()))
    if left:
        raise RuntimeError(f"processes {left} of {proc.pid} survived SIGKILL")


def terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL the whole group."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %s ignored %s for %.1f s; killing it", proc.pid, sig.name, timeout)
        kill_group(proc)


def tail(path: Path, lines: int = 20, since: int = 0) -> str:
    """The last lines of a log file written after byte offset ``since``, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess(abc.ABC):
    """What the local servers share: one child process (`_proc`), killed like a crash, restarted, and
    used as a context manager. Subclasses provide `start`, `stop` and `_forget`."""

    _proc: subprocess.Popen[bytes] | None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @abc.abstractmethod
    def start(self) -> Self: ...

    @abc.abstractmethod
    def stop(self, timeout: float = 10.0) -> None: ...

    @abc.abstractmethod
    def _forget(self) -> None: ...

    def kill(self) -> None:
        """SIGKILL the process group, as a crash would: nothing is flushed or closed cleanly."""
        if self._proc is None:
            return
        try:
            kill_group(self._proc)
        finally:
            self._forget()

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
