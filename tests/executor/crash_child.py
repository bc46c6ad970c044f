"""The executor service as a child process forked from a server that has imported it once.

The crash test restarts the executor dozens of times; a fresh interpreter spends ~1.5 s importing
faststream, nats, pydantic and the rest before it can resume a run. A forkserver imports them once, and
each restart is a new process forked from it: its own pid, its own memory, nothing shared with the
killed one but the journal, the venue and the bus — what a restart after SIGKILL has too.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys

import pytest  # noqa: F401 - the test runner's main module is imported again in every child: cached
import uvicorn  # noqa: F401

import rebal_executor.app  # noqa: F401

PR_SET_PDEATHSIG = 1
# What the forkserver imported stays out of the children's garbage collections (the service collects
# once as it starts: scanning everything imported took a few hundred ms per restart).
gc.collect()
gc.freeze()


def serve(env: dict[str, str], log_path: str, cwd: str) -> None:
    """Run the executor service as `python -m rebal_executor` would, with `env` as its environment."""
    # Gone with the forkserver, and so with the test (Linux: the parent-death signal).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    from rebal import service
    from rebal_executor.app import build
    from rebal_executor.settings import ExecutorSettings

    settings = service.settings_or_exit(ExecutorSettings)
    service.serve(build(settings), settings)
