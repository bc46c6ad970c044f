"""Strategy returns into Postgres: a whole batch of messages in one statement, each one counted.

Rows are idempotent by (strategy, timestamp): a duplicate or a redelivery inserts nothing
(``ON CONFLICT DO NOTHING``), and the order they arrive in does not matter. A row keeps the portfolio of
the event's envelope: that is how a strategy belongs to a portfolio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import asyncpg
import orjson

from rebal import metrics
from rebal.core.numbers import dec_str
from rebal.events import StrategyReturnReported

INSERT = (
    "INSERT INTO strategy_returns (strategy_id, ts, period_return, equity, positions, portfolio_id)"
    " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::numeric[], $4::numeric[], $5::jsonb[],"
    " $6::text[])"
    " ON CONFLICT (strategy_id, ts) DO NOTHING"
)


@dataclass(frozen=True)
class ReturnRow:
    strategy_id: str
    ts: datetime
    period_return: Decimal
    equity: Decimal | None
    positions: str | None
    portfolio_id: str = ""

    @classmethod
    def of(cls, event: StrategyReturnReported) -> ReturnRow:
        positions = None
        if event.positions is not None:
            positions = orjson.dumps({k: dec_str(v) for k, v in event.positions.items()}).decode()
        return cls(
            event.strategy_id,
            event.timestamp,
            event.period_return,
            event.equity,
            positions,
            event.portfolio_id,
        )


@dataclass(frozen=True)
class ReturnsStore:
    pool: asyncpg.Pool

    async def insert(self, rows: Sequence[ReturnRow]) -> int:
        """Store rows not stored yet; returns how many were new."""
        status = await self.pool.execute(
            INSERT,
            [row.strategy_id for row in rows],
            [row.ts for row in rows],
            [row.period_return for row in rows],
            [row.equity for row in rows],
            [row.positions for row in rows],
            [row.portfolio_id for row in rows],
        )
        return int(status.rsplit(" ", 1)[-1])


@dataclass
class ReturnsIngest:
    """Stores a batch of strategy returns in one statement and counts every one of them."""

    store: ReturnsWriter
    latest: dict[str, float] = field(default_factory=dict)
    # Told which portfolios got new returns (the statistics refresher), once they are stored.
    on_stored: Callable[[set[str]], None] = lambda portfolios: None

    async def on_returns(self, events: Sequence[StrategyReturnReported]) -> None:
        if not events:
            return
        if await self.store.insert([ReturnRow.of(event) for event in events]):
            self.on_stored({event.portfolio_id for event in events})
        for event in events:
            strategy = event.strategy_id
            metrics.STRATEGY_RETURNS.labels(strategy=strategy).inc()
            ts = event.timestamp.timestamp()
            if ts > self.latest.get(strategy, float("-inf")):
                self.latest[strategy] = ts
                metrics.STRATEGY_LAST_RETURN.labels(strategy=strategy).set(ts)


class ReturnsWriter(Protocol):
    async def insert(self, rows: Sequence[ReturnRow]) -> int: ...
