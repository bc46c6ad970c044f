"""The API's Postgres side: the journal read back (latest events, runs with orders and fills, values, flows,
strategies' returns, trades). Stored plans: `plan_store`.

Every function takes the pool and returns plain JSON-ready values (decimals as strings, times ISO 8601).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from rebal import strategy_store
from rebal.core.numbers import dec_str

JsonDict = dict[str, Any]
# Where a read runs: the pool (a connection each time) or one connection taken for several reads.
Reader = strategy_store.Connection
# A strategy's performance is computed over at most this many of its latest returns.
PERFORMANCE_MAX_RETURNS = 100_000
EXPORT_PREFETCH = 500


async def _nothing_to_reset(connection: object) -> None:
    """The API leaves no session state behind (no LISTEN, advisory locks or SET; its transactions are
    managed and rolled back by asyncpg if open): the default reset would cost a round trip per request."""


@dataclass
class ApiPool:
    """The API's own connections (the journal's consumers keep theirs)."""

    dsn: str
    size: int
    pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.size,
                reset=_nothing_to_reset,
                server_settings={"timezone": "UTC"},  # times Postgres renders in JSON end in +00:00
            )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


def jsonable(value: object) -> object:
    if isinstance(value, Decimal):
        return dec_str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass(frozen=True)
class Stored:
    """One journaled event: its id, when it happened, and its payload."""

    event_id: uuid.UUID
    occurred_at: datetime
    payload: JsonDict


async def latest_event(pool: Reader, portfolio: str, types: Sequence[str]) -> Stored | None:
    row = await pool.fetchrow(
        "SELECT event_id, occurred_at, payload::text AS payload FROM events"
        " WHERE portfolio_id = $1 AND type = ANY($2::text[])"
        " ORDER BY occurred_at DESC, stored_at DESC LIMIT 1",
        portfolio,
        list(types),
    )
    return None if row is None else Stored(row["event_id"], row["occurred_at"], json.loads(row["payload"]))


async def event(pool: asyncpg.Pool, event_id: uuid.UUID) -> Stored | None:
    row = await pool.fetchrow(
        "SELECT event_id, occurred_at, payload::text AS payload FROM events WHERE event_id = $1", event_id
    )
    return None if row is None else Stored(row["event_id"], row["occurred_at"], json.loads(row["payload"]))


async def plan_outcome(pool: asyncpg.Pool, run_id: uuid.UUID) -> Stored | None:
    """The planner's answer for a run (its plan or why there is none), once journaled."""
    row = await pool.fetchrow(
        "SELECT event_id, occurred_at, payload::text AS payload FROM events WHERE correlation_id = $1"
        " AND type IN ('RebalancePlanned', 'PlanFailed') ORDER BY occurred_at LIMIT 1",
        run_id,
    )
    return None if row is None else Stored(row["event_id"], row["occurred_at"], json.loads(row["payload"]))


async def latest_optimization(pool: asyncpg.Pool, portfolio: str) -> Stored | None:
    row = await pool.fetchrow(
        "SELECT event_id, occurred_at, (payload->'optimization')::text AS payload FROM events"
        " WHERE portfolio_id = $1 AND type = 'TargetWeightsComputed'"
        " AND jsonb_typeof(payload->'optimization') = 'object' ORDER BY occurred_at DESC LIMIT 1",
        portfolio,
    )
    return None if row is None else Stored(row["event_id"], row["occurred_at"], json.loads(row["payload"]))


# History.

RUN_COLUMNS = (
    "run_id, plan_id, portfolio_id, dry_run, status, orders, placed, filled, skipped, failed,"
    " reasons::text AS reasons, skips::text AS skips, planned_at, finished_at"
)


def _run(row: asyncpg.Record) -> JsonDict:
    return {
        "run_id": str(row["run_id"]),
        "plan_id": str(row["plan_id"]),
        "portfolio_id": row["portfolio_id"],
        "dry_run": row["dry_run"],
        "status": row["status"],
        "planned_at": row["planned_at"].isoformat(),
        "finished_at": jsonable(row["finished_at"]),
        "counts": {key: row[key] for key in ("orders", "placed", "filled", "skipped", "failed")},
        "reasons": json.loads(row["reasons"]),
        "skips": json.loads(row["skips"]),
    }


