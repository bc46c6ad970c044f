"""A fund's commands that take effect at once: define it, credit a deposit, queue a withdrawal.

Each command is recorded once by its event id (a redelivered command changes nothing and reports the
same), checked against the fund in the same transaction, and answered with a fact or with
`FundCommandRejected` naming why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from rebal import bus, fund_store
from rebal.core.errors import InputError
from rebal.core.ledger import LEDGER_QUANTUM, Fund
from rebal.events import (
    DefineFund,
    Event,
    FundDefined,
    FundDeposited,
    FundWithdrawalRequested,
    RecordDeposit,
    RequestWithdrawal,
)
from rebal_planner.funds import store
from rebal_planner.funds.records import rejection

log = logging.getLogger("rebal.planner.funds")


@dataclass
class Flows:
    pool: Callable[[], asyncpg.Pool]
    publisher: bus.EventSink
    clock: Callable[[], datetime]

    async def reject(self, command: Event, reason: str, user: str = "") -> None:
        log.info("%s rejected for %s: %s", command.type, command.portfolio_id, reason)
        await self.publisher.publish(rejection(command, reason, user, self.clock()))

    async def _too_fine(self, command: Event, amount: Decimal | None, user: str) -> bool:
        """Rejects an amount the ledger cannot hold (finer than its unit)."""
        if amount is None or amount % LEDGER_QUANTUM == 0:
            return False
        await self.reject(command, f"amount {amount} is finer than {LEDGER_QUANTUM:f}", user)
        return True

    async def define(self, command: DefineFund) -> None:
        try:
            fund = Fund(
                command.portfolio_id, command.exchange, command.account, command.quote, command.weights
            )
        except InputError as exc:
            await self.reject(command, str(exc))
            return
        await store.define(self.pool(), fund, command.prices_from, self.clock())
        await self.publisher.publish(
            command.caused(
                FundDefined,
                now=self.clock(),
                exchange=fund.exchange,
                account=fund.account,
                quote=fund.quote,
                weights=dict(fund.weights),
                prices_from=command.prices_from,
            )
        )

    async def deposit(self, command: RecordDeposit) -> None:
        if await self._too_fine(command, command.amount, command.user_id):
            return
        fund_id, user = command.portfolio_id, command.user_id
        async with self.pool().acquire() as connection, connection.transaction():
            found = await fund_store.fund(connection, fund_id, lock=True)
            if found is None:
                await self.reject(command, f"no fund {fund_id}", user)
                return
            quote = found.fund.quote
            if await store.add_flow(
                connection, command.event_id, fund_id, user, "deposit", command.amount, self.clock()
            ):
                await store.change(connection, fund_id, [(user, quote, command.amount)])
            cash = await store.amount(connection, fund_id, user, quote)
        await self.publisher.publish(
            command.caused(FundDeposited, now=self.clock(), user_id=user, amount=command.amount, cash=cash)
        )

    async def withdraw(self, command: RequestWithdrawal) -> None:
        if await self._too_fine(command, command.amount, command.user_id):
            return
        fund_id, user = command.portfolio_id, command.user_id
        async with self.pool().acquire() as connection, connection.transaction():
            found = await fund_store.fund(connection, fund_id, lock=True)
            held = await fund_store.holds(connection, fund_id, user)
            if found is None or not held:
                await self.reject(
                    command, f"no fund {fund_id}" if found is None else f"{user} holds nothing", user
                )
                return
            await store.add_flow(
                connection, command.event_id, fund_id, user, "withdrawal", command.amount, self.clock()
            )
        await self.publisher.publish(
            command.caused(FundWithdrawalRequested, now=self.clock(), user_id=user, amount=command.amount)
        )
