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
on, and the confirmation changes nothing more than the received amount. Tasks into one account and asset
share a baseline: a confirmation raises it for the others by what it received (`after_confirmation`), and
each snapshot lowers it when the holding falls below it and what landed (money spent meanwhile); both are
kept in `bank_tasks` (`baseline`, `landed`) for the next snapshot and across restarts.

The other direction, a task from an exchange account into a bank (recorded too, without a baseline):
the exchange debits the money when it takes the operator's withdrawal, and the bank's ledger counts it
only at the confirmation. So each snapshot lists the sending account's withdrawals first (the tracker,
`TransferVenue.withdrawals`), and the withdrawals taken for an open task (`rebal.core.assemble.in_transit`;
which task each was taken for is kept once in `bank_withdrawals`, so a confirmed task's withdrawal is never
taken for another) count at the bank, less the venue's fee: in transit until the confirmation, then the
ledger's `received`.

Restating a balance: change the wallet's amount in the layout. At start the tracker compares each bank
wallet's amount with the one it last started with (`bank_openings`); a changed one stands from then on,
and only the transfers confirmed after it move it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from rebal.core.assemble import (
    LayoutAccount,
    OpenBankTask,
    OutboundTask,
    Withdrawn,
    after_confirmation,
    bank_holdings,
    in_transit,
    landed,
)
from rebal.core.numbers import dec_str
from rebal.db import Connection
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
# The tasks out of (or into) a bank neither confirmed (in the ledger) nor expired, in the order they opened.
OPEN_TASKS = (
    "SELECT task_id, asset, from_account, to_account, amount, baseline, landed, opened_at"
    " FROM bank_tasks AS task"
    " WHERE portfolio_id = $1 AND expired_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM bank_ledger WHERE bank_ledger.task_id = task.task_id)"
    " ORDER BY opened_at, task_id FOR UPDATE OF task"
)
FOLLOW_TASK = "UPDATE bank_tasks SET baseline = $2, landed = $3 WHERE task_id = $1"
# Which task each withdrawal out of an exchange account was taken for (`in_transit`).
# (Of the withdrawals listed now only: the table keeps every withdrawal ever taken.)
CLAIMED = (
    "SELECT account, withdrawal_id, task_id FROM bank_withdrawals"
    " WHERE portfolio_id = $1 AND withdrawal_id = ANY($2::text[])"
)
CLAIM = (
    "INSERT INTO bank_withdrawals (portfolio_id, account, withdrawal_id, task_id) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (portfolio_id, account, withdrawal_id) DO UPDATE SET task_id = excluded.task_id"
)
# The tasks not expired and not confirmed, and those confirmed since the first of these opened, with what
# they received (`outbound` keeps those into a bank): not the whole history, snapshot after snapshot.
TASKS_INTO = (
    "WITH open AS (SELECT task.* FROM bank_tasks AS task WHERE task.portfolio_id = $1"
    "  AND task.expired_at IS NULL"
    "  AND NOT EXISTS (SELECT 1 FROM bank_ledger WHERE bank_ledger.task_id = task.task_id))"
    " SELECT task_id, asset, from_account, to_account, amount, opened_at, NULL::numeric AS received,"
    " NULL::timestamptz AS confirmed_at FROM open"
    " UNION ALL"
    " SELECT task.task_id, task.asset, task.from_account, task.to_account, task.amount, task.opened_at,"
    " ledger.received, ledger.confirmed_at FROM bank_tasks AS task"
    " JOIN bank_ledger AS ledger ON ledger.task_id = task.task_id"
    " WHERE task.portfolio_id = $1 AND ledger.confirmed_at >= (SELECT min(opened_at) FROM open)"
    " ORDER BY opened_at, task_id"
)
# A wallet's stated amount: kept while the layout says the same, restated (since now) when it changes.
STATE = (
    "INSERT INTO bank_openings (portfolio_id, account, asset, amount, since) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (portfolio_id, account, asset) DO UPDATE SET amount = excluded.amount, since ="
    " excluded.since WHERE bank_openings.amount <> excluded.amount"
)


