"""`make run`'s bus and database are closed as production's: NATS admits only deploy/nats/auth.conf's users
(passwords made once under var/secrets/, owner-only), Postgres asks for a password, and a cluster an
older `make run` made in trust mode is converted."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest

from rebal import subjects
from rebal_cli import commands
from rebal_devstack import credentials, demo_bot
from rebal_devstack.postgres import PostgresServer
from rebal_devstack.pytest_plugin import TEST_POSTGRES_SETTINGS
from rebal_devstack.stack import Infra, masked

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def refuses_without_password(port: int) -> None:
    with pytest.raises(REFUSED):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=10)


async def answers(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_a_trust_cluster_of_an_older_make_run_asks_for_the_password_once_started_with_one(
    postgres_tmp_path: Path,
) -> None:
    data = postgres_tmp_path / "data"
    with PostgresServer(data, settings=TEST_POSTGRES_SETTINGS) as old:  # what `make run` made before
        asyncio.run(answers(old.dsn))
    password_file = credentials.secret_file(postgres_tmp_path / "secrets" / "postgres-password")
    with PostgresServer(data, settings=TEST_POSTGRES_SETTINGS, password_file=password_file) as server:
        assert server.port is not None
        asyncio.run(refuses_without_password(server.port))
        assert asyncio.run(answers(server.dsn)) == 1
        assert not server.trusting
    with PostgresServer(data, settings=TEST_POSTGRES_SETTINGS, password_file=password_file) as again:
        assert again.port is not None
        asyncio.run(refuses_without_password(again.port))  # converted for good
        assert asyncio.run(answers(again.dsn)) == 1


def test_the_test_plugin_s_postgres_still_trusts(postgres_admin_dsn: str) -> None:
    assert ":" not in postgres_admin_dsn.split("//", 1)[1].split("@", 1)[0]  # no password in the DSN
    assert asyncio.run(answers(postgres_admin_dsn)) == 1


def stack(var: Path, auth_conf: Path | None = ROOT / credentials.AUTH_CONF) -> Infra:
    """`make run`'s NATS and Postgres (on free ports, fsync off)."""
    return Infra(var, nats_port=None, postgres_port=None, postgres_settings=TEST_POSTGRES_SETTINGS,
                 auth_conf=auth_conf, postgres_password=True)  # fmt: skip


@pytest.fixture
def secured(postgres_tmp_path: Path) -> Iterator[Infra]:
    infra = stack(postgres_tmp_path / "var")
    infra.start()
    try:
        yield infra
    finally:
        infra.stop()


async def bot_reports_as_its_own_users(infra: Infra) -> list[str]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        demo_bot.run(infra.nats_url, interval=0.2, portfolio="demo", stop=stop, var_dir=infra.var_dir)
    )
    async with commands.connected(infra.nats_login("api")) as client:
        js = client.jetstream()
        found: list[str] = []
        for _ in range(100):
            found = []
            for strategy in demo_bot.STRATEGIES:
                subject = subjects.STRATEGY_RETURN_REPORTED.subject(strategy.name)
                try:
                    await js.get_last_msg(subjects.EVENTS_STREAM, subject)
                except Exception:  # noqa: BLE001 - not there yet
                    continue
                found.append(strategy.name)
            if len(found) == len(demo_bot.STRATEGIES):
                break
            await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(task, 10) >= 1
    return found


def test_make_run_s_bus_and_database_refuse_whoever_has_no_password(secured: Infra) -> None:
    var = secured.var_dir
    files = sorted((var / credentials.SECRETS_DIR).iterdir())
    users = credentials.auth_users(ROOT / credentials.AUTH_CONF)
    assert {"bot-trend", "bot-meanrev", "bot-arb", "api", "migrate", "tracker"} <= set(users)
    assert {f.name for f in files} == {f"nats-{user}" for user in users} | {"postgres-password"}
    assert all(mode(f) == 0o600 for f in files), {f.name: oct(mode(f)) for f in files}
    assert mode(var / credentials.SECRETS_DIR) == 0o700

    async def anonymous() -> None:
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(secured.nats_url, allow_reconnect=False, max_reconnect_attempts=1,
                               connect_timeout=2)  # fmt: skip
        with pytest.raises(commands.NotRunning, match="refused the connection without a user"):
            async with commands.connected(secured.nats_url):
                pass

    asyncio.run(anonymous())
    assert secured.postgres.port is not None
    asyncio.run(refuses_without_password(secured.postgres.port))
    assert asyncio.run(answers(secured.database_url)) == 1
    assert "****" in masked(secured.database_url)
    assert secured.postgres.password not in masked(secured.database_url)
    # The streams were declared as `migrate`; each demo strategy reports as its own user.
    assert sorted(asyncio.run(bot_reports_as_its_own_users(secured))) == sorted(
        s.name for s in demo_bot.STRATEGIES
    )


def test_an_owner_only_secret_stays_so_and_keeps_its_value(tmp_path: Path) -> None:
    path = credentials.secret_file(tmp_path / "secrets" / "x")
    value = path.read_text()
    path.chmod(0o644)
    assert credentials.secret_file(path).read_text() == value and mode(path) == 0o600


def test_a_lost_password_file_is_a_one_line_reason_not_a_traceback(postgres_tmp_path: Path) -> None:
    var = postgres_tmp_path / "var"
    first = stack(var, auth_conf=None)
    first.start()
    first.stop()
    credentials.postgres_password_file(var).unlink()
    again = stack(var, auth_conf=None)
    try:
        with pytest.raises(RuntimeError, match=r"refuses the password in .*postgres-password"):
            again.start()
    finally:
        again.stop()
