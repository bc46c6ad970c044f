"""One observed system for the whole package, configured as in production: the five services as processes
(real NATS with deploy/nats/auth.conf, real Postgres), each connecting as its own NATS user with its
password and the database URL (with a password) read from files, exporting their spans over OTLP to a
receiver of the test's own; a real Prometheus scraping them every second with Rebal's alert rules; a bot
reporting its returns under its own user, and one live rebalance started by an operator's span under the
API's user."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rebal import subjects, telemetry
from rebal.events import RunFinished, StartRebalance, derive_run_id, new_event
from rebal_devstack import _proc, demo_bot
from rebal_devstack._proc import LOOPBACK
from rebal_devstack.nats import NatsServer
from rebal_devstack.postgres import create_database, drop_database
from rebal_devstack.stack import SERVICES, Services
from tests.e2e.conftest import TEST_SETTINGS
from tests.e2e.flow import PORTFOLIO, client, publish_raw, ready_for_commands, wait_for
from tests.messaging import auth_users
from tests.observability.otlp import Receiver, otlp_receiver

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_SECONDS = 1
BAND = Decimal("0.01")
NATS_USERS = tuple(user.replace("-", "_") for user in auth_users())
BOT = "trend"


@dataclass(frozen=True)
class Observed:
    prometheus: str
    services: Services
    receiver: Receiver
    operator_spans: InMemorySpanExporter
    trace_id: str
    operator_span_id: str
    run_id: uuid.UUID
    finished: RunFinished
    log_dir: Path
    secrets: dict[str, str]


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def query(prometheus: str, expr: str) -> dict[str, Any]:
    """The Prometheus HTTP API's answer to an instant query (a 400 for a bad expression, as a dict)."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        answer: dict[str, Any] = get_json(url)
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read())
    return answer


def prometheus_config(services: Services, directory: Path) -> Path:
    """deploy/prometheus/prometheus.yml with its targets on loopback, scraped every second."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    [job] = config["scrape_configs"]
    for static in job["static_configs"]:
        static["targets"] = [f"{LOOPBACK}:{services[static['labels']['service']].port}"]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_ready(name: str, argv: list[str], ready: str, directory: Path) -> subprocess.Popen[bytes]:
    """A server process (its log in `directory`), once `ready` answers 200; it dies with this process."""
    log = (directory / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_proc.die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - main thread only
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(ready, timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{name} did not start: {(directory / f'{name}.log').read_text()}")
        time.sleep(0.2)


def start_prometheus(config: Path, directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _proc.free_port()
    url = f"http://{LOOPBACK}:{port}"
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    return start_ready("prometheus", argv, f"{url}/-/ready", directory), url


def as_user(url: str, user: str, password: str) -> str:
    return url.replace("nats://", f"nats://{user}:{password}@")


async def rebalance_as_an_operator(
    url: str, bot_url: str, provider: TracerProvider
) -> tuple[str, str, uuid.UUID, RunFinished]:
    """What happens in a day, in a few seconds: a bot reports its return, a bad message arrives, and an
    operator asks for a live rebalance (as the CLI does: a span, its context in the command's headers)."""
    await ready_for_commands(url)
    async with client(bot_url) as nc:
        now = datetime.now(UTC)
        [strategy] = [s for s in demo_bot.STRATEGIES if s.name == BOT]
        await demo_bot.publish(
            nc, demo_bot.reports(now, {}, portfolio=PORTFOLIO, now=now, strategies=(strategy,))
        )
    await publish_raw(url, StartRebalance.topic.subject(PORTFOLIO), b'{"type": "StartRebalance", ')
    command = new_event(
        StartRebalance,
        key=uuid.uuid4(),
        now=datetime.now(UTC),
        portfolio_id=PORTFOLIO,
        dry_run=False,
        band=BAND,
        requested_by="cli",
    )
    run_id = derive_run_id(command)
    with telemetry.operator_span("rebal rebalance", provider=provider, portfolio=PORTFOLIO) as span:
        headers = dict(telemetry.inject({"Nats-Msg-Id": str(command.event_id)}))
        async with client(url) as nc:
            await nc.jetstream().publish(
                command.subject,
                command.model_dump_json().encode(),
                stream=subjects.COMMANDS_STREAM,
                headers=headers,
            )
        context = span.get_span_context()
    finished = await wait_for(url, RunFinished, lambda e: e.correlation_id == run_id, timeout=40.0)
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", run_id, finished


def scraped(prometheus: str, expr: str) -> bool:
    return bool(query(prometheus, expr)["data"]["result"])


def exported(receiver: Receiver, service: str, trace_id: str) -> bool:
    return any(s.service == service and s.trace_id == trace_id for s in receiver.snapshot())


def wait_until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout} s")
        time.sleep(0.25)


