"""The ccxt venue's limit orders against the fake Binance (an unmodified ccxt client over HTTP): a limit
order is ccxt's ``create_order(symbol, 'limit', side, amount, price, {'newClientOrderId': …})``, a
post-only one adds ccxt's unified ``postOnly`` (Binance: type LIMIT_MAKER); Binance refuses a LIMIT_MAKER
that would cross with -2010 "Order would immediately match and take." (ccxt's OrderImmediatelyFillable),
which the adapter translates by class to `POST_ONLY_WOULD_TAKE`. The book's top is the ticker's bid and
ask; the price tick is PRICE_FILTER's tickSize."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from rebal.venue import POST_ONLY_WOULD_TAKE, BookTop, OrderRejected, Resting
from rebal_venues.ccxt_venue import CcxtVenue, open_ccxt_venue
from tests.fake_exchange import FakeBook, serving
from tests.venues.support import ACCOUNT, KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


@pytest.fixture
async def book() -> FakeBook:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D(100000), "ETH": D(2)})
    return book


@pytest.fixture
async def venue(book: FakeBook) -> AsyncIterator[CcxtVenue]:
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as opened:
        yield opened


async def test_the_book_top_and_the_price_tick_come_from_the_venue(book: FakeBook, venue: CcxtVenue) -> None:
    book.spread_bps = D(10)
    assert isinstance(venue, Resting)
    assert await venue.book_top("BTC/USDT") == BookTop(D(59970), D(60030))
    assert (await venue.markets())["BTC/USDT"].price_step == D("0.01")


async def test_a_limit_order_rests_and_fills_at_its_price_when_the_price_reaches_it(
    book: FakeBook, venue: CcxtVenue
) -> None:
    state = await venue.place_order(ACCOUNT, "l-1", "BTC/USDT", "buy", D("0.5"), price=D(59900))
    assert (state.status, state.filled) == ("open", D(0))
    (sent,) = book.requests_of("create")
    assert (sent["type"], sent["price"], sent["timeInForce"], sent["newClientOrderId"]) == (
        "LIMIT",
        "59900",
        "GTC",
        "l-1",
    )
    book.prices["BTCUSDT"] = D(59800)
    filled = await venue.order(ACCOUNT, "l-1", "BTC/USDT")
    assert filled is not None and (filled.status, filled.filled) == ("filled", D("0.5"))
    assert [(f.amount, f.price, f.fee_asset) for f in filled.fills] == [(D("0.5"), D(59900), "BTC")]


async def test_a_post_only_order_that_would_take_is_refused_by_class(
    book: FakeBook, venue: CcxtVenue
) -> None:
    with pytest.raises(OrderRejected) as refused:
        await venue.place_order(ACCOUNT, "l-2", "ETH/USDT", "sell", D(1), price=D(3000), post_only=True)
    assert refused.value.reason == POST_ONLY_WOULD_TAKE
    assert book.requests_of("create")[0]["type"] == "LIMIT_MAKER"
    rested = await venue.place_order(ACCOUNT, "l-3", "ETH/USDT", "sell", D(1), price=D(3010), post_only=True)
    assert rested.status == "open"


async def test_a_cancel_ends_a_resting_order_unless_a_fill_won_the_race(
    book: FakeBook, venue: CcxtVenue
) -> None:
    await venue.place_order(ACCOUNT, "l-4", "ETH/USDT", "sell", D("0.5"), price=D(3100))
    ended = await venue.cancel_order(ACCOUNT, "l-4", "ETH/USDT")
    assert ended is not None and (ended.status, ended.filled) == ("cancelled", D(0))
    await venue.place_order(ACCOUNT, "l-5", "ETH/USDT", "sell", D("0.5"), price=D(3100))
    book.prices["ETHUSDT"] = D(3150)  # reached before the cancel arrives: -2011, the order filled
    ended = await venue.cancel_order(ACCOUNT, "l-5", "ETH/USDT")
    assert ended is not None and (ended.status, ended.filled, ended.fills[0].price) == (
        "filled",
        D("0.5"),
        D(3100),
    )