async def history(
    pool: asyncpg.Pool,
    portfolio: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    include_previews: bool,
    with_orders: bool = True,
) -> tuple[list[JsonDict], tuple[datetime, uuid.UUID] | None]:
    """A page of runs, newest first, with their orders and fills; and the key after the page, if any."""
    previews = "" if include_previews else " AND NOT dry_run"
    async with pool.acquire() as connection:
        if after is None:
            rows = await connection.fetch(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE portfolio_id = $1{previews}"
                " ORDER BY planned_at DESC, run_id DESC LIMIT $2",
                portfolio,
                limit + 1,
            )
        else:
            rows = await connection.fetch(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE portfolio_id = $1{previews}"
                " AND (planned_at, run_id) < ($2, $3) ORDER BY planned_at DESC, run_id DESC LIMIT $4",
                portfolio,
                after[0],
                after[1],
                limit + 1,
            )
        page = rows[:limit]
        runs = [_run(row) for row in page]
        if with_orders and runs:
            ids = [row["run_id"] for row in page]
            orders = await connection.fetch(
                "SELECT client_order_id, run_id, account, exchange, symbol, side, amount, filled, phase,"
                " placed_at FROM orders WHERE run_id = ANY($1::uuid[]) ORDER BY placed_at, client_order_id",
                ids,
            )
            fills = await connection.fetch(
                "SELECT trade_id, client_order_id, amount, price, fee, fee_asset, filled_at FROM fills"
                " WHERE run_id = ANY($1::uuid[]) ORDER BY filled_at, trade_id",
                ids,
            )
            by_order: dict[str, list[JsonDict]] = {}
            for fill in fills:
                by_order.setdefault(fill["client_order_id"], []).append(
                    {key: jsonable(value) for key, value in fill.items() if key != "client_order_id"}
                )
            by_run: dict[str, list[JsonDict]] = {}
            for order in orders:
                document = {key: jsonable(value) for key, value in order.items() if key != "run_id"}
                document["fills"] = by_order.get(order["client_order_id"], [])
                by_run.setdefault(str(order["run_id"]), []).append(document)
            for run in runs:
                run["orders"] = by_run.get(run["run_id"], [])
    more = (page[-1]["planned_at"], page[-1]["run_id"]) if len(rows) > limit else None
    return runs, more


async def latest_run(pool: Reader, portfolio: str, *, dry_run: bool) -> JsonDict | None:
    """The portfolio's latest real run (`dry_run` False) or latest preview, without its orders."""
    row = await pool.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE portfolio_id = $1 AND dry_run = $2"
        " ORDER BY planned_at DESC, run_id DESC LIMIT 1",
        portfolio,
        dry_run,
    )
    return None if row is None else _run(row)


def _iso(column: str) -> str:
    """A timestamptz as JSON: ISO 8601 with the session's offset, UTC on the API's connections."""
    return column


def _number(column: str) -> str:
    """A numeric as the shortest exact decimal string (no trailing zeros), like `dec_str`."""
    return f"trim_scale({column})::text"


