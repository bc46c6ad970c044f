"""Real Postgres: round trips, per-test databases, restarts on the same data dir, SIGKILL recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from rebal_devstack import _proc
from rebal_devstack.postgres import PostgresServer
from rebal_devstack.pytest_plugin import TEST_POSTGRES_SETTINGS, FreshDatabase

pytestmark = pytest.mark.timeout(60)


async def test_round_trip(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE wallets (id text PRIMARY KEY, amount numeric NOT NULL)")
        await conn.executemany("INSERT INTO wallets VALUES ($1, $2)", [("a", "1.5"), ("b", "0.25")])
        rows = await conn.fetch("SELECT id, amount::text FROM wallets ORDER BY id")
        assert [tuple(r) for r in rows] == [("a", "1.5"), ("b", "0.25")]
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


@pytest.mark.parametrize("run", [1, 2])
async def test_each_test_gets_an_empty_database(database: FreshDatabase, run: int) -> None:
    assert database.name.startswith("test_")
    conn = await asyncpg.connect(database.dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == database.name
        # Both runs create the same table: it only works if neither sees the other's database.
        await conn.execute("CREATE TABLE marker (run int)")
        await conn.execute("INSERT INTO marker VALUES ($1)", run)
        assert await conn.fetchval("SELECT count(*) FROM marker") == 1
    finally:
        await conn.close()


async def _write(dsn: str, value: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        await conn.execute("INSERT INTO kept VALUES ($1)", value)
    finally:
        await conn.close()


async def _read(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["v"] for r in await conn.fetch("SELECT v FROM kept ORDER BY v")]
    finally:
        await conn.close()


def test_data_survives_stop_and_start_on_the_same_dir(postgres_tmp_path: Path) -> None:
    data = postgres_tmp_path / "data"
    with PostgresServer(data, settings=TEST_POSTGRES_SETTINGS) as pg:
        dsn = pg.ensure_database("rebal")
        asyncio.run(_write(dsn, "before stop"))
        pid = pg.pid
    assert pid is not None and not _proc.is_alive(pid)
    assert not (data / "postmaster.pid").exists()

    # A second `make run`: a new object on the same directory reuses the cluster, no initdb.
    with PostgresServer(data, settings=TEST_POSTGRES_SETTINGS) as pg:
        assert pg.ensure_database("rebal") == pg.dsn_for("rebal")
        assert asyncio.run(_read(pg.dsn_for("rebal"))) == ["before stop"]


def test_start_after_sigkill_recovers_committed_rows(postgres_tmp_path: Path) -> None:
    pg = PostgresServer(postgres_tmp_path / "data", settings=TEST_POSTGRES_SETTINGS).start()
    try:
        dsn = pg.ensure_database("rebal")
        asyncio.run(_write(dsn, "committed"))
        pid = pg.pid
        pg.kill()
        assert pid is not None and not _proc.is_alive(pid)
        assert (postgres_tmp_path / "data" / "postmaster.pid").exists()  # left behind, as by a crash

        pg.start()  # crash recovery from the WAL, same port
        asyncio.run(_write(dsn, "after restart"))
        assert asyncio.run(_read(dsn)) == ["after restart", "committed"]
    finally:
        pg.stop()


def test_refuses_to_start_twice_on_one_dir(postgres_tmp_path: Path) -> None:
    with (
        PostgresServer(postgres_tmp_path / "data", settings=TEST_POSTGRES_SETTINGS),
        pytest.raises(RuntimeError, match="already runs"),
    ):
        PostgresServer(postgres_tmp_path / "data").start()
