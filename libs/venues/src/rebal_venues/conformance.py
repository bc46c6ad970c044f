"""Before trusting a venue: check, on its testnet, every assumption the executor relies on, each as pass or
fail with what was seen. The operators' command (`rebal venue check --venue NAME`) is a thin wrapper.

It trades tiny orders on one symbol of one account: a market buy of the smallest order the market takes
(found by its client id: how long the venue took to show it is what the executor's look-up window must
outlast), a resting limit buy far below the price (its id used again while it is open must be refused,
then it is cancelled by that id), the market buy's id used again once it is closed (reported: the
executor never resends without proof, whatever the venue does), and a sell of what was bought. It reads
the steps, minimums and fee, the currency each fill's fee is taken in, and the rate-limit headers the
request budget relies on. A live (non-sandbox) account is refused unless `allow_live` says otherwise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from ccxt.base import errors as ccxt_errors

from rebal.core.numbers import dec_str
from rebal.venue import ClientIdInUse, MarketInfo, OrderState, VenueError
from rebal_venues.ccxt_venue import CcxtVenue

# Response headers that carry a venue's rate-limit state (Binance's used weight; the usual others).
RATE_LIMIT_HEADERS = (
    "x-mbx-used-weight-1m",
    "x-mbx-used-weight",
    "x-mbx-order-count-10s",
    "ratelimit-remaining",
    "x-ratelimit-remaining",
    "retry-after",
)


@dataclass(frozen=True)
class Assumption:
    """One thing the executor relies on, whether this venue keeps it, and what was seen."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Conformance:
    venue: str
    account: str
    symbol: str
    assumptions: tuple[Assumption, ...]

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.assumptions)


