"""The planner's writes to the fund tables (migration 0006), and the reads only a cycle needs.

Every function runs on the caller's connection (or pool), inside its transaction when it has one: a
command's flow and its ledger change, a cycle's start and its flows, a phase's settlement commit together
or not at all. The reads the monitor shares are in `rebal.fund_store`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from rebal.core.ledger import Fund
from rebal.events import OrderFilled
from rebal.fund_store import Queryable

Row = Any  # an asyncpg record: columns by name


async def define(db: Queryable, fund: Fund, prices_from: str, now: datetime) -> None:
    """Create the fund, or change it and let it trade again (a fund that needed adjustment)."""
    weights = json.dumps({a: str(w) for a, w in sorted(fund.weights.items())})
    await db.execute(
        "INSERT INTO funds (fund_id, exchange, account, quote, weights, prices_from, status, reason,"
        " updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', '', $7) ON CONFLICT (fund_id) DO UPDATE"
        " SET exchange = $2, account = $3, quote = $4, weights = $5, prices_from = $6, status = 'active',"
        " reason = '', updated_at = $7",
        fund.fund_id,
        fund.exchange,
        fund.account,
        fund.quote,
        weights,
        prices_from,
        now,
    )


async def change(db: Queryable, fund_id: str, rows: Iterable[tuple[str, str, Decimal]]) -> None:
    """Add each (user, asset, change) to the ledger."""
    await db.executemany(
        "INSERT INTO fund_ledger (fund_id, user_id, asset, amount) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (fund_id, user_id, asset) DO UPDATE SET amount = fund_ledger.amount + $4",
        [(fund_id, user, asset, amount) for user, asset, amount in rows],
    )


async def amount(db: Queryable, fund_id: str, user: str, asset: str) -> Decimal | None:
    found: Decimal | None = await db.fetchval(
        "SELECT amount FROM fund_ledger WHERE fund_id = $1 AND user_id = $2 AND asset = $3",
        fund_id,
        user,
        asset,
    )
    return found


async def add_flow(
    db: Queryable,
    flow_id: uuid.UUID,
    fund_id: str,
    user: str,
    kind: str,
    value: Decimal | None,
    now: datetime,
) -> bool:
    """Record a pending deposit or withdrawal once (by its command's id); False when it was already."""
    created = await db.fetchval(
        "INSERT INTO fund_flows (flow_id, fund_id, user_id, kind, amount, status, created_at)"
        " VALUES ($1, $2, $3, $4, $5, 'pending', $6) ON CONFLICT DO NOTHING RETURNING true",
        flow_id,
        fund_id,
        user,
        kind,
        value,
        now,
    )
    return bool(created)


# Cycles.


async def running_cycle(db: Queryable, fund_id: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await db.fetchval(
        "SELECT cycle_id FROM fund_cycles WHERE fund_id = $1 AND status = 'running'", fund_id
    )
    return found


async def pending_flows(db: Queryable, fund_id: str) -> list[Row]:
    """The flows a new cycle takes, in the order they came."""
    rows: list[Row] = await db.fetch(
        "SELECT flow_id, user_id, kind, amount FROM fund_flows"
        " WHERE fund_id = $1 AND status = 'pending' ORDER BY created_at, flow_id",
        fund_id,
    )
    return rows


async def reject_flow(db: Queryable, flow_id: uuid.UUID, reason: str) -> None:
    await db.execute(
        "UPDATE fund_flows SET status = 'rejected', reason = $2 WHERE flow_id = $1", flow_id, reason
    )


async def open_cycle(
    db: Queryable,
    cycle_id: uuid.UUID,
    fund_id: str,
    flow_ids: Sequence[uuid.UUID],
    run_id: uuid.UUID,
    inputs: Mapping[str, Any],
    now: datetime,
) -> None:
    """Start the cycle's phase 1 with its inputs, taking the flows."""
    await db.execute(
        "UPDATE fund_flows SET status = 'running', cycle_id = $2 WHERE flow_id = ANY($1::uuid[])",
        list(flow_ids),
        cycle_id,
    )
    await db.execute(
        "INSERT INTO fund_cycles (cycle_id, fund_id, phase, run_ids, status, inputs, created_at,"
        " updated_at) VALUES ($1, $2, 1, $3, 'running', $4, $5, $5)",
        cycle_id,
        fund_id,
        [run_id],
        json.dumps(inputs),
        now,
    )


async def last_settled(db: Queryable, fund_id: str) -> Row | None:
    """The inputs and end of the fund's latest settled cycle."""
    row: Row | None = await db.fetchrow(
        "SELECT inputs, updated_at FROM fund_cycles WHERE fund_id = $1 AND status = 'done'"
        " ORDER BY updated_at DESC LIMIT 1",
        fund_id,
    )
    return row


async def needs_adjustment(db: Queryable, fund_id: str, reason: str, now: datetime) -> int:
    """Stop the fund trading: its running cycle cancelled, the cycle's flows pending again; returns how
    many cycles were cancelled."""
    await db.execute(
        "UPDATE funds SET status = 'needs_adjustment', reason = $2, updated_at = $3 WHERE fund_id = $1",
        fund_id,
        reason,
        now,
    )
    cancelled = await db.fetch(
        "UPDATE fund_cycles SET status = 'cancelled', updated_at = $2"
        " WHERE fund_id = $1 AND status = 'running' RETURNING cycle_id",
        fund_id,
        now,
    )
    await db.execute(
        "UPDATE fund_flows SET status = 'pending', cycle_id = NULL WHERE fund_id = $1 AND status = 'running'",
        fund_id,
    )
    return len(cancelled)


async def running(db: Queryable, cycle_id: uuid.UUID) -> Row | None:
    row: Row | None = await db.fetchrow(
        "SELECT * FROM fund_cycles WHERE cycle_id = $1 AND status = 'running'", cycle_id
    )
    return row


async def cycle_of_run(db: Queryable, run_id: uuid.UUID) -> Row | None:
    """The cycle one of whose phases `run_id` is, locked for the caller's transaction."""
    row: Row | None = await db.fetchrow(
        "SELECT * FROM fund_cycles WHERE $1 = ANY(run_ids) FOR UPDATE", run_id
    )
    return row


async def is_fund_run(db: Queryable, run_id: uuid.UUID) -> bool:
    return bool(await db.fetchval("SELECT true FROM fund_cycles WHERE $1 = ANY(run_ids)", run_id))


async def to_phase_two(
    db: Queryable, cycle_id: uuid.UUID, run_ids: Sequence[uuid.UUID], reasons: Sequence[str], now: datetime
) -> None:
    """Phase 1 settled: the cycle waits for phase 2's run, keeping the reasons the runs gave so far."""
    await db.execute(
        "UPDATE fund_cycles SET phase = 2, run_ids = $2, updated_at = $3,"
        " inputs = inputs || jsonb_build_object('run_reasons', $4::jsonb) WHERE cycle_id = $1",
        cycle_id,
        list(run_ids),
        now,
        json.dumps(list(reasons)),
    )


async def settle_cycle(
    db: Queryable, cycle_id: uuid.UUID, report: Mapping[str, Any], paid: Mapping[str, Decimal], now: datetime
) -> None:
    """The cycle done with its report; its flows done, each withdrawal with what it paid."""
    await db.execute(
        "UPDATE fund_cycles SET status = 'done', report = $2, updated_at = $3 WHERE cycle_id = $1",
        cycle_id,
        json.dumps(report),
        now,
    )
    flows = await db.fetch("SELECT flow_id, user_id, kind FROM fund_flows WHERE cycle_id = $1", cycle_id)
    for flow in flows:
        await db.execute(
            "UPDATE fund_flows SET status = 'done', paid = $2 WHERE flow_id = $1",
            flow["flow_id"],
            paid.get(flow["user_id"]) if flow["kind"] == "withdrawal" else None,
        )


# Fills of the cycles' runs.


async def add_fill(db: Queryable, fill: OrderFilled) -> None:
    """Keep a fill of a fund run, once by trade id (a fill of any other run is not kept)."""
    await db.execute(
        "INSERT INTO fund_fills (trade_id, run_id, client_order_id, symbol, side, amount, price, fee,"
        " fee_asset) SELECT $1, $2, $9, $3, $4, $5, $6, $7, $8 WHERE EXISTS"
        " (SELECT 1 FROM fund_cycles WHERE $2 = ANY(run_ids)) ON CONFLICT DO NOTHING",
        fill.trade_id,
        fill.correlation_id,
        fill.symbol,
        fill.side,
        fill.amount,
        fill.price,
        fill.fee,
        fill.fee_asset,
        fill.client_order_id,
    )


async def fills(db: Queryable, run_ids: Sequence[uuid.UUID]) -> list[Row]:
    rows: list[Row] = await db.fetch("SELECT * FROM fund_fills WHERE run_id = ANY($1::uuid[])", list(run_ids))
    return rows


async def filled_orders(db: Queryable, run_id: uuid.UUID) -> int:
    """How many of the run's orders have a fill kept."""
    return int(
        await db.fetchval("SELECT count(DISTINCT client_order_id) FROM fund_fills WHERE run_id = $1", run_id)
    )
