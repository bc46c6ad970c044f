"""Transfer legs of a run (plan.transfers), executed when `transfers` is on (off by default).

Before any leg of a run that needs a transfer (`precheck`), and again when the transfer is made: the
source can withdraw and the destination can take a deposit of the asset on a common network
(`rebal.venue.transfer_problem`), and the destination's deposit address on it is on the withdrawal
allowlist (per exchange, asset and network: `withdrawal_allowlist`); a run whose transfer cannot be made
is not started, so no sell is made for money that could not move and nothing is sent anywhere else.
After the sells and before the buys, each transfer is withdrawn under a transfer id derived from the
plan and the transfer (asking again returns the same withdrawal, so a restart never moves money twice),
then wait until the destination credits it: the buys on the receiving side are sized afterwards from
what is really there. A transfer not credited in time is reported (and logged as an alert); the
receiving side's buys are then sized from what it holds without it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from rebal.core.numbers import dec_str
from rebal.events import PlannedTransfer, RebalancePlanned, derive_id
from rebal.venue import (
    TRANSFER_ID_PREFIX,
    DepositAddress,
    Transfer,
    TransferRefused,
    TransferVenue,
    Venue,
    VenueError,
    transfer_problem,
)
from rebal_executor.execution.ports import Context, RunRecord

log = logging.getLogger("rebal.executor")


@runtime_checkable
class MovesAssets(TransferVenue, Protocol):
    """`TransferVenue`, checkable at run time (a venue without the transfer methods skips transfer legs)."""


def transfer_id(plan_id: uuid.UUID, index: int) -> str:
    """The withdrawal's id at the venue: the same plan and transfer always give the same id."""
    return f"{TRANSFER_ID_PREFIX}{derive_id(plan_id, 'transfer', index).hex[:12]}-{index}"


def exchange_of(plan: RebalancePlanned, account: str) -> str:
    """The exchange of an account path: from the plan's orders or budgets when one names it, else the
    path's parent (users → exchanges → accounts: ``alice/binance/spot`` is on ``binance``)."""
    for order in plan.orders:
        if order.account == account:
            return order.exchange
    for budget in plan.budgets:
        if budget.account == account:
            return budget.exchange
    parts = account.split("/")
    return parts[-2] if len(parts) >= 2 else ""


def describe(transfer: PlannedTransfer) -> str:
    amount = f"{dec_str(transfer.amount)} {transfer.asset}"
    return f"transfer of {amount} from {transfer.from_account} to {transfer.to_account}"


@dataclass(frozen=True)
class TransferOutcome:
    """How a transfer leg ended: `moved` when the venue took the withdrawal; the report line."""

    outcome: str  # filled (credited), failed or skipped
    moved: bool
    reason: str


