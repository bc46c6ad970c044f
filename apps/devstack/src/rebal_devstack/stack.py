"""The whole system on one machine: NATS, Postgres, the five services, the demo bot (`make run`).

``python -m rebal_devstack run`` starts, in order: nats-server with JetStream (store ``var/nats/``) and
the users of deploy/nats/auth.conf, Postgres (``var/pg/``, database ``rebal``, password authentication),
the migrations (the streams declared as the ``migrate`` user), the five services as child processes (each
waited for on its ``/readyz``), the demo bot, and a first live rebalance of the ``demo`` portfolio. It
then supervises: a child that dies is reported and restarted with backoff. SIGINT/SIGTERM stop the
services, the bot, Postgres and NATS, in that order, and the launcher exits 0. Everything lives under
``var/``, so the next run resumes with the same data (the tracker seeds the paper exchange only when it
is empty). Child output goes to ``var/logs/<name>.log``, never to the terminal. Each service, the demo
bot's strategies and the operators' `rebal` (through ``var/client.toml``) connect as their own NATS user,
with passwords generated once in ``var/secrets/`` (`rebal_devstack.credentials`), as in production.

The pieces are reusable from tests: :class:`Infra` (NATS and Postgres in a directory),
:class:`Services` (the services as processes against any NATS and Postgres) and :class:`Child` (one
process: start, wait ready, stop, SIGKILL).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from rebal_devstack import _proc, credentials
from rebal_devstack._proc import LOOPBACK
from rebal_devstack.nats import NatsServer
from rebal_devstack.postgres import PostgresServer, run_sync
from rebal_devstack.supervisor import SUPERVISOR_FILE, Watched, supervise
from rebal_devstack.supervisor import say as _say

if TYPE_CHECKING:
    from rebal.settings import NatsSettings
    from rebal_cli.commands import Outcome

SERVICES = ("tracker", "optimizer", "planner", "executor", "monitor")
# The same defaults as `rebal.settings.PORTS`; a port that is taken is replaced by a free one.
SERVICE_PORTS = {"tracker": 8101, "optimizer": 8102, "planner": 8103, "executor": 8104, "monitor": 8105}
NATS_PORT = 4222
POSTGRES_PORT = 5432
DATABASE = "rebal"
PORTFOLIO = "demo"
READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 15.0


class StartFailed(RuntimeError):
    """A child did not come up: the message says which, why, and ends with its log's last lines."""


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``port`` and it can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: connections of a previous run in TIME_WAIT do not make the port taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None, taken: Iterable[int] = ()) -> int:
    """``preferred`` when it is free (and not in ``taken``), else a free port."""
    avoid = set(taken)
    if preferred and preferred not in avoid and port_free(preferred):
        return preferred
    while True:
        port = _proc.free_port()
        if port not in avoid:
            return port


# -- one child process ---------------------------------------------------------------------------