# One round trip: Postgres builds the page's JSON (runs, their orders, each order's fills) and the API
# hands the text on; Python parses and re-encodes nothing (the history figure: p99 under 50 ms).
def _history_sql(keyset: bool) -> str:
    after = "AND (planned_at, run_id) < ($4, $5::uuid)" if keyset else ""
    # `page` holds one run more than asked for: it says whether there is a next page.
    return f"""
WITH page AS (
    SELECT * FROM runs WHERE portfolio_id = $1 AND ($2::boolean OR NOT dry_run) {after}
    ORDER BY planned_at DESC, run_id DESC LIMIT $3 + 1
), shown AS (
    SELECT * FROM page ORDER BY planned_at DESC, run_id DESC LIMIT $3
), last AS (
    SELECT planned_at, run_id FROM shown ORDER BY planned_at, run_id LIMIT 1
)
SELECT (SELECT coalesce(json_agg(json_build_object(
    'run_id', p.run_id, 'plan_id', p.plan_id, 'portfolio_id', p.portfolio_id, 'dry_run', p.dry_run,
    'status', p.status, 'planned_at', {_iso("p.planned_at")}, 'finished_at', {_iso("p.finished_at")},
    'counts', json_build_object('orders', p.orders, 'placed', p.placed, 'filled', p.filled,
                                'skipped', p.skipped, 'failed', p.failed),
    'reasons', p.reasons, 'skips', p.skips,
    'orders', coalesce((
        SELECT json_agg(json_build_object(
            'client_order_id', o.client_order_id, 'account', o.account, 'exchange', o.exchange,
            'symbol', o.symbol, 'side', o.side, 'amount', {_number("o.amount")},
            'filled', {_number("o.filled")}, 'phase', o.phase, 'placed_at', {_iso("o.placed_at")},
            'fills', coalesce((
                SELECT json_agg(json_build_object(
                    'trade_id', f.trade_id, 'amount', {_number("f.amount")}, 'price', {_number("f.price")},
                    'fee', {_number("f.fee")}, 'fee_asset', f.fee_asset, 'filled_at', {_iso("f.filled_at")}
                ) ORDER BY f.filled_at, f.trade_id)
                FROM fills f WHERE f.client_order_id = o.client_order_id), '[]')
        ) ORDER BY o.placed_at, o.client_order_id)
        FROM orders o WHERE o.run_id = p.run_id), '[]')
) ORDER BY p.planned_at DESC, p.run_id DESC), '[]')::text FROM shown p) AS runs,
(SELECT count(*) FROM page) > $3 AS more,
(SELECT planned_at FROM last) AS last_at,
(SELECT run_id FROM last) AS last_id
"""


HISTORY_FIRST = _history_sql(keyset=False)
HISTORY_AFTER = _history_sql(keyset=True)


async def history_json(
    pool: asyncpg.Pool,
    portfolio: str,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    include_previews: bool,
) -> tuple[str, tuple[datetime, uuid.UUID] | None]:
    """A page of runs as JSON text (see `history`), and the key after the page when there are more;
    one round trip."""
    if after is None:
        row = await pool.fetchrow(HISTORY_FIRST, portfolio, include_previews, limit)
    else:
        row = await pool.fetchrow(HISTORY_AFTER, portfolio, include_previews, limit, *after)
    assert row is not None
    return row["runs"], (row["last_at"], row["last_id"]) if row["more"] else None


# The portfolio's own values and the money that came in or went out.

# At most this many snapshots journaled before `portfolio_values` existed are valued per request.
BACKFILL_VALUES = 2000


@dataclass(frozen=True)
class Flow:
    """Money that came into (amount > 0) or went out of (< 0) an account of the portfolio."""

    at: datetime
    asset: str
    amount: Decimal
    kind: str
    reference: str


async def portfolio_values(pool: asyncpg.Pool, portfolio: str) -> tuple[list[float], list[float], str | None]:
    """(times in seconds, values, the valuation currency) of the portfolio's snapshots, oldest first."""
    rows = await pool.fetch(
        "SELECT extract(epoch FROM at)::float8 AS t, value, quote FROM portfolio_values"
        " WHERE portfolio_id = $1 ORDER BY at, snapshot_id",
        portfolio,
    )
    quote = rows[-1]["quote"] if rows else None
    return [row["t"] for row in rows], [row["value"] for row in rows], quote


async def snapshots_without_value(pool: asyncpg.Pool, portfolio: str) -> list[Stored]:
    """Snapshots journaled before their values were kept (at most `BACKFILL_VALUES`)."""
    rows = await pool.fetch(
        "SELECT e.event_id, e.occurred_at, e.payload::text AS payload FROM events e"
        " LEFT JOIN portfolio_values v ON v.snapshot_id = e.event_id"
        " WHERE e.portfolio_id = $1 AND e.type = 'BalanceSnapshotTaken' AND v.snapshot_id IS NULL"
        " ORDER BY e.occurred_at DESC LIMIT $2",
        portfolio,
        BACKFILL_VALUES,
    )
    return [Stored(row["event_id"], row["occurred_at"], json.loads(row["payload"])) for row in rows]


