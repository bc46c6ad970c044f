"""The fund consumers: four commands, and the fills and ends of the executor's runs, to `Flows` and `Cycles`.

Translation only: each message goes to one method; the work is in `flows.py` (define, deposit, withdraw)
and `cycle.py` (the two-phase cycle), the SQL in `store.py` and `rebal.fund_store`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from rebal import bus, db, service
from rebal.events import (
    DefineFund,
    OrderFilled,
    RecordDeposit,
    RequestWithdrawal,
    RunFinished,
    RunFundCycle,
)
from rebal_planner.funds.cycle import Cycles
from rebal_planner.funds.flows import Flows


@dataclass
class FundService:
    """The fund part of the planner on one database; `history` gives the latest balance snapshot (prices
    and markets) of a portfolio."""

    database: service.Database
    history: bus.History
    publisher: bus.EventSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    flows: Flows = field(init=False)
    cycles: Cycles = field(init=False)

    def __post_init__(self) -> None:
        self.flows = Flows(lambda: self.pool, self.publisher, self.clock)
        self.cycles = Cycles(lambda: self.pool, self.history, self.publisher, self.clock, self.flows.reject)

    @property
    def pool(self) -> asyncpg.Pool:
        if self.database.pool is None:
            raise RuntimeError("the planner's database pool is not open")
        return self.database.pool

    async def start(self) -> None:
        """Open the pool and apply the migrations (0006 holds the fund tables)."""
        pool = await self.database.open()
        async with pool.acquire() as connection:
            await db.migrate(connection)

    async def on_define(self, command: DefineFund) -> None:
        await self.flows.define(command)

    async def on_deposit(self, command: RecordDeposit) -> None:
        await self.flows.deposit(command)

    async def on_withdraw(self, command: RequestWithdrawal) -> None:
        await self.flows.withdraw(command)

    async def on_cycle(self, command: RunFundCycle) -> None:
        await self.cycles.start(command)

    async def on_fill(self, fill: OrderFilled) -> None:
        await self.cycles.on_fill(fill)

    async def on_run_finished(self, finished: RunFinished) -> None:
        await self.cycles.on_run_finished(finished)


def register(broker: Any, publisher: bus.Publisher, service: FundService) -> None:
    """The fund consumers: the four commands, and the fills and ends of runs (durable, in order)."""

    def on(kind: type[Any], durable: str, handler: Callable[[Any], Any]) -> None:
        bus.consume(broker, publisher, service="planner", kind=kind, durable=durable, handler=handler)

    on(DefineFund, "planner-fund-define", service.on_define)
    on(RecordDeposit, "planner-fund-deposits", service.on_deposit)
    on(RequestWithdrawal, "planner-fund-withdrawals", service.on_withdraw)
    on(RunFundCycle, "planner-fund-cycles", service.on_cycle)
    on(OrderFilled, "planner-fund-fills", service.on_fill)
    on(RunFinished, "planner-fund-runs", service.on_run_finished)