async def check_venue(
    venue: CcxtVenue,
    symbol: str,
    *,
    allow_live: bool = False,
    lookup_window_seconds: float = 30.0,
    poll_seconds: float = 0.5,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Conformance:
    """Check `venue` (one account's keys) on `symbol`; a live account is refused unless `allow_live`."""

    def report(*found: Assumption) -> Conformance:
        return Conformance(venue.name, venue.account, symbol, found)

    if not venue.sandboxed and not allow_live:
        return report(
            Assumption(
                "testnet", False, "a live account: refused (allow_live to check it there, with real money)"
            )
        )
    probe = _Probe(venue, symbol, lookup_window_seconds, poll_seconds, sleep)
    found = [await probe.market()]
    if not found[0].passed:
        return report(*found)
    try:
        found.extend(await probe.trades())
    except VenueError as error:
        found.append(Assumption("orders", False, f"{type(error).__name__}: {error}"))
    found.append(probe.rate_limit_headers())
    return report(*found)


@dataclass
class _Probe:
    venue: CcxtVenue
    symbol: str
    window: float
    poll: float
    sleep: Callable[[float], Awaitable[None]]
    # The market, its price and the size of the test orders (`market` reads them first).
    info: MarketInfo = field(init=False)
    price: Decimal = field(init=False)
    amount: Decimal = field(init=False)

    def _id(self, what: str) -> str:
        return f"rbcheck-{what}-{uuid.uuid4().hex[:10]}"

    async def market(self) -> Assumption:
        info = (await self.venue.markets()).get(self.symbol)
        if info is None or not info.active:
            return Assumption("market", False, f"{self.symbol} is not an active market of {self.venue.name}")
        self.info = info
        self.price = (await self.venue.prices([self.symbol]))[self.symbol]
        # The smallest order the market takes: whole steps, at least the minimum amount and cost (+1 step).
        least = max(info.min_amount, info.min_cost / self.price if self.price > 0 else Decimal(0))
        self.amount = ((least / info.amount_step).to_integral_value(ROUND_CEILING) + 1) * info.amount_step
        return Assumption(
            "precision and minimums",
            info.amount_step > 0,
            f"step {dec_str(info.amount_step)}, minimum {dec_str(info.min_amount)} {info.base} and "
            f"{dec_str(info.min_cost)} {info.quote}, taker fee {dec_str(info.fee_rate)}; the test orders are "
            f"{dec_str(self.amount)} {info.base}",
        )

    async def find(self, client_order_id: str) -> tuple[OrderState | None, float]:
        """The order by client id, looked up until shown or the window passes; and how long it took."""
        waited = 0.0
        while True:
            try:
                found = await self.venue.order(self.venue.account, client_order_id, self.symbol)
            except VenueError:
                found = None
            if found is not None or waited >= self.window:
                return found, waited
            await self.sleep(self.poll)
            waited += self.poll

    async def trades(self) -> list[Assumption]:
        account, info = self.venue.account, self.info
        found: list[Assumption] = []
        bought_id = self._id("buy")
        bought = await self.venue.place_order(account, bought_id, self.symbol, "buy", self.amount)
        shown, after = await self.find(bought_id)
        found.append(
            Assumption(
                "client-id look-up",
                shown is not None and shown.status == "filled",
                f"a market buy found by its client id after {after:.1f} s (the executor's look-up window "
                f"must be longer)"
                if shown is not None
                else f"a market buy not found by its client id within {self.window:g} s",
            )
        )
        assets = sorted({f.fee_asset for f in bought.fills})
        where = {info.base: "the asset received", info.quote: "the quote"}
        found.append(
            Assumption(
                "fee currency",
                bool(bought.fills) and all(f.fee_asset for f in bought.fills),
                "fees in " + ", ".join(f"{a} ({where.get(a, 'a third asset')})" for a in assets)
                if assets
                else "no fill reported its fee",
            )
        )
        found.append(await self.open_id_and_cancel())
        found.append(await self.reused_id(bought_id))
        found.append(await self.sell_back())
        return found

    async def open_id_and_cancel(self) -> Assumption:
        """A resting limit buy: its client id is refused while it is open; a cancel by that id ends it."""
        account, info = self.venue.account, self.info
        resting_id = self._id("rest")
        price = self.price / 2
        minimum = info.min_cost / price if price > 0 else info.min_amount
        amount = max(
            self.amount,
            ((minimum / info.amount_step).to_integral_value(ROUND_CEILING) + 1) * info.amount_step,
        )
        params = {self.venue.profile.client_id_param: resting_id}
        try:
            await self.venue.client.create_order(self.symbol, "limit", "buy", str(amount), str(price), params)
        except ccxt_errors.BaseError as error:
            return Assumption(
                "open id refused, cancel by id", False, f"a resting limit order was refused: {error}"
            )
        try:
            again = await self.venue.place_order(account, resting_id, self.symbol, "buy", self.amount)
            refused = again.status == "open"  # the adapter answered the refusal with the open order itself
        except ClientIdInUse:
            refused = True
        listed = await self.venue.open_orders(account, self.symbol)
        refused = refused and sum(1 for o in listed if o.client_order_id == resting_id) <= 1
        cancelled = await self.venue.cancel_order(account, resting_id, self.symbol)
        ended = cancelled is not None and cancelled.status == "cancelled"
        return Assumption(
            "open id refused, cancel by id",
            refused and ended,
            ("the id of an open order was refused" if refused else "the id of an open order was TAKEN again")
            + ("; cancelled by its client id" if ended else "; NOT cancelled by its client id"),
        )

    async def reused_id(self, closed_id: str) -> Assumption:
        """The id of a filled order used again: what the venue does (the executor is safe either way)."""
        try:
            await self.venue.place_order(self.venue.account, closed_id, self.symbol, "buy", self.amount)
        except ClientIdInUse:
            return Assumption("reused id of a closed order", True, "refused (as a duplicate)")
        except VenueError as error:
            return Assumption("reused id of a closed order", True, f"refused: {error}")
        return Assumption(
            "reused id of a closed order",
            True,
            "accepted as a NEW order: a blind resend would trade twice (the executor resends only after a "
            "whole look-up window found nothing)",
        )

    async def sell_back(self) -> Assumption:
        """Sell what the buys left (their fee taken): a sell fills and reports its fills."""
        base = self.info.base
        free = (await self.venue.balances(self.venue.account)).free.get(base, Decimal(0))
        amount = free - free % self.info.amount_step
        if amount < self.info.min_amount:
            return Assumption("sell fills", False, f"only {dec_str(free)} {base} to sell back")
        sold = await self.venue.place_order(self.venue.account, self._id("sell"), self.symbol, "sell", amount)
        return Assumption(
            "sell fills",
            sold.status == "filled" and sum((f.amount for f in sold.fills), Decimal(0)) == sold.filled,
            f"sold {dec_str(sold.filled)} {base} back in {len(sold.fills)} fill(s)",
        )

    def rate_limit_headers(self) -> Assumption:
        headers: Mapping[str, str] = self.venue.client.last_response_headers or {}
        present = sorted(h for h in (k.lower() for k in headers) if h in RATE_LIMIT_HEADERS)
        return Assumption(
            "rate-limit headers",
            bool(present),
            f"sent {', '.join(present)}"
            if present
            else "none: the request budget cannot see the venue's count",
        )