@dataclass
class Transfers:
    venues: Mapping[str, Venue]
    sleep: Callable[[float], Awaitable[None]]
    timeout_seconds: float
    poll_seconds: float
    record: Callable[[str, str, str], Awaitable[None]]  # (transfer id, state, reason): the transitions log
    # (exchange, asset, network, address, tag) a withdrawal may go to; nothing else is ever sent.
    allowed: frozenset[tuple[str, str, str, str, str]] = frozenset()

    async def run(self, plan: RebalancePlanned, index: int, transfer: PlannedTransfer) -> TransferOutcome:
        what = describe(transfer)
        tid = transfer_id(plan.event_id, index)
        source = self.venues.get(exchange_of(plan, transfer.from_account))
        destination = self.venues.get(exchange_of(plan, transfer.to_account))
        if not isinstance(source, MovesAssets) or not isinstance(destination, MovesAssets):
            return TransferOutcome("skipped", False, f"{what} skipped: a venue that cannot move assets")
        try:
            withdrawal = await source.withdrawal(transfer.from_account, tid, transfer.asset)
            if withdrawal is None:
                started = await self._start(source, tid, transfer, plan)
                if isinstance(started, str):
                    outcome = "skipped" if started.startswith("pre-check") else "failed"
                    return TransferOutcome(outcome, False, f"{what} {started}")
                withdrawal = started
                await self.record(tid, "withdrawn", f"{dec_str(withdrawal.amount)} {transfer.asset}")
        except VenueError as error:
            return TransferOutcome("failed", False, f"{what} failed: {type(error).__name__}: {error}")
        credited = await self._credited(source, destination, tid, transfer, withdrawal)
        if credited is None:
            log.error("ALERT %s not credited after %g s: left pending", what, self.timeout_seconds)
            await self.record(tid, "timed_out", "")
            return TransferOutcome(
                "failed", True, f"{what} not credited after {self.timeout_seconds:g} s: left pending (alert)"
            )
        await self.record(tid, "credited", f"{dec_str(credited.received)} {transfer.asset}")
        return TransferOutcome(
            "filled",
            True,
            f"{what} credited {dec_str(credited.received)} {transfer.asset} "
            f"(withdrawal fee {dec_str(credited.fee)})",
        )

    async def usable(self, plan: RebalancePlanned, transfer: PlannedTransfer) -> list[DepositAddress] | str:
        """The allowlisted deposit addresses the transfer can go to now, by network name, or why it cannot
        be made (prefixed ``pre-check``)."""
        exchange = exchange_of(plan, transfer.to_account)
        source = self.venues.get(exchange_of(plan, transfer.from_account))
        destination = self.venues.get(exchange)
        if not isinstance(source, MovesAssets) or not isinstance(destination, MovesAssets):
            return "pre-check failed (a venue that cannot move assets)"
        outs = await source.networks(transfer.asset)
        ins = await destination.networks(transfer.asset)
        problems = {
            net: transfer_problem(outs.get(net), ins.get(net), transfer.amount) for net in sorted(outs)
        }
        usable = [net for net, problem in problems.items() if not problem]
        if transfer.network in usable:  # the planner's choice first (its fee is in the plan)
            usable = [transfer.network, *(net for net in usable if net != transfer.network)]
        if not usable:
            why = ", ".join(f"{net}: {p}" for net, p in problems.items()) or "no network"
            return f"pre-check failed ({why})"
        addresses = [
            await destination.deposit_address(transfer.to_account, transfer.asset, net) for net in usable
        ]
        listed = [a for a in addresses if (exchange, a.asset, a.network, a.address, a.tag) in self.allowed]
        if not listed:
            shown = ", ".join(
                f"{a.network} {a.address}" + (f" tag {a.tag}" if a.tag else "") for a in addresses
            )
            return f"pre-check failed (not on the withdrawal allowlist: {exchange} {transfer.asset} {shown})"
        return listed

    async def _start(
        self,
        source: TransferVenue,
        tid: str,
        transfer: PlannedTransfer,
        plan: RebalancePlanned,
    ) -> Transfer | str:
        """Pre-check and withdraw; the refusal (prefixed `pre-check` when it was ours) as a string."""
        usable = await self.usable(plan, transfer)
        if isinstance(usable, str):
            return f"{usable}: skipped"
        free = (await source.balances(transfer.from_account)).free.get(transfer.asset, Decimal(0))
        amount = min(transfer.amount, free)
        if amount <= 0:
            return f"pre-check failed (no {transfer.asset} free): skipped"
        try:
            return await source.withdraw(transfer.from_account, tid, transfer.asset, amount, usable[0])
        except TransferRefused as refused:
            return f"refused: {refused.reason}"

    async def _credited(
        self,
        source: TransferVenue,
        destination: TransferVenue,
        tid: str,
        transfer: PlannedTransfer,
        withdrawal: Transfer,
    ) -> Transfer | None:
        waited = 0.0
        while True:
            try:
                if not withdrawal.txid:
                    withdrawal = (
                        await source.withdrawal(transfer.from_account, tid, transfer.asset) or withdrawal
                    )
                if withdrawal.txid:
                    deposit = await destination.deposit(transfer.to_account, transfer.asset, withdrawal.txid)
                    if deposit is not None and deposit.status == "credited":
                        return deposit
            except VenueError as error:
                log.warning("following transfer %s: %s", tid, error)
            if waited >= self.timeout_seconds:
                return None
            await self.sleep(self.poll_seconds)
            waited += self.poll_seconds