@dataclass
class Child:
    """A Python child process (``python -m <module>``) with its log file; optionally an HTTP port."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    started_at: float = field(default=0.0, init=False)
    started_pids: list[int] = field(default_factory=list, init=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} serves no HTTP port")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf:
            logf.write(f"--- starting {self.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            logf.flush()
            self._log_offset = logf.tell()
            self.proc = subprocess.Popen(
                [sys.executable, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=dict(self.env),
                start_new_session=True,  # Ctrl-C reaches the launcher only: it stops children in order
                preexec_fn=_proc.die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - main thread only
            )
        self.started_at = time.monotonic()
        self.started_pids.append(self.proc.pid)
        _proc.register(self)

    def readyz(self, timeout: float = 2.0) -> int | None:
        """The HTTP status of ``/readyz``, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait for ``/readyz`` to answer 200; `StartFailed` (with the log tail) on exit or timeout."""
        deadline = time.monotonic() + timeout
        last: int | None = None
        while True:
            code = self.returncode
            if self.proc is None or code is not None:
                raise StartFailed(f"{self.name} exited with code {code} while starting:\n{self.tail()}")
            last = self.readyz()
            if last == 200:
                return
            if time.monotonic() >= deadline:
                why = "no answer" if last is None else f"HTTP {last}"
                raise StartFailed(f"{self.name} not ready after {timeout:g} s ({why}):\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 20) -> str:
        return _proc.tail(self.log_path, lines, since=self._log_offset)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (a clean shutdown: consumers stop, pools close), wait, then SIGKILL."""
        if self.proc is None:
            return
        try:
            _proc.terminate(self.proc, signal.SIGTERM, timeout)
        finally:
            _proc.unregister(self)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no ack, no clean close."""
        if self.proc is None:
            return
        try:
            _proc.kill_group(self.proc)
        finally:
            _proc.unregister(self)


# -- the services --------------------------------------------------------------------------------


def demo_settings(root: Path) -> dict[str, dict[str, str]]:
    """Each service's settings for the demo portfolio of ``root/examples/demo`` (absolute paths)."""
    demo = (root / "examples" / "demo").absolute()
    paper = {
        "REBAL__PAPER__MARKETS_FILE": str(demo / "markets.json"),
        "REBAL__PAPER__PRICES_FILE": str(demo / "prices.json"),
        "REBAL__PAPER__CONTRACTS_FILE": str(demo / "contracts.json"),
    }
    return {
        "tracker": {
            "REBAL__TRACKING__PORTFOLIO_ID": PORTFOLIO,
            "REBAL__TRACKING__LAYOUT_FILE": str(demo / "real.json"),
            **paper,
        },
        "optimizer": {"REBAL__TARGETS__FILES": json.dumps({PORTFOLIO: str(demo / "target.json")})},
        "planner": {},
        # The demo trades on the paper exchange: live trading is switched on for it (off by default).
        "executor": {**paper, "REBAL__LIVE": "true"},
        "monitor": {},
    }


def demo_allocation(bot: bool) -> dict[str, str]:
    """`make run`'s optimizer settings when the demo bot runs: the demo portfolio is allocated across the
    bot's strategies (the `trend`, `meanrev` and `arb` nodes of its target share crypto's 70%) by risk
    parity, first once 30 returns of each are in (30 simulated days: about 30 s), then after every 300 new
    returns. Without the bot the target file stands as it is."""
    if not bot:
        return {}
    allocation = {
        "method": "risk_parity",
        "min_observations": 30,
        "lookback_periods": 365,
        "after_new_returns": 300,
        "schedule": "",
    }
    return {"REBAL__ALLOCATIONS": json.dumps({PORTFOLIO: allocation})}


