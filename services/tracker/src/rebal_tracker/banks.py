"""The balances of bank accounts (`"kind": "bank"`): no venue can be asked, so the tracker keeps them.

A bank wallet's amount in the layout is the balance the operator stated; every transfer to or from the
bank is an operator's task (docs/execution.md, "Bank transfers"), and its confirmation
(`TransferConfirmed`, with the transfer's asset, accounts, the amount asked to move and the amount
received) is recorded once in `bank_ledger` (keyed by the task: a redelivered or repeated confirmation
changes nothing). Each snapshot's bank amounts are the stated balance plus what the confirmed transfers
into the bank received, less what those out of it sent (`rebal.core.assemble.bank_holdings`).

Between the moment a transfer out of the bank lands at the receiving account and the operator's
confirmation, the stated balance still holds the money the venue already shows: counted twice. So each
task the executor opens (`TransferTaskOpened`) is recorded too (`bank_tasks`, with the receiving
account's holding of the asset then: its `baseline`), and while it is open (neither confirmed nor expired)
the bank's amount is less what that holding grew since, at most the task's amount
(`rebal.core.assemble.landed`): the money is at the bank until it shows at the exchange, there from then
on, and the confirmation changes nothing more than the received amount.

Restating a balance: change the wallet's amount in the layout. At start the tracker compares each bank
wallet's amount with the one it last started with (`bank_openings`); a changed one stands from then on,
and only the transfers confirmed after it move it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from rebal.core.assemble import LayoutAccount, OpenBankTask, bank_holdings, landed
from rebal.core.numbers import dec_str
from rebal.events import TransferConfirmed, TransferTaskExpired, TransferTaskOpened

log = logging.getLogger("rebal.tracker")

RECORD = (
    "INSERT INTO bank_ledger (task_id, portfolio_id, asset, from_account, to_account, sent, received,"
    " confirmed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (task_id) DO NOTHING"
)
# Per bank wallet (path, asset): what the confirmed transfers brought in (received) less what they took
# out (sent), counting those confirmed since the layout's amount was stated (all, for an asset it does
# not name).
MOVED = (
    "SELECT side.account, side.asset, sum(side.change) AS change FROM ("
    "  SELECT to_account AS account, asset, received AS change, confirmed_at FROM bank_ledger"
    "  WHERE portfolio_id = $1"
    "  UNION ALL"
    "  SELECT from_account, asset, -sent, confirmed_at FROM bank_ledger WHERE portfolio_id = $1"
    ") AS side LEFT JOIN bank_openings AS stated"
    " ON (stated.portfolio_id, stated.account, stated.asset) = ($1, side.account, side.asset)"
    " WHERE stated.since IS NULL OR side.confirmed_at >= stated.since"
    " GROUP BY side.account, side.asset"
)
OPEN_TASK = (
    "INSERT INTO bank_tasks (task_id, portfolio_id, asset, from_account, to_account, amount, baseline,"
    " opened_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (task_id) DO NOTHING"
)
EXPIRE_TASK = "UPDATE bank_tasks SET expired_at = $2 WHERE task_id = $1 AND expired_at IS NULL"
# The tasks out of a bank neither confirmed (in the ledger) nor expired, in the order they opened.
OPEN_TASKS = (
    "SELECT asset, from_account, to_account, amount, baseline FROM bank_tasks AS task"
    " WHERE portfolio_id = $1 AND expired_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM bank_ledger WHERE bank_ledger.task_id = task.task_id)"
    " ORDER BY opened_at, task_id"
)
# A wallet's stated amount: kept while the layout says the same, restated (since now) when it changes.
STATE = (
    "INSERT INTO bank_openings (portfolio_id, account, asset, amount, since) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (portfolio_id, account, asset) DO UPDATE SET amount = excluded.amount, since ="
    " excluded.since WHERE bank_openings.amount <> excluded.amount"
)


@dataclass
class BankBook:
    """The bank accounts of one portfolio's layout and their ledger in Postgres."""

    portfolio_id: str
    banks: Sequence[LayoutAccount]
    pool: asyncpg.Pool

    async def open(self, now: datetime) -> list[str]:
        """Record the layout's stated balances; returns the wallets restated now ("path asset")."""
        restated = []
        async with self.pool.acquire() as connection, connection.transaction():
            for bank in self.banks:
                for asset, amount in sorted(bank.amounts.items()):
                    status = await connection.execute(STATE, self.portfolio_id, bank.path, asset, amount, now)
                    if status.endswith(" 1"):
                        restated.append(f"{bank.path} {asset}")
        return restated

    async def record(self, event: TransferConfirmed) -> bool:
        """Record a confirmed transfer once; False when it was known, or names no transfer (an executor
        before these fields: it moves no balance)."""
        if event.asset is None or event.from_account is None or event.to_account is None:
            log.warning(
                "transfer task %s confirmed without its transfer: no bank balance moved", event.task_id
            )
            return False
        sent = event.received if event.amount is None else event.amount
        status = await self.pool.execute(
            RECORD,
            event.task_id,
            event.portfolio_id,
            event.asset,
            event.from_account,
            event.to_account,
            sent,
            event.received,
            event.confirmed_at,
        )
        return bool(status.endswith(" 1"))

    def sends(self, event: TransferTaskOpened) -> bool:
        """Whether the task moves money out of one of this portfolio's banks."""
        return event.portfolio_id == self.portfolio_id and any(
            bank.path == event.from_account for bank in self.banks
        )

    async def open_task(self, event: TransferTaskOpened, baseline: Decimal | None) -> bool:
        """Record a task out of a bank once (the first `baseline` stands); False when it was known."""
        status = await self.pool.execute(
            OPEN_TASK,
            event.task_id,
            event.portfolio_id,
            event.asset,
            event.from_account,
            event.to_account,
            event.amount,
            baseline,
            event.occurred_at,
        )
        return bool(status.endswith(" 1"))

    async def expire_task(self, event: TransferTaskExpired) -> bool:
        """An expired task moves no balance any more (its money did not go, as far as anyone confirmed)."""
        status = await self.pool.execute(EXPIRE_TASK, event.task_id, event.occurred_at)
        return bool(status.endswith(" 1"))

    async def holdings(self, observed: Mapping[str, Mapping[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
        """What each bank account holds now, given what the venues report of the other accounts
        (`observed`, per path and asset: where an open task's money may already have landed)."""
        if not self.banks:
            return {}
        rows = await self.pool.fetch(MOVED, self.portfolio_id)
        moved = {(row["account"], row["asset"]): row["change"] for row in rows}
        tasks = [
            OpenBankTask(row["asset"], row["from_account"], row["to_account"], row["amount"], row["baseline"])
            for row in await self.pool.fetch(OPEN_TASKS, self.portfolio_id)
        ]
        for key, change in landed(tasks, observed).items():
            moved[key] = moved.get(key, Decimal(0)) + change
        balances = bank_holdings(self.banks, moved)
        for path, asset, by in balances.overdrawn:
            log.warning(
                "%s: the confirmed transfers took %s %s more than its stated balance: shown at 0 (restate it"
                " in the layout)",
                path,
                dec_str(by),
                asset,
            )
        return balances.holdings