def with_password(dsn: str, password: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    user = parts.username or "postgres"
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urllib.parse.urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, ""))


@pytest.fixture(scope="package")
def observed(postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    directory = tmp_path_factory.mktemp("observed")
    name = f"test_{uuid.uuid4().hex}"
    dsn = create_database(postgres_admin_dsn, name, if_missing=False)
    secrets = {user: f"nats-secret-{user}-{uuid.uuid4().hex[:12]}" for user in NATS_USERS}
    secrets["database"] = f"db-secret-{uuid.uuid4().hex}"
    files = directory / "secrets"
    files.mkdir()
    # Postgres here trusts loopback: the password is carried, not checked; it must still never show.
    (files / "database_url").write_text(with_password(dsn, secrets["database"]) + "\n")
    service_env: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        (files / f"nats_{service}").write_text(secrets[service] + "\n")
        service_env[service] = {
            **TEST_SETTINGS.get(service, {}),
            "REBAL__NATS__USER": service,
            "REBAL__NATS__PASSWORD_FILE": str(files / f"nats_{service}"),
            "REBAL__DATABASE__URL_FILE": str(files / "database_url"),
        }
    nats_dir = directory / "nats"
    nats_dir.mkdir()
    shutil.copy(DEPLOY / "nats" / "auth.conf", nats_dir / "auth.conf")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with otlp_receiver() as receiver, pytest.MonkeyPatch.context() as env:
            for user in NATS_USERS:
                env.setenv(f"{user.upper()}_PASSWORD", secrets[user])  # what auth.conf reads
            server = NatsServer(nats_dir / "jetstream", extra_config="include ./auth.conf")
            with server:
                for user in NATS_USERS:
                    env.delenv(f"{user.upper()}_PASSWORD")  # the services get theirs from files only
                tracing = {
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                }
                services = Services(
                    nats_url=server.url,
                    # Only the file is right: a service that ignored it would not become ready.
                    database_url="postgresql://nobody@127.0.0.1:1/nothing",
                    root=ROOT,
                    log_dir=directory / "logs",
                    env=tracing,
                    service_env=service_env,
                )
                operator = as_user(server.url, "api", secrets["api"])
                bot = as_user(server.url, f"bot-{BOT}", secrets[f"bot_{BOT}"])
                prometheus: subprocess.Popen[bytes] | None = None
                try:
                    services.start()
                    prometheus, url = start_prometheus(prometheus_config(services, directory), directory)
                    trace_id, span_id, run_id, finished = asyncio.run(
                        rebalance_as_an_operator(operator, bot, provider)
                    )
                    # Scraped after the run, twice (rates need two samples), and the spans exported.
                    wait_until(partial(scraped, url, "rebal_runs_total"), "no rebal_runs_total")
                    time.sleep(2 * SCRAPE_SECONDS + 0.5)
                    wait_until(
                        partial(exported, receiver, "rebal-executor", trace_id), "no executor span of the run"
                    )
                    yield Observed(
                        url,
                        services,
                        receiver,
                        exporter,
                        trace_id,
                        span_id,
                        run_id,
                        finished,
                        directory / "logs",
                        secrets,
                    )
                finally:
                    if prometheus is not None:
                        _proc.terminate(prometheus, signal.SIGTERM, 10.0)
                    services.kill()
                    left = _proc.wait_gone(services.pids, timeout=10.0)
                assert left == [], f"service processes left behind: {left}"
    finally:
        provider.shutdown()
        drop_database(postgres_admin_dsn, name)