class Services:
    """The five services as processes against a NATS and a Postgres (started elsewhere).

    ``ports`` maps a service to its HTTP port; a missing or taken one becomes a free port. ``env``
    adds settings for every service, ``service_env`` for one (over the demo settings).
    """

    def __init__(
        self,
        *,
        nats_url: str,
        database_url: str,
        root: Path,
        log_dir: Path,
        ports: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        names: Sequence[str] = SERVICES,
    ) -> None:
        self.root = root.absolute()
        self.log_dir = log_dir
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REBAL__")},
            "PYTHONUNBUFFERED": "1",
            "REBAL__NATS__URL": nats_url,
            "REBAL__DATABASE__URL": database_url,
            **(env or {}),
        }
        settings = demo_settings(self.root)
        wanted = dict(ports or {})
        chosen: dict[str, int] = {}
        for name in names:
            chosen[name] = pick_port(wanted.get(name), chosen.values())
        # The monitor reports the others' readiness in GET /status.
        peers = {name: f"http://{LOOPBACK}:{port}" for name, port in chosen.items() if name != "monitor"}
        self.children: dict[str, Child] = {}
        for name, port in chosen.items():
            child_env = {
                **base,
                **settings.get(name, {}),
                **({"REBAL__API__PEERS": json.dumps(peers)} if name == "monitor" else {}),
                **(service_env or {}).get(name, {}),
                "REBAL__HTTP__HOST": LOOPBACK,
                "REBAL__HTTP__PORT": str(port),
            }
            self.children[name] = Child(
                name, ["-m", f"rebal_{name}"], child_env, log_dir / f"{name}.log", self.root, port
            )

    def __getitem__(self, name: str) -> Child:
        return self.children[name]

    def __iter__(self) -> Iterator[Child]:
        return iter(self.children.values())

    def start(self, names: Iterable[str] | None = None, *, wait: bool = True) -> None:
        """Start the services (all by default), then wait for each one's ``/readyz``."""
        chosen = list(names) if names is not None else list(self.children)
        for name in chosen:
            self.children[name].start()
        if wait:
            self.wait_ready(chosen)

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait for each service's ``/readyz`` (all by default); `StartFailed` names the first failure."""
        for name in list(names) if names is not None else list(self.children):
            self.children[name].wait_ready(timeout)

    @property
    def pids(self) -> list[int]:
        """The pids of every process started so far, restarts included (to check none is left behind)."""
        return [pid for child in self.children.values() for pid in child.started_pids]

    def stop(self, names: Iterable[str] | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the services (all by default, last started first)."""
        chosen = list(names) if names is not None else list(reversed(self.children))
        for name in chosen:
            self.children[name].stop(timeout)

    def kill(self, names: Iterable[str] | None = None) -> None:
        chosen = list(names) if names is not None else list(self.children)
        for name in chosen:
            self.children[name].kill()


# -- infrastructure ------------------------------------------------------------------------------


async def _migrate(dsn: str) -> list[str]:
    from rebal import db

    connection = await asyncpg.connect(dsn, timeout=10.0)
    try:
        return await db.migrate(connection)
    finally:
        await connection.close()


def migrate(dsn: str) -> list[str]:
    """Apply the Rebal migrations to ``dsn``; the names applied now."""
    return run_sync(lambda: _migrate(dsn))


def declare_streams(nats: NatsSettings) -> None:
    """Declare the streams and bring their configuration up to date, as `python -m rebal.migrate` does
    (on a secured bus as the ``migrate`` user: the services' own users may not update a stream)."""
    from rebal import migrate as migration
    from rebal.settings import ServiceSettings

    run_sync(lambda: asyncio.wait_for(migration.declare(ServiceSettings(nats=nats)), 30.0))


class Infra:
    """NATS (store ``var_dir/nats``) and Postgres (``var_dir/pg``) with the ``rebal`` database, migrated.

    With ``auth_conf`` (deploy/nats/auth.conf), NATS admits only its users, each with a password made once
    in ``var_dir/secrets/``; with ``postgres_password``, Postgres asks every connection for the password
    of ``var_dir/secrets/postgres-password``. Without them both trust anyone on the machine (tests).
    """

    def __init__(
        self,
        var_dir: Path,
        *,
        nats_port: int | None = NATS_PORT,
        postgres_port: int | None = POSTGRES_PORT,
        database: str = DATABASE,
        postgres_settings: Mapping[str, str] | None = None,
        auth_conf: Path | None = None,
        postgres_password: bool = False,
    ) -> None:
        self.var_dir = var_dir.absolute()
        self.database = database
        self.auth_conf = auth_conf
        self.nats = NatsServer(
            self.var_dir / "nats" / "jetstream",
            port=pick_port(nats_port),
            server_name="rebal-dev",  # its defaults: max_payload 1 MB (`rebal.bus.MAX_MESSAGE_BYTES`)
            extra_config="include ./auth.conf" if auth_conf is not None else "",
        )
        self.postgres = PostgresServer(
            self.var_dir / "pg" / "data",
            port=pick_port(postgres_port),
            settings=postgres_settings,
            password_file=credentials.postgres_password_file(self.var_dir) if postgres_password else None,
        )
        self.database_url = ""
        self.applied: list[str] = []

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def nats_users(self) -> dict[str, str]:
        """The NATS users (name -> the variable auth.conf reads its password from); none on an open bus."""
        return {} if self.auth_conf is None else credentials.auth_users(self.auth_conf)

    def nats_password_file(self, user: str) -> Path | None:
        """The password file of NATS user ``user``; None on an open bus."""
        if self.auth_conf is None:
            return None
        if user not in self.nats_users:
            raise ValueError(f"{self.auth_conf} has no NATS user {user!r}")
        return credentials.nats_password_file(self.var_dir, user)

    def nats_env(self, user: str) -> dict[str, str]:
        """A service's settings to connect as ``user`` (``REBAL__NATS__USER``, ``...__PASSWORD_FILE``)."""
        password_file = self.nats_password_file(user)
        if password_file is None:
            return {}
        return {"REBAL__NATS__USER": user, "REBAL__NATS__PASSWORD_FILE": str(password_file)}

    def nats_login(self, user: str) -> NatsSettings:
        """The settings a client in this process connects with as ``user``."""
        from rebal.settings import NatsSettings

        password_file = self.nats_password_file(user)
        return NatsSettings(
            url=self.nats_url, user=user if password_file else None, password_file=password_file
        )

    def _secure_nats(self) -> None:
        """auth.conf beside the server's configuration (refreshed from the checkout on every start) and
        every user's password, made once, in the server's environment."""
        if self.auth_conf is None:
            return
        base = self.nats.base_dir
        base.mkdir(parents=True, exist_ok=True)
        (base / "auth.conf").write_text(self.auth_conf.read_text())
        self.nats.env = {}
        for user, variable in self.nats_users.items():
            password_file = credentials.secret_file(credentials.nats_password_file(self.var_dir, user))
            self.nats.env[variable] = credentials.read_secret(password_file)

    def start(self) -> None:
        self._secure_nats()
        if self.postgres.password_file is not None:
            credentials.secret_file(self.postgres.password_file)
        self.nats.start()
        self.postgres.start()
        try:
            self.database_url = self.postgres.ensure_database(self.database)
        except asyncpg.InvalidPasswordError:
            raise RuntimeError(
                f"Postgres in {self.postgres.data_dir} refuses the password in {self.postgres.password_file}"
                " (was the file removed and made anew?): put the old file back, or remove"
                f" {self.postgres.data_dir.parent} to start with an empty database"
            ) from None
        self.applied = migrate(self.database_url)
        declare_streams(self.nats_login("migrate"))

    def stop(self) -> None:
        """Postgres first (nothing uses NATS to reach it), then NATS."""
        try:
            self.postgres.stop()
        finally:
            self.nats.stop()


# -- the first rebalance -------------------------------------------------------------------------


DEMO_POLICY = Path("examples") / "demo" / "policy.toml"


async def demo_policy(database_url: str, root: Path) -> None:
    """The demo portfolio's autopilot policy (examples/demo/policy.toml), set when it has none (a policy an
    operator set since is kept)."""
    import asyncpg

    from rebal import policy_store
    from rebal.policy import load_policy

    connection = await asyncpg.connect(database_url)
    try:
        if await policy_store.current(connection, policy_store.PORTFOLIO, PORTFOLIO) is not None:
            return
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        document = load_policy(root / DEMO_POLICY).document()
        await policy_store.add(
            pool,
            policy_store.PORTFOLIO,
            PORTFOLIO,
            document,
            author="make run",
            note=str(DEMO_POLICY),
            at=datetime.now(UTC),
        )
    finally:
        await pool.close()


async def first_decision(database_url: str, since: datetime, timeout: float = 60.0) -> str | None:
    """What the autopilot first decided for the demo portfolio at or after `since` (None if nothing within
    `timeout`): its first decision that changed something (a rebalance started), else its latest one. A
    decision stored by an earlier `make run` is not this run's."""
    import asyncpg

    from rebal import policy_store

    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            changed = [
                decided
                for decided in await policy_store.recent_decisions(connection, PORTFOLIO, 20)
                if decided.decided_at >= since
            ]
            latest = await policy_store.latest_decision(connection, PORTFOLIO)
            if changed:
                return str(changed[-1].decision.get("summary"))
            if latest is not None and latest.decided_at >= since:
                return str(latest.decision.get("summary"))
            await asyncio.sleep(0.5)
        return None
    finally:
        await connection.close()


async def first_rebalance(nats_url: str | NatsSettings, *, band: Decimal, timeout: float = 60.0) -> Outcome:
    """Wait for a target, take a fresh snapshot, then rebalance the demo portfolio live (the operator's
    `rebal rebalance`, whose outcome `rebal_cli.render` shows)."""
    from rebal import bus, subjects
    from rebal.events import (
        BalanceSnapshotTaken,
        Event,
        TakeSnapshot,
        TargetWeightsComputed,
        new_event,
    )
    from rebal_cli import commands

    async with commands.connected(nats_url) as client:
        js = client.jetstream()
        deadline = time.monotonic() + timeout

        async def latest(kind: type[Event]) -> Event | None:
            subject = kind.topic.subject(PORTFOLIO)
            try:
                message = await js.get_last_msg(bus.stream_of(subject).name, subject)
            except (NotFoundError, NatsTimeout):
                return None  # not there yet
            event = bus.decode(kind, subject, message.data or b"")
            return None if isinstance(event, str) else event

        while await latest(TargetWeightsComputed) is None:
            if time.monotonic() > deadline:
                raise StartFailed("the optimizer published no target for the demo portfolio")
            await asyncio.sleep(0.2)
        command = new_event(TakeSnapshot, key=uuid.uuid4(), now=datetime.now(UTC), portfolio_id=PORTFOLIO)
        await js.publish(
            command.subject,
            command.model_dump_json().encode(),
            stream=subjects.COMMANDS_STREAM,
            headers={"Nats-Msg-Id": str(command.event_id)},
        )
        while True:
            snapshot = await latest(BalanceSnapshotTaken)
            if snapshot is not None and snapshot.causation_id == command.event_id:
                break
            if time.monotonic() > deadline:
                raise StartFailed("the tracker took no snapshot of the demo portfolio")
            await asyncio.sleep(0.2)
    return await commands.rebalance(nats_url, PORTFOLIO, dry_run=False, band=band, wait=True, timeout=timeout)


# -- the launcher --------------------------------------------------------------------------------


@dataclass
class Options:
    var_dir: Path
    root: Path
    nats_port: int | None = NATS_PORT
    postgres_port: int | None = POSTGRES_PORT
    service_ports: Mapping[str, int] = field(default_factory=lambda: dict(SERVICE_PORTS))
    bot: bool = True
    rebalance: bool = True
    band: Decimal = Decimal("0.01")
    bot_interval: float = 1.0
    # The demo portfolio rebalances by itself (examples/demo/policy.toml), instead of one operator's run.
    autopilot: bool = True


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


API_TOKEN_FILE = "api-token"
# The NATS user of the operators' tools (`rebal`, the first rebalance): deploy/nats/auth.conf's `api`.
OPERATOR_NATS_USER = "api"
CLIENT_CONTEXT_FILE = "client.toml"


def client_context_file(var_dir: Path) -> Path:
    """Where `make run` writes the client context `rebal` finds by itself (`rebal_cli.context`)."""
    return var_dir / CLIENT_CONTEXT_FILE


def write_client_context(var_dir: Path, infra: Infra, services: Services) -> Path:
    """The client context of the system just started: the API, NATS, Postgres and every service's URL, so
    that `rebal` needs no environment variable, whichever ports were free."""
    from rebal_cli import context

    path = client_context_file(var_dir)
    api = infra.nats_login(OPERATOR_NATS_USER)
    context.write(
        path,
        api_url=services["monitor"].url,
        token_file=api_token_file(var_dir),
        nats_url=infra.nats_url,
        nats_user=api.user,
        nats_password_file=api.password_file,
        database_url=infra.database_url,
        services={child.name: child.url for child in services},
        supervisor_file=var_dir / SUPERVISOR_FILE,
    )
    return path


API_VIEWER_TOKEN_FILE = "api-viewer-token"


def api_token_file(var_dir: Path, name: str = API_TOKEN_FILE) -> Path:
    """The demo's API token (made once, kept in ``var/``, readable by its owner only): the monitor's API
    and dashboard need one, and the CLI reads the same file (``REBAL__API__TOKEN_FILE``). With
    `API_VIEWER_TOKEN_FILE`, the read-only token for viewers."""
    return credentials.secret_file(var_dir / name)


def masked(url: str, mask: str = "****") -> str:
    """A URL with its password replaced by ``mask`` (dropped with its colon when ``mask`` is empty)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    login = f"{parts.username}:{mask}" if mask else f"{parts.username}"
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


def summary(options: Options, infra: Infra, services: Services, bot: Child | None) -> str:
    root = options.root

    def rel(path: Path) -> str:
        return _relative(path, root)

    rebal = rel(Path(sys.executable).parent / "rebal")
    password_file = infra.postgres.password_file
    shown_database_url = masked(infra.database_url)
    if password_file is not None:
        shown_database_url += f"   password in {rel(password_file)}"
    psql = f"psql {masked(infra.database_url, '')}"
    if password_file is not None:
        psql = f"PGPASSWORD=$(cat {rel(password_file)}) {psql}"
    token = api_token_file(options.var_dir.absolute())
    monitor = services["monitor"].url
    lines = [
        "",
        "Rebal is running.",
        "",
        f"  NATS        {infra.nats_url}   monitoring {infra.nats.monitor_url}",
        f"              JetStream store {rel(infra.nats.store_dir)}",
        f"  Postgres    {shown_database_url}   data {rel(infra.postgres.data_dir)}",
        "",
        "  service     /livez /readyz /metrics",
    ]
    for child in services:
        lines.append(f"  {child.name:<11} {child.url}/readyz   {child.url}/metrics")
    lines += [
        "",
        f"  Try (rebal finds the system in {rel(client_context_file(options.var_dir.absolute()))},"
        " from this directory or below):",
        f"    {rebal} status",
        f"    {rebal} rebalance --portfolio {PORTFOLIO} --dry-run",
        f"    {rebal} rebalance --portfolio {PORTFOLIO}",
        f"    {rebal} plan --portfolio {PORTFOLIO}      (then: rebal approve PLAN_ID)",
        f"    {rebal} config show; {rebal} doctor",
        "",
        f"  Dashboard   {monitor}/?token=$(cat {rel(token)})   API docs {monitor}/docs",
        f"    read-only {monitor}/?token=$(cat {rel(api_token_file(token.parent, API_VIEWER_TOKEN_FILE))})",
        f"    curl -s {services['planner'].url}/readyz",
        f"    {psql} -c 'SELECT run_id, status, placed, filled FROM runs'",
        "",
        f"  Logs: {rel(services.log_dir)}/<service>.log"
        + (", demo-bot.log" if bot is not None else "")
        + f"; NATS {rel(infra.nats.log_path)}; Postgres {rel(infra.postgres.log_path)}",
        "  Ctrl-C stops everything; the next `make run` resumes with the same data.",
        "",
    ]
    return "\n".join(lines)


def run(options: Options) -> int:
    """Start everything, supervise until SIGINT/SIGTERM, stop everything in order. The exit code."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Both set explicitly: a launcher started in the background inherits SIGINT ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    var_dir = options.var_dir.absolute()
    log_dir = var_dir / "logs"
    infra = Infra(
        var_dir,
        nats_port=options.nats_port,
        postgres_port=options.postgres_port,
        auth_conf=options.root / credentials.AUTH_CONF,
        postgres_password=True,
    )
    services: Services | None = None
    bot: Child | None = None
    code = 0
    try:
        _say(f"starting NATS and Postgres (state in {_relative(var_dir, options.root)}/)")
        infra.start()
        if infra.applied:
            _say(f"applied migrations {', '.join(infra.applied)}")
        if options.rebalance and options.autopilot:  # before the first snapshot: the autopilot acts on it
            asyncio.run(demo_policy(infra.database_url, options.root))
        token = api_token_file(var_dir)
        services = Services(
            nats_url=infra.nats_url,
            database_url=infra.database_url,
            root=options.root,
            log_dir=log_dir,
            ports=options.service_ports,
            # The demo trades paper money live: one switch for every service (the API takes live
            # rebalances, every service reports the same mode; the monitor has the token live needs).
            env={"REBAL__LIVE": "true"},
            service_env={
                "monitor": {
                    "REBAL__API__TOKEN_FILE": str(token),
                    "REBAL__API__VIEWER_TOKEN_FILE": str(api_token_file(var_dir, API_VIEWER_TOKEN_FILE)),
                    **infra.nats_env("monitor"),
                },
                "optimizer": {**demo_allocation(options.bot), **infra.nats_env("optimizer")},
                **{name: infra.nats_env(name) for name in ("tracker", "planner", "executor")},
            },
        )
        _say(f"starting {', '.join(SERVICES)}")
        started = datetime.now(UTC)
        services.start(wait=False)
        for child in services:
            child.wait_ready()
            _say(f"{child.name} ready on {child.url}")
        context_file = write_client_context(var_dir, infra, services)
        _say(f"client context for rebal in {_relative(context_file, options.root)}")
        if options.bot:
            bot = Child(
                "demo-bot",
                [
                    "-m",
                    "rebal_devstack.demo_bot",
                    "--nats-url",
                    infra.nats_url,
                    *(["--var", str(var_dir)] if infra.auth_conf else []),
                    "--interval",
                    str(options.bot_interval),
                ],
                {**os.environ, "PYTHONUNBUFFERED": "1"},
                log_dir / "demo-bot.log",
                options.root,
            )
            bot.start()
            _say("demo bot publishing strategy returns (trend, meanrev, arb)")
        if options.rebalance and options.autopilot:
            _say(f"the autopilot rebalances {PORTFOLIO!r} by its policy ({DEMO_POLICY} when none was set):")
            _say(f"  {asyncio.run(first_decision(infra.database_url, started)) or 'no decision yet'}")
            _say(f"  (rebal policy show --portfolio {PORTFOLIO} says what it decided since, and why)")
        elif options.rebalance:
            _say(f"first rebalance of {PORTFOLIO!r} (live, on the paper exchange)")
            from rebal_cli import render

            outcome = asyncio.run(first_rebalance(infra.nats_login(OPERATOR_NATS_USER), band=options.band))
            _say(f"command {outcome.command.event_id} (band {options.band})")
            render.print_outcome(outcome)
        print(summary(options, infra, services, bot), flush=True)
        watched = [_watch_child(child) for child in services]
        if bot is not None:
            watched.append(_watch_child(bot))
        watched += [
            Watched(
                "nats",
                lambda: infra.nats.running,
                lambda: _ignore(infra.nats.start()),
                infra.nats.log_path,
            ),
            Watched(
                "postgres",
                lambda: infra.postgres.running,
                lambda: _ignore(infra.postgres.start()),
                infra.postgres.log_path,
            ),
        ]
        supervise(watched, state_file=var_dir / SUPERVISOR_FILE)
    except KeyboardInterrupt:
        print(flush=True)
        _say("stopping")
    except (StartFailed, OSError, RuntimeError, TimeoutError) as exc:
        _say(f"could not start: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _shutdown(services, bot, infra)
    return code


def _ignore(value: object) -> None:
    """Drop a return value (a server's ``start`` returns the server)."""


def _watch_child(child: Child) -> Watched:
    return Watched(child.name, lambda: child.running, child.start, child.log_path, lambda: child.returncode)


def _shutdown(services: Services | None, bot: Child | None, infra: Infra) -> None:
    steps: list[tuple[str, Callable[[], None]]] = []
    if services is not None:
        steps.append(("services", services.stop))
    if bot is not None:
        steps.append(("demo bot", bot.stop))
    steps += [("Postgres", infra.postgres.stop), ("NATS", infra.nats.stop)]
    for what, stop in steps:
        try:
            stop()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _say(f"stopping {what} failed: {exc}")
    _say("stopped")
