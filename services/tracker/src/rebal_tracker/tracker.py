"""The tracker's snapshots: every account of the layout read from its venue, the real tree assembled and
published as `BalanceSnapshotTaken` (on command or on the schedule)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from rebal import bus
from rebal.core.assemble import LayoutAccount, Withdrawn, assemble_tree, layout_accounts
from rebal.core.numbers import dec_str
from rebal.core.venues import implausible
from rebal.events import BalanceSnapshotTaken, TakeSnapshot, TransferTaskOpened, new_event
from rebal.futures import FuturesVenue
from rebal.venue import TRANSFER_ID_PREFIX, QuotingVenue, Venue, VenueError, WithdrawalHistory
from rebal_tracker.banks import BankBook, seconds

log = logging.getLogger("rebal.tracker")
Doc = dict[str, Any]


class SeededVenue(Venue, Protocol):
    """A venue whose starting balances the tracker loads from the layout (the paper exchange)."""

    async def seed(self, account: str, amounts: Mapping[str, Decimal]) -> bool: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


async def venue_quotes(
    venue: QuotingVenue, assets: Sequence[str], quote: str, reference: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """A venue's own bid and ask of each asset in the valuation `quote` (``ASSET/quote`` tickers), as the
    prices document's `venues` gives them (docs/formats.md); a side the venue does not show is left out,
    and so is what the prices document would refuse: a side too far from the asset's `reference` price,
    an asset without one."""
    shown = await venue.quotes([f"{asset}/{quote}" for asset in assets])
    found: dict[str, dict[str, str]] = {}
    for symbol, sides in sorted(shown.items()):
        if sides.bid is not None and sides.ask is not None and sides.bid > sides.ask:
            continue  # a crossed book is no price to plan on (and the prices document refuses it)
        asset = symbol.partition("/")[0]
        if asset not in reference:
            continue
        price = Decimal(reference[asset])
        both = (("bid", sides.bid), ("ask", sides.ask))
        given = {
            side: dec_str(value)
            for side, value in both
            if value is not None and value > 0 and not implausible(value, price)
        }
        if given:
            found[symbol.partition("/")[0]] = given
    return found


@dataclass
class Tracker:
    """Reads every account of the layout from its venue and publishes the assembled real tree."""

    portfolio_id: str
    layout: Doc
    quote: str
    venues: Mapping[str, SeededVenue]
    publisher: bus.EventSink
    clock: Callable[[], datetime] = utc_now
    banks: BankBook | None = None  # the bank accounts' balances (no venue to ask)
    # Fill the prices' `venues` (each venue's own bid and ask) from the venues that show them.
    venue_prices: bool = True
    accounts: list[LayoutAccount] = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = [a for a in layout_accounts(self.layout) if a.exchange in self.venues]

    async def seed(self) -> list[str]:
        """Load the layout's amounts into accounts that hold nothing yet; returns the seeded paths."""
        seeded = []
        for account in self.accounts:
            if await self.venues[str(account.exchange)].seed(account.path, account.amounts):
                seeded.append(account.path)
        return seeded

    async def read(self) -> Doc:
        """The snapshot's facts: the assembled tree, prices in the valuation quote, the markets."""
        holdings: dict[str, dict[str, Decimal]] = {}
        in_orders: dict[str, dict[str, Decimal]] = {}  # locked by open orders: held, never spendable
        assets_by_venue: dict[str, set[str]] = {}
        futures = await read_futures(self.accounts, self.venues)
        # Before the balances: a withdrawal listed here has left the balance read below (one asked in
        # between is counted nowhere by this snapshot, never twice).
        listed = await self.withdrawals()
        for account in self.accounts:
            exchange = str(account.exchange)
            if account.futures:
                holdings[account.path] = dict(futures.collateral[account.path])
                assets_by_venue.setdefault(exchange, set()).update(futures.collateral[account.path])
                continue
            balances = await self.venues[exchange].balances(account.path)
            held = dict(balances.free)
            for asset, amount in balances.locked.items():
                held[asset] = held.get(asset, Decimal(0)) + amount
            holdings[account.path] = held
            in_orders[account.path] = dict(balances.locked)
            wanted = assets_by_venue.setdefault(exchange, set())
            wanted.update(held, account.amounts, [account.quote] if account.quote else [])
        if self.banks is not None:
            holdings.update(await self.banks.holdings(holdings, listed))
        prices: dict[str, str] = {}
        venues: dict[str, dict[str, dict[str, str]]] = {}
        markets: dict[str, dict[str, dict[str, str]]] = {}
        for exchange, assets in sorted(assets_by_venue.items()):
            venue = self.venues[exchange]
            symbols = [f"{asset}/{self.quote}" for asset in sorted(assets - {self.quote, *prices})]
            for symbol, price in (await venue.prices(symbols)).items():
                prices[symbol.partition("/")[0]] = dec_str(price)
            if self.venue_prices and isinstance(venue, QuotingVenue):
                quoted = await venue_quotes(venue, sorted(assets - {self.quote}), self.quote, prices)
                if quoted:
                    venues[exchange] = quoted
            markets[exchange] = {
                symbol: {
                    "amount_step": dec_str(info.amount_step),
                    "min_amount": dec_str(info.min_amount),
                    "min_cost": dec_str(info.min_cost),
                    "fee_rate": dec_str(info.fee_rate),
                }
                for symbol, info in sorted((await venue.markets()).items())
                if info.active
            }
        facts: Doc = {
            "tree": assemble_tree(self.layout, holdings, in_orders, futures.positions),
            "prices": {"quote": self.quote, "prices": dict(sorted(prices.items()))},
            "markets": markets,
        }
        if venues:
            facts["prices"]["venues"] = venues
        if futures.contracts:
            facts["contracts"] = futures.contracts
        return facts

    async def on_task_opened(self, event: TransferTaskOpened) -> bool:
        """Record an operator's transfer out of a bank with the receiving account's holding of the asset
        now, or one into a bank (`BankBook`); False when it is none of this portfolio's banks' or was
        known."""
        if self.banks is None:
            return False
        if not self.banks.sends(event):
            return self.banks.receives(event) and await self.banks.open_task(event, None)
        baseline = None
        for account in self.accounts:
            if account.path == event.to_account and not account.futures:
                balances = await self.venues[str(account.exchange)].balances(account.path)
                zero = Decimal(0)
                baseline = balances.free.get(event.asset, zero) + balances.locked.get(event.asset, zero)
        return await self.banks.open_task(event, baseline)

    async def withdrawals(self) -> dict[tuple[str, str], list[Withdrawn]]:
        """The withdrawals out of each account an open task sends to a bank (`BankBook.outbound`), per
        account and asset, since the earliest such task opened: the venue's list (ccxt's
        fetchWithdrawals), less the executor's own transfer legs (`TRANSFER_ID_PREFIX`). A venue that
        cannot list them (or fails to, now) is skipped with a warning: its money on the way counts nowhere
        in this snapshot, as before the tracker listed withdrawals."""
        if self.banks is None:
            return {}
        since: dict[tuple[str, str], int] = {}
        for task in await self.banks.outbound():
            key = (task.from_account, task.asset)
            since[key] = min(since.get(key, task.opened_at), task.opened_at)
        exchanges = {account.path: str(account.exchange) for account in self.accounts if not account.futures}
        listed: dict[tuple[str, str], list[Withdrawn]] = {}
        for (path, asset), start in sorted(since.items()):
            venue = self.venues.get(exchanges.get(path, ""))
            if not isinstance(venue, WithdrawalHistory):
                log.warning(
                    "%s: its venue lists no withdrawals: the %s on its way to a bank is not counted",
                    path,
                    asset,
                )
                continue
            try:
                found = await venue.withdrawals(path, asset, datetime.fromtimestamp(start, UTC))
            except VenueError as error:
                log.warning(
                    "%s: listing its %s withdrawals failed (%s): not counted in transit", path, asset, error
                )
                continue
            listed[(path, asset)] = [
                Withdrawn(
                    t.transfer_id,
                    t.amount,
                    t.fee,
                    start if t.requested_at is None else seconds(t.requested_at),
                    t.status == "failed",
                )
                for t in found
                if not t.transfer_id.startswith(TRANSFER_ID_PREFIX)
            ]
        return listed

    async def on_take_snapshot(self, command: TakeSnapshot) -> None:
        if command.portfolio_id != self.portfolio_id:
            log.info("ignoring a snapshot command for portfolio %s", command.portfolio_id)
            return
        facts = await self.read()
        await self.publisher.publish(command.caused(BalanceSnapshotTaken, now=self.clock(), **facts))

    async def on_tick(self, tick: datetime) -> bool:
        """The scheduled snapshot of `tick`; its id comes from the tick, so replicas publish it once."""
        facts = await self.read()
        event = new_event(
            BalanceSnapshotTaken,
            key=f"tick|{tick.isoformat()}",
            now=self.clock(),
            portfolio_id=self.portfolio_id,
            **facts,
        )
        return await self.publisher.publish(event)

    async def run_schedule(self, interval: float) -> None:
        """Take a snapshot at every multiple of `interval` seconds (UTC) until cancelled."""
        while True:
            now = self.clock().timestamp()
            tick = (now // interval + 1) * interval
            await asyncio.sleep(tick - now)
            try:
                await self.on_tick(datetime.fromtimestamp(tick, UTC))
            except Exception:  # a failed tick is logged with its traceback; the next one tries again
                log.exception("scheduled snapshot failed")


@dataclass(frozen=True)
class FuturesFacts:
    """What the venues say of the layout's futures accounts: per account path its collateral (the margin
    balance, in its quote) and its positions (real-tree entries); per exchange its contracts with their
    mark prices (a contracts document)."""

    collateral: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    positions: dict[str, list[Doc]] = field(default_factory=dict)
    contracts: dict[str, dict[str, Doc]] = field(default_factory=dict)


async def read_futures(accounts: Sequence[LayoutAccount], venues: Mapping[str, Venue]) -> FuturesFacts:
    """Read every futures account of the layout from its venue (`rebal.futures.FuturesVenue`)."""
    facts = FuturesFacts()
    for account in accounts:
        if not account.futures:
            continue
        venue = venues[str(account.exchange)]
        if not isinstance(venue, FuturesVenue):
            raise VenueError(f"{account.path}: venue {account.exchange} has no perpetual futures accounts")
        margin = await venue.margin(account.path)
        facts.collateral[account.path] = {margin.asset: margin.margin_balance}
        facts.positions[account.path] = [p.document() for p in await venue.positions(account.path)]
        if account.exchange not in facts.contracts:
            listed = await venue.contracts()
            marks = await venue.mark_prices(sorted(listed))
            facts.contracts[str(account.exchange)] = {
                symbol: replace(contract, mark_price=marks[symbol]).document()
                for symbol, contract in sorted(listed.items())
            }
    return facts
