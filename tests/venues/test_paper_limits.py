"""The paper exchange's limit orders, against a real Postgres: a limit order that does not cross rests,
locking what it would spend, and fills whole at its own price once the moving price reaches it; one that
crosses trades at once at the touch; a post-only one that would cross is refused, as Binance documents
LIMIT_MAKER ("LIMIT_MAKER are LIMIT orders that will be rejected if they would immediately match and
trade as a taker"); a cancel ends a resting order, unless the price reached it first."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import asyncpg
import pytest

from rebal.core.market import Prices
from rebal.venue import BookTop, InsufficientFunds, OrderRejected, Resting
from rebal_venues.paper import MovingPrices, PaperVenue
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
ACCOUNT = "demo/paper/spot"
D = Decimal


async def venue_with(pool: asyncpg.Pool, **amounts: str) -> PaperVenue:
    """A still paper exchange with a 10 bps spread: BTC bid 59970, ask 60030; ETH 2998.5 / 3001.5."""
    still = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), **STILL)
    venue = replace(still, spread_bps=D(10))
    assert await venue.seed(ACCOUNT, {asset: D(amount) for asset, amount in amounts.items()})
    return venue


def move(venue: PaperVenue, **prices: str) -> None:
    """The market moves: new base prices (still)."""
    document = {"quote": "USDT", "prices": {**PRICES["prices"], **prices}}
    venue.price_model = MovingPrices(Prices.parse(document), **STILL)


async def test_the_book_top_is_the_price_less_and_plus_half_the_spread(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, USDT="1")
    assert isinstance(venue, Resting)
    assert await venue.book_top("BTC/USDT") == BookTop(D(59970), D(60030))


async def test_a_resting_buy_locks_its_cost_and_fills_at_its_price_when_the_price_reaches_it(
    pool: asyncpg.Pool,
) -> None:
    venue = await venue_with(pool, USDT="100000")
    state = await venue.place_order(ACCOUNT, "l-1", "BTC/USDT", "buy", D("0.5"), price=D(59900))
    assert (state.status, state.filled, state.fills) == ("open", D(0), ())
    # 0.5 x 59900 = 29950 and the fee 29.95 are locked, no longer free.
    assert await venue.balances(ACCOUNT) == type(await venue.balances(ACCOUNT))(
        free={"USDT": D("70020.05")}, locked={"USDT": D("29979.95")}
    )
    assert [o.client_order_id for o in await venue.open_orders(ACCOUNT)] == ["l-1"]
    move(venue, BTC="59950")  # not reached yet
    assert (await venue.order(ACCOUNT, "l-1", "BTC/USDT")).status == "open"  # type: ignore[union-attr]
    move(venue, BTC="59800")
    filled = await venue.order(ACCOUNT, "l-1", "BTC/USDT")
    assert filled is not None and (filled.status, filled.filled) == ("filled", D("0.5"))
    (fill,) = filled.fills
    assert (fill.amount, fill.price, fill.fee, fill.fee_asset) == (D("0.5"), D(59900), D("29.95"), "USDT")
    balances = await venue.balances(ACCOUNT)
    assert (balances.free, balances.locked) == ({"BTC": D("0.5"), "USDT": D("70020.05")}, {})


async def test_a_crossing_limit_trades_at_once_at_the_touch(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, USDT="100000")
    state = await venue.place_order(ACCOUNT, "l-2", "BTC/USDT", "buy", D("0.5"), price=D(60100))
    # The ask 60030 is at or under the limit: a taker fill there, 30015 + 30.015 fee.
    assert (state.status, state.fills[0].price, state.fills[0].fee) == ("filled", D(60030), D("30.015"))
    assert (await venue.balances(ACCOUNT)).free == {"BTC": D("0.5"), "USDT": D("69954.985")}


async def test_a_post_only_order_that_would_take_is_refused_and_holds_nothing(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, USDT="100000")
    with pytest.raises(OrderRejected) as refused:
        await venue.place_order(ACCOUNT, "l-3", "BTC/USDT", "buy", D("0.5"), price=D(60030), post_only=True)
    assert refused.value.reason == "post_only_would_take"
    # Under the ask (and under the price: not reached), a maker order rests.
    rested = await venue.place_order(
        ACCOUNT, "l-4", "BTC/USDT", "buy", D("0.5"), price=D(59999), post_only=True
    )
    assert rested.status == "open"
    assert (await venue.balances(ACCOUNT)).locked == {"USDT": D("30029.4995")}  # 29999.5 + 29.9995


async def test_market_orders_trade_at_the_touch(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, ETH="2", USDT="0")
    state = await venue.place_order(ACCOUNT, "m-1", "ETH/USDT", "sell", D(1))
    # At the bid 2998.5, fee 2.9985.
    assert (state.fills[0].price, (await venue.balances(ACCOUNT)).free["USDT"]) == (
        D("2998.5"),
        D("2995.5015"),
    )


async def test_a_cancel_ends_a_resting_order_and_frees_what_it_locked(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, ETH="2")
    await venue.place_order(ACCOUNT, "l-5", "ETH/USDT", "sell", D(1), price=D(3100))
    assert (await venue.balances(ACCOUNT)).locked == {"ETH": D(1)}
    ended = await venue.cancel_order(ACCOUNT, "l-5", "ETH/USDT")
    assert ended is not None and (ended.status, ended.filled) == ("cancelled", D(0))
    assert (await venue.balances(ACCOUNT)).free == {"ETH": D(2)}
    move(venue, ETH="3200")  # a cancelled order never fills
    assert (await venue.order(ACCOUNT, "l-5", "ETH/USDT")).status == "cancelled"  # type: ignore[union-attr]


async def test_a_cancel_loses_the_race_to_a_price_that_reached_the_order(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, ETH="2")
    await venue.place_order(ACCOUNT, "l-6", "ETH/USDT", "sell", D(1), price=D(3100))
    move(venue, ETH="3100")
    ended = await venue.cancel_order(ACCOUNT, "l-6", "ETH/USDT")
    assert ended is not None and (ended.status, ended.filled, ended.fills[0].price) == (
        "filled",
        D(1),
        D(3100),
    )
    assert (await venue.balances(ACCOUNT)).free == {"ETH": D(1), "USDT": D("3096.9")}


async def test_a_resting_order_may_not_lock_more_than_is_free(pool: asyncpg.Pool) -> None:
    venue = await venue_with(pool, ETH="1")
    await venue.place_order(ACCOUNT, "l-7", "ETH/USDT", "sell", D("0.6"), price=D(3100))
    with pytest.raises(InsufficientFunds):
        await venue.place_order(ACCOUNT, "l-8", "ETH/USDT", "sell", D("0.6"), price=D(3100))
    with pytest.raises(InsufficientFunds):  # a market order spends only what is free too
        await venue.place_order(ACCOUNT, "m-2", "ETH/USDT", "sell", D("0.6"))