def seconds(moment: datetime) -> int:
    """A moment as the whole seconds since the epoch it falls in (venues date withdrawals to the second)."""
    return math.floor(moment.timestamp())


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
        async with self.pool.acquire() as connection, connection.transaction():
            ids, tasks = await self._open_tasks(connection)
            status = await connection.execute(
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
            if not status.endswith(" 1"):
                return False
            if event.task_id in ids:
                done = ids.index(event.task_id)
                rest = [task_id for task_id in ids if task_id != event.task_id]
                await self._follow(
                    connection,
                    rest,
                    tasks[:done] + tasks[done + 1 :],
                    after_confirmation(tasks, done, event.received),
                )
        return True

    def sends(self, event: TransferTaskOpened) -> bool:
        """Whether the task moves money out of one of this portfolio's banks."""
        return event.portfolio_id == self.portfolio_id and self.is_bank(event.from_account)

    def receives(self, event: TransferTaskOpened) -> bool:
        """Whether the task moves money into one of this portfolio's banks."""
        return event.portfolio_id == self.portfolio_id and self.is_bank(event.to_account)

    def is_bank(self, path: str) -> bool:
        return any(bank.path == path for bank in self.banks)

    async def open_task(self, event: TransferTaskOpened, baseline: Decimal | None) -> bool:
        """Record a task out of (or into) a bank once (the first `baseline` stands; None for a task into a
        bank, or from an account no venue reports); False when it was known."""
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

    async def outbound(self, connection: Connection | None = None) -> list[OutboundTask]:
        """The tasks from an account that is not a bank into one of the banks that `in_transit` needs, in
        the order they opened: the open ones, and those confirmed since the first open one of their account
        and asset opened (it may have taken their money). The snapshot lists their accounts' withdrawals
        (since the first of them opened) before it reads the balances."""
        if not self.banks:
            return []
        rows = await (connection or self.pool).fetch(TASKS_INTO, self.portfolio_id)
        into = [
            row for row in rows if self.is_bank(row["to_account"]) and not self.is_bank(row["from_account"])
        ]
        first: dict[tuple[str, str], datetime] = {}
        for row in into:
            if row["confirmed_at"] is None:
                first.setdefault((row["from_account"], row["asset"]), row["opened_at"])
        return [
            OutboundTask(
                row["task_id"],
                row["asset"],
                row["from_account"],
                row["to_account"],
                row["amount"],
                seconds(row["opened_at"]),
                row["received"],
            )
            for row in into
            if (key := (row["from_account"], row["asset"])) in first
            and (row["confirmed_at"] is None or row["confirmed_at"] >= first[key])
        ]

    async def holdings(
        self,
        observed: Mapping[str, Mapping[str, Decimal]],
        listed: Mapping[tuple[str, str], Sequence[Withdrawn]] | None = None,
    ) -> dict[str, dict[str, Decimal]]:
        """What each bank account holds now, given what the venues report of the other accounts
        (`observed`, per path and asset: where an open task's money may already have landed) and their
        withdrawals (`listed`, per account and asset, read before `observed`: the money on its way to a
        bank). The ledger is read before the open tasks, so a confirmation in between leaves its money
        counted at most once (by neither, for this snapshot), never twice."""
        if not self.banks:
            return {}
        rows = await self.pool.fetch(MOVED, self.portfolio_id)
        moved = {(row["account"], row["asset"]): row["change"] for row in rows}
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(OPEN_TASKS, self.portfolio_id)
            ids, tasks = self._tasks(rows)
            landing = landed(tasks, observed)
            await self._follow(connection, ids, tasks, landing.tasks)
            named = {(account, w.withdrawal_id) for (account, _), ws in (listed or {}).items() for w in ws}
            shown = sorted({withdrawal_id for _, withdrawal_id in named})
            claimed = {
                (row["account"], row["withdrawal_id"]): row["task_id"]
                for row in await connection.fetch(CLAIMED, self.portfolio_id, shown)
                if (row["account"], row["withdrawal_id"]) in named
            }
            transit = in_transit(await self.outbound(connection), listed or {}, claimed)
            for account, withdrawal_id, task_id in transit.claims:
                await connection.execute(CLAIM, self.portfolio_id, account, withdrawal_id, task_id)
        for key, change in [*landing.moves.items(), *transit.moves.items()]:
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

    async def _open_tasks(self, connection: Connection) -> tuple[list[str], list[OpenBankTask]]:
        return self._tasks(await connection.fetch(OPEN_TASKS, self.portfolio_id))

    @staticmethod
    def _tasks(rows: Sequence[asyncpg.Record]) -> tuple[list[str], list[OpenBankTask]]:
        tasks = [
            OpenBankTask(
                row["asset"],
                row["from_account"],
                row["to_account"],
                row["amount"],
                row["baseline"],
                row["landed"],
            )
            for row in rows
        ]
        return [row["task_id"] for row in rows], tasks

    @staticmethod
    async def _follow(
        connection: Connection,
        ids: Sequence[str],
        before: Sequence[OpenBankTask],
        after: Sequence[OpenBankTask],
    ) -> None:
        """Persist what changed of the open tasks (their baseline, what landed) for the next snapshot."""
        for task_id, old, new in zip(ids, before, after, strict=True):
            if new != old:
                await connection.execute(FOLLOW_TASK, task_id, new.baseline, new.landed)