FLOWS = """
WITH accounts(exchange, account) AS (SELECT * FROM unnest($1::text[], $2::text[]))
SELECT f.created_at AS at, fu.quote AS asset, f.amount AS amount, 'fund deposit' AS kind,
       fu.fund_id || ': ' || f.user_id AS reference
  FROM fund_flows f JOIN funds fu USING (fund_id)
 WHERE f.kind = 'deposit' AND f.status <> 'rejected' AND (fu.exchange, fu.account) IN (SELECT * FROM accounts)
UNION ALL
SELECT c.updated_at, fu.quote, -f.paid, 'fund withdrawal', fu.fund_id || ': ' || f.user_id
  FROM fund_flows f JOIN funds fu USING (fund_id) JOIN fund_cycles c ON c.cycle_id = f.cycle_id
 WHERE f.kind = 'withdrawal' AND f.status = 'done' AND f.paid > 0
   AND (fu.exchange, fu.account) IN (SELECT * FROM accounts)
UNION ALL
SELECT d.credited_at, d.asset, d.amount, 'paper deposit', d.reference
  FROM paper.deposits d
 WHERE (d.exchange, d.account) IN (SELECT * FROM accounts)
   AND NOT EXISTS (SELECT 1 FROM funds fu WHERE fu.exchange = d.exchange AND fu.account = d.account)
ORDER BY 1
"""


async def portfolio_flows(pool: asyncpg.Pool, accounts: Sequence[tuple[str, str]]) -> list[Flow]:
    """The money that came into or went out of these (exchange, account)s: a fund's deposits and paid
    withdrawals (a fund's ledger says whose money it is), and deposits onto the paper exchange's other
    accounts (`rebal paper deposit`)."""
    if not accounts:
        return []
    rows = await pool.fetch(FLOWS, [a[0] for a in accounts], [a[1] for a in accounts])
    return [Flow(row["at"], row["asset"], row["amount"], row["kind"], row["reference"]) for row in rows]


# Strategies.


async def strategy_returns(pool: asyncpg.Pool, portfolio: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per strategy of the portfolio: (timestamps in seconds, period returns), oldest first."""
    rows = await pool.fetch(
        "SELECT strategy_id, extract(epoch FROM ts)::float8 AS stamp, period_return FROM ("
        f" SELECT strategy_id, ts, {strategy_store.RETURN_AS_FLOAT} AS period_return,"
        " row_number() OVER (PARTITION BY strategy_id ORDER BY ts DESC) AS n"
        " FROM strategy_returns WHERE portfolio_id = $1) latest WHERE n <= $2 ORDER BY strategy_id, ts",
        portfolio,
        PERFORMANCE_MAX_RETURNS,
    )
    read: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        stamps, values = read.setdefault(row["strategy_id"], ([], []))
        stamps.append(row["stamp"])
        values.append(row["period_return"])
    series: dict[str, tuple[list[float], list[float]]] = {}
    for strategy, (stamps, values) in read.items():
        # A row stored out of bounds (before they were enforced) is skipped and reported, not fatal.
        kept_stamps, kept = strategy_store.usable_returns(portfolio, strategy, stamps, values)
        if kept.size:
            series[strategy] = (kept_stamps.tolist(), kept.tolist())
    return series


# Exports (streamed: a cursor inside a transaction, rows handed on as they come).

TRADES = (
    "SELECT f.filled_at, f.trade_id, f.client_order_id, f.run_id, f.portfolio_id, o.account, o.exchange,"
    " f.symbol, f.side, f.amount, f.price, f.fee, f.fee_asset FROM fills f"
    " LEFT JOIN orders o ON o.client_order_id = f.client_order_id"
    " WHERE f.portfolio_id = $1 ORDER BY f.filled_at, f.trade_id"
)
TRADE_FIELDS = (
    "filled_at",
    "trade_id",
    "client_order_id",
    "run_id",
    "portfolio_id",
    "account",
    "exchange",
    "symbol",
    "side",
    "amount",
    "price",
    "fee",
    "fee_asset",
)


async def trades(pool: asyncpg.Pool, portfolio: str) -> AsyncIterator[JsonDict]:
    async with pool.acquire() as connection, connection.transaction():
        async for row in connection.cursor(TRADES, portfolio, prefetch=EXPORT_PREFETCH):
            yield {key: jsonable(row[key]) for key in TRADE_FIELDS}