def mover(ctx: Context, plan: RebalancePlanned) -> Transfers:
    execution = ctx.settings.execution

    async def log_state(tid: str, state: str, reason: str) -> None:
        await ctx.journal.record_transfer(plan.event_id, tid, state, reason)

    allowed = frozenset(
        (a.exchange, a.asset, a.network, a.address, a.tag) for a in ctx.settings.withdrawal_allowlist
    )
    return Transfers(
        ctx.venues,
        ctx.sleep,
        execution.transfer_timeout_seconds,
        execution.transfer_poll_seconds,
        log_state,
        allowed,
    )


async def arrived(ctx: Context, plan: RebalancePlanned, index: int) -> Decimal:
    """What the destination was credited of the plan's transfer `index`, asked of the venues by the
    transfer's id (so a restarted run finds it again); 0 while it is not credited, was never sent, or
    transfers are off."""
    transfer = plan.transfers[index]
    source = ctx.venues.get(exchange_of(plan, transfer.from_account))
    destination = ctx.venues.get(exchange_of(plan, transfer.to_account))
    if not ctx.settings.transfers:
        return Decimal(0)
    if not isinstance(source, MovesAssets) or not isinstance(destination, MovesAssets):
        return Decimal(0)
    tid = transfer_id(plan.event_id, index)
    try:
        withdrawal = await source.withdrawal(transfer.from_account, tid, transfer.asset)
        if withdrawal is None or not withdrawal.txid:
            return Decimal(0)
        deposit = await destination.deposit(transfer.to_account, transfer.asset, withdrawal.txid)
    except VenueError as error:  # unknown is not arrived: the waiting sell sells the account's own part
        log.warning("looking up transfer %s: %s", tid, error)
        return Decimal(0)
    return deposit.received if deposit is not None and deposit.status == "credited" else Decimal(0)


async def precheck(ctx: Context, plan: RebalancePlanned) -> str:
    """Why the run must not start because one of its transfers cannot be made ("" when all can, or when
    transfers are off: then they are reported skipped and nothing waits for them)."""
    if not ctx.settings.transfers:
        return ""
    transfers = mover(ctx, plan)
    for transfer in plan.transfers:
        if transfer.manual:  # an operator's task (`bank`): nothing to check at a venue
            continue
        try:
            usable = await transfers.usable(plan, transfer)
        except VenueError as error:
            usable = f"pre-check failed ({type(error).__name__}: {error})"
        if isinstance(usable, str):
            return f"{describe(transfer)} {usable}: the run was not started (no leg was placed)"
    return ""


async def run_transfers(ctx: Context, record: RunRecord) -> None:
    """Every transfer leg of the run not yet ended (after the sells, before the buys they fund); each is
    reported skipped while `transfers` is off."""
    plan = record.plan
    transfers = mover(ctx, plan)
    for index, transfer in enumerate(plan.transfers):
        leg = len(plan.orders) + index
        if transfer.manual or await ctx.journal.leg_done(plan.event_id, leg):
            continue  # a manual one is an operator's task (`bank`)
        if not ctx.settings.transfers:
            outcome = TransferOutcome(
                "skipped",
                False,
                f"{describe(transfer)} skipped: transfers are off (transfers = true, "
                "REBAL__TRANSFERS=true, to execute them)",
            )
        else:
            outcome = await transfers.run(plan, index, transfer)
        if outcome.outcome != "filled":  # a credited transfer is in the transitions log, not a reason
            await ctx.journal.note(plan.event_id, f"transfer-{index}", outcome.reason)
        await ctx.journal.finish_leg(plan.event_id, leg, outcome.outcome, placed=outcome.moved)
