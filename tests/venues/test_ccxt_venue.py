"""The ccxt venue against the fake Binance (an unmodified ccxt client over HTTP), and the contract it shares
with the paper exchange (the same cases run against both: `contract`).

Rate limits: ccxt does not retry by itself (``maxRetriesOnFailure`` is 0); the adapter retries a 429 after
the venue's Retry-After (`Backoff`), the same request under the same client order id, and only when its
retries are spent does the caller see `VenueRateLimited`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pytest
from pydantic import SecretStr

from rebal import metrics
from rebal.core.venues import Quote
from rebal.venue import (
    ClientIdInUse,
    Fill,
    InsufficientFunds,
    OrderOutcomeUnknown,
    OrderRejected,
    OrderState,
    Venue,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
)
from rebal_venues.ccxt_venue import CcxtVenue, open_ccxt_venue
from rebal_venues.paper import PaperVenue
from tests.fake_exchange import FakeBook, FakeMarket, RateLimit, serving
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, Clock
from tests.venues.support import ACCOUNT, KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


@dataclass
class Fake:
    book: FakeBook
    origin: str

    def fund(self, **amounts: str) -> None:
        self.book.accounts[KEY].update({asset: D(amount) for asset, amount in amounts.items()})


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    book = fake_book()
    async with serving(book) as origin:
        yield Fake(book, origin)


@pytest.fixture
async def venue(fake: Fake) -> AsyncIterator[CcxtVenue]:
    async with open_ccxt_venue(settings(fake.origin)) as opened:
        yield opened


# -- the contract, for the paper exchange and the ccxt venue alike -----------------------------------


@dataclass
class Contract:
    venue: Venue
    account: str
    fund: Callable[[Mapping[str, Decimal]], Awaitable[object]]


@pytest.fixture(params=["paper", "ccxt"])
async def contract(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Contract]:
    """The same cases on both venues (the shared database is emptied for the ccxt ones too: cheap)."""
    if request.param == "paper":
        paper = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), **STILL)
        yield Contract(paper, ACCOUNT, functools.partial(paper.seed, ACCOUNT))
        return
    book = fake_book()

    async def fund(amounts: Mapping[str, Decimal]) -> None:
        book.accounts[KEY].update(amounts)

    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as ccxt_venue:
        yield Contract(ccxt_venue, ACCOUNT, fund)


def moved_by(start: Mapping[str, Decimal], state: OrderState, base: str, quote: str) -> dict[str, Decimal]:
    """`start` moved by exactly what the fills say, wherever the venue takes the fee from."""
    held = dict(start)
    sign = 1 if state.side == "buy" else -1
    for fill in state.fills:
        held[base] = held.get(base, D(0)) + sign * fill.amount
        held[quote] = held.get(quote, D(0)) - sign * (fill.amount * fill.price).quantize(D("1e-8"))
        held[fill.fee_asset] -= fill.fee
    return {asset: amount for asset, amount in held.items() if amount}


async def test_contract_markets_carry_steps_minimums_and_fees(contract: Contract) -> None:
    markets = await contract.venue.markets()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    figures = {
        symbol: (m.base, m.quote, m.amount_step, m.min_amount, m.min_cost, m.fee_rate, m.active)
        for symbol, m in markets.items()
    }
    assert figures == {
        "BTC/USDT": ("BTC", "USDT", D("0.00001"), D("0.00001"), D("5"), D("0.001"), True),
        "ETH/USDT": ("ETH", "USDT", D("0.0001"), D("0.0001"), D("5"), D("0.001"), True),
        "SOL/USDT": ("SOL", "USDT", D("0.01"), D("0.01"), D("5"), D("0.001"), True),
    }


async def test_contract_prices_are_the_last_prices(contract: Contract) -> None:
    assert await contract.venue.prices(["BTC/USDT", "SOL/USDT"]) == {"BTC/USDT": D(60000), "SOL/USDT": D(150)}


async def test_quotes_are_the_tickers_best_bid_and_ask(fake: Fake, venue: CcxtVenue) -> None:
    """What the tracker fills the snapshot's per-venue prices from (Binance's 24hr ticker `bidPrice` and
    `askPrice`, which the fake shows at the last price)."""
    assert await venue.quotes(["BTC/USDT", "SOL/USDT"]) == {
        "BTC/USDT": Quote(D(60000), D(60000)),
        "SOL/USDT": Quote(D(150), D(150)),
    }
    assert [r.get("symbol") for r in fake.book.requests_of("tickers")] == ["BTCUSDT", "SOLUSDT"]


async def test_a_few_prices_are_read_one_ticker_each_many_at_once(fake: Fake, venue: CcxtVenue) -> None:
    assert await venue.prices(["ETH/USDT"]) == {"ETH/USDT": D(3000)}
    assert [r.get("symbol") for r in fake.book.requests_of("tickers")] == ["ETHUSDT"]  # weight 2, not 80
    fake.book.requests.clear()
    many = ["BTC/USDT", "ETH/USDT", "SOL/USDT"] * 4  # more than SINGLE_TICKERS_UP_TO
    assert await venue.prices(many) == {"BTC/USDT": D(60000), "ETH/USDT": D(3000), "SOL/USDT": D(150)}
    assert len(fake.book.requests_of("tickers")) == 1


async def test_the_prices_of_thousands_of_markets_are_read_as_every_ticker_at_once() -> None:
    """A list of 2,000 symbols made a URL over the 8 KiB a server takes (400, so the buys of a large plan
    could not be sized); Binance weighs more than 100 the same as all of them (80)."""
    count = 2000
    book = FakeBook(
        markets={
            f"X{i}USDT": FakeMarket(f"X{i}", "USDT", D("0.01"), D("0.01"), D("5")) for i in range(count)
        },
        prices={f"X{i}USDT": D(i + 1) for i in range(count)},
        accounts={KEY: {}},
    )
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as many:
        symbols = [f"X{i}/USDT" for i in range(count)]
        assert await many.prices(symbols) == {f"X{i}/USDT": D(i + 1) for i in range(count)}
        assert [r.get("symbols") for r in book.requests_of("tickers")] == [None]


async def test_contract_a_buy_moves_the_balances_by_its_fills(contract: Contract) -> None:
    await contract.fund({"USDT": D("100000")})
    state = await contract.venue.place_order(contract.account, "c-buy", "BTC/USDT", "buy", D("0.5"))
    assert (state.status, state.filled, state.amount) == ("filled", D("0.5"), D("0.5"))
    [fill] = state.fills
    assert (fill.amount, fill.price) == (D("0.5"), D("60000"))
    # The fee is 0.1% of what is received (paper: 30 USDT on top of the cost; Binance: 0.0005 BTC).
    assert fill.fee == (D("30") if fill.fee_asset == "USDT" else D("0.0005"))
    balances = await contract.venue.balances(contract.account)
    assert balances.free == moved_by({"USDT": D("100000")}, state, "BTC", "USDT")


async def test_contract_selling_everything_leaves_the_proceeds(contract: Contract) -> None:
    await contract.fund({"SOL": D("3")})
    state = await contract.venue.place_order(contract.account, "c-sell", "SOL/USDT", "sell", D("3"))
    assert [(f.amount, f.price, f.fee, f.fee_asset) for f in state.fills] == [
        (D("3"), D("150"), D("0.45"), "USDT")
    ]
    assert (await contract.venue.balances(contract.account)).free == {"USDT": D("449.55")}


async def test_contract_a_client_order_id_is_taken_again_once_its_order_has_ended(contract: Contract) -> None:
    # Binance: newClientOrderId is "a unique id among open orders"; the first order filled (closed), so the
    # same id places a NEW order: sending an id again blindly trades twice.
    await contract.fund({"USDT": D("1000")})
    first = await contract.venue.place_order(contract.account, "c-once", "ETH/USDT", "buy", D("0.1"))
    held = (await contract.venue.balances(contract.account)).free
    again = await contract.venue.place_order(contract.account, "c-once", "ETH/USDT", "buy", D("0.1"))
    assert again.fills[0].trade_id != first.fills[0].trade_id
    spent = sum((f.amount * f.price + (f.fee if f.fee_asset == "USDT" else 0) for f in again.fills), D(0))
    assert (await contract.venue.balances(contract.account)).free["USDT"] == held["USDT"] - spent
    assert await contract.venue.order(contract.account, "c-once", "ETH/USDT") == again


@pytest.mark.parametrize(
    ("symbol", "side", "amount", "reason"),
    [
        ("BTC/USDT", "buy", "2", "insufficient_funds"),  # costs 120000 > 1000
        ("ETH/USDT", "sell", "1", "insufficient_funds"),  # holds no ETH
        ("DOGE/USDT", "buy", "10", "unknown_symbol"),
    ],
)
async def test_contract_rejections_name_the_reason_and_change_nothing(
    contract: Contract, symbol: str, side: str, amount: str, reason: str
) -> None:
    await contract.fund({"USDT": D("1000")})
    with pytest.raises(OrderRejected) as raised:
        await contract.venue.place_order(contract.account, "c-no", symbol, side, D(amount))  # type: ignore[arg-type]
    assert (raised.value.client_order_id, raised.value.reason) == ("c-no", reason)
    assert isinstance(raised.value, InsufficientFunds) == (reason == "insufficient_funds")
    assert (await contract.venue.balances(contract.account)).free == {"USDT": D("1000")}


# -- markets and rounding -----------------------------------------------------------------------------


async def test_min_cost_comes_from_the_notional_and_the_min_notional_filter(venue: CcxtVenue) -> None:
    markets = await venue.markets()
    # BTCUSDT carries NOTIONAL, ETHUSDT the older MIN_NOTIONAL: both are min_cost.
    assert (markets["BTC/USDT"].min_cost, markets["ETH/USDT"].min_cost) == (D(5), D(5))


async def test_the_amount_sent_is_truncated_to_the_step(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="100000")
    state = await venue.place_order(ACCOUNT, "c-trunc", "BTC/USDT", "buy", D("0.1234569"))
    [sent] = fake.book.requests_of("create")
    assert (sent["quantity"], sent["newClientOrderId"], sent["type"]) == ("0.12345", "c-trunc", "MARKET")
    assert (state.amount, state.filled) == (D("0.12345"), D("0.12345"))
    # Binance takes the fee from the BTC received: 0.12345 x 0.1% = 0.00012345.
    assert (await venue.balances(ACCOUNT)).free == {"BTC": D("0.12332655"), "USDT": D("92593")}
    # The fills came with the order's own (FULL) answer: no trades request (Binance weight 20) was needed.
    assert fake.book.requests_of("trades") == []


async def test_an_amount_below_the_minimum_after_truncation_is_not_sent(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="100")
    with pytest.raises(OrderRejected, match="below_min_amount"):
        await venue.place_order(ACCOUNT, "c-tiny", "BTC/USDT", "buy", D("0.000009"))
    assert fake.book.requests_of("create") == []


async def test_below_min_cost_is_rejected_by_the_venue_and_named(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="100")
    with pytest.raises(OrderRejected) as raised:
        await venue.place_order(ACCOUNT, "c-cheap", "BTC/USDT", "buy", D("0.00008"))  # 4.8 USDT < 5
    assert raised.value.reason == "below_min_cost"
    # Sent (the venue is the authority on a market order's cost), refused, and named from the last price.
    assert [r["quantity"] for r in fake.book.requests_of("create")] == ["0.00008"]
    # One step more is 5.4 USDT: it fills.
    state = await venue.place_order(ACCOUNT, "c-enough", "BTC/USDT", "buy", D("0.00009"))
    assert (state.status, state.filled) == ("filled", D("0.00009"))
    assert fake.book.accounts[KEY]["USDT"] == D("94.6")


async def test_an_inactive_market_is_reported_and_refused_without_a_request(
    fake: Fake, venue: CcxtVenue
) -> None:
    assert (await venue.markets())["BTC/USDT"].active
    fake.book.faults.halted.add("BTCUSDT")
    markets = await venue.reload_markets()
    assert (markets["BTC/USDT"].active, markets["ETH/USDT"].active) == (False, True)
    fake.fund(USDT="1000")
    with pytest.raises(OrderRejected, match="inactive_symbol"):
        await venue.place_order(ACCOUNT, "c-halt", "BTC/USDT", "buy", D("0.001"))
    assert fake.book.requests_of("create") == []


# -- orders by client id ------------------------------------------------------------------------------


async def test_a_fill_is_read_back_by_client_id_from_a_fresh_venue(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(ETH="2")
    placed = await venue.place_order(ACCOUNT, "c-read", "ETH/USDT", "sell", D("1.2345"))
    async with open_ccxt_venue(settings(fake.origin)) as restarted:
        found = await restarted.order(ACCOUNT, "c-read", "ETH/USDT")
        assert await restarted.order(ACCOUNT, "c-never", "ETH/USDT") is None
    assert found == placed
    # 1.2345 x 3000 = 3703.5, fee 3.7035 USDT.
    assert found.fills == (Fill(found.fills[0].trade_id, D("1.2345"), D("3000"), D("3.7035"), "USDT"),)
    assert fake.book.requests_of("order")[0]["origClientOrderId"] == "c-read"


async def test_a_duplicate_is_refused_by_the_venue_and_answered_by_a_look_up(
    fake: Fake, venue: CcxtVenue
) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.fill_delay_seconds = 60  # the first order stays open: its id may not be used again
    first = await venue.place_order(ACCOUNT, "c-dup", "ETH/USDT", "buy", D("0.1"))
    async with open_ccxt_venue(settings(fake.origin)) as restarted:
        again = await restarted.place_order(ACCOUNT, "c-dup", "ETH/USDT", "buy", D("0.1"))
    assert again == first
    assert len(fake.book.orders) == 1
    assert [r["newClientOrderId"] for r in fake.book.requests_of("create")] == ["c-dup", "c-dup"]


async def test_a_duplicate_not_shown_yet_is_an_order_that_exists_never_a_rejection(
    fake: Fake, venue: CcxtVenue
) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.fill_delay_seconds = 60
    fake.book.faults.not_found_seconds = 60  # the venue holds it but no read shows it yet
    await venue.place_order(ACCOUNT, "c-held", "ETH/USDT", "buy", D("0.1"))
    with pytest.raises(ClientIdInUse) as raised:
        await venue.place_order(ACCOUNT, "c-held", "ETH/USDT", "buy", D("0.1"))
    assert isinstance(raised.value, OrderOutcomeUnknown) and not isinstance(raised.value, OrderRejected)
    assert len(fake.book.orders) == 1


async def test_a_submit_timeout_after_acceptance_is_resolved_by_client_id(
    fake: Fake, venue: CcxtVenue
) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.submit_delay_seconds = 1.0
    async with open_ccxt_venue(settings(fake.origin, timeout_ms=300)) as impatient:
        state = await impatient.place_order(ACCOUNT, "c-late", "ETH/USDT", "buy", D("0.1"))
    assert (state.status, state.filled, len(state.fills)) == ("filled", D("0.1"), 1)
    # Sent once; never again, and never under another id.
    assert [r["newClientOrderId"] for r in fake.book.requests_of("create")] == ["c-late"]
    assert [r["origClientOrderId"] for r in fake.book.requests_of("order")] == ["c-late"]


async def test_an_unknown_outcome_is_found_by_looking_up_not_by_sending_again(fake: Fake) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.submit_delay_seconds = 0.5
    fake.book.faults.not_found_seconds = 1.0
    async with open_ccxt_venue(settings(fake.origin, timeout_ms=300)) as impatient:
        with pytest.raises(OrderOutcomeUnknown) as raised:
            await impatient.place_order(ACCOUNT, "c-unsure", "ETH/USDT", "buy", D("0.1"))
        assert isinstance(raised.value, VenueError)  # retryable
        assert await impatient.order(ACCOUNT, "c-unsure", "ETH/USDT") is None  # not shown yet: no proof
        await asyncio.sleep(1.0)
        state = await impatient.order(ACCOUNT, "c-unsure", "ETH/USDT")
    assert state is not None and (state.status, state.filled) == ("filled", D("0.1"))
    assert len(fake.book.orders) == 1
    assert fake.book.accounts[KEY]["USDT"] == D("700")


async def test_an_order_not_found_for_a_while_is_none_then_found(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.not_found_seconds = 0.6
    placed = await venue.place_order(ACCOUNT, "c-slow", "ETH/USDT", "buy", D("0.1"))
    assert await venue.order(ACCOUNT, "c-slow") is None
    await asyncio.sleep(0.7)
    assert await venue.order(ACCOUNT, "c-slow") == placed


async def test_a_partial_fill_reports_what_filled_and_why_it_ended(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(SOL="10")
    fake.book.faults.partial_fill = D("0.4")
    state = await venue.place_order(ACCOUNT, "c-part", "SOL/USDT", "sell", D("2.55"))
    # 40% of 2.55 = 1.02; the rest expired: 1.02 x 150 = 153, fee 0.153.
    assert (state.status, state.reason, state.amount, state.filled) == (
        "expired",
        "expired",
        D("2.55"),
        D("1.02"),
    )
    assert [(f.amount, f.fee) for f in state.fills] == [(D("1.02"), D("0.153"))]
    assert (await venue.balances(ACCOUNT)).free == {"SOL": D("8.98"), "USDT": D("152.847")}


async def test_fills_reported_twice_are_counted_once(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.fills_twice = True
    state = await venue.place_order(ACCOUNT, "c-twice", "ETH/USDT", "buy", D("0.1"))
    assert len(state.fills) == 1
    assert sum(f.amount for f in state.fills) == state.filled == D("0.1")
    assert len((await venue.order(ACCOUNT, "c-twice")).fills) == 1  # type: ignore[union-attr]


async def test_a_cancel_that_races_a_fill_reports_the_fill(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="1000")
    placed = await venue.place_order(ACCOUNT, "c-race", "ETH/USDT", "buy", D("0.1"))
    # The market order filled before the cancel arrived: the venue refuses it (-2011), the fill stands.
    assert await venue.cancel_order(ACCOUNT, "c-race", "ETH/USDT") == placed
    assert await venue.cancel_order(ACCOUNT, "c-unknown", "ETH/USDT") is None
    assert [r["origClientOrderId"] for r in fake.book.requests_of("cancel")] == ["c-race", "c-unknown"]


async def test_a_cancel_arriving_after_the_fill_loses_the_race_and_reports_the_fill(
    fake: Fake, venue: CcxtVenue
) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.fill_delay_seconds = 0.3
    placed = await venue.place_order(ACCOUNT, "c-rest", "ETH/USDT", "buy", D("0.1"))
    assert (placed.status, placed.filled, placed.fills) == ("open", D(0), ())
    assert fake.book.accounts[KEY] == {"USDT": D("1000")}  # resting: nothing moved yet
    await asyncio.sleep(0.35)
    # The fill happens as the cancel arrives: the venue refuses the cancel, the fill stands.
    ended = await venue.cancel_order(ACCOUNT, "c-rest", "ETH/USDT")
    assert ended is not None
    assert (ended.status, ended.filled, [f.amount for f in ended.fills]) == ("filled", D("0.1"), [D("0.1")])
    assert fake.book.accounts[KEY] == {"USDT": D("700"), "ETH": D("0.0999")}


async def test_a_cancel_arriving_before_the_fill_wins_and_nothing_moves(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.fill_delay_seconds = 5.0
    await venue.place_order(ACCOUNT, "c-early", "ETH/USDT", "buy", D("0.1"))
    ended = await venue.cancel_order(ACCOUNT, "c-early", "ETH/USDT")
    assert ended is not None
    assert (ended.status, ended.filled, ended.fills) == ("cancelled", D(0), ())
    assert fake.book.accounts[KEY] == {"USDT": D("1000")}


# -- errors by class ----------------------------------------------------------------------------------


def errors_counted(error: str) -> float:
    value = metrics.EXCHANGE_ERRORS.labels(exchange="binance", error=error)._value.get()
    return float(value)


async def test_a_rate_limit_is_waited_out_after_the_venues_retry_after(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.rate_limited["balances"] = 2
    fake.book.faults.retry_after_seconds = 0.2
    before = errors_counted("rate_limit")
    started = asyncio.get_running_loop().time()
    assert (await venue.balances(ACCOUNT)).free == {"USDT": D("1000")}
    assert asyncio.get_running_loop().time() - started >= 0.4  # two Retry-After waits of 0.2 s
    assert len(fake.book.requests_of("balances")) == 3  # ccxt did not retry by itself: the adapter did
    assert errors_counted("rate_limit") == before + 2


async def test_a_rate_limit_beyond_the_retries_is_the_callers_with_its_retry_after(fake: Fake) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.rate_limited["balances"] = 3
    fake.book.faults.retry_after_seconds = 0.1
    async with open_ccxt_venue(settings(fake.origin, rate_limit_retries=2)) as venue:
        with pytest.raises(VenueRateLimited) as raised:
            await venue.balances(ACCOUNT)
    assert (raised.value.retryable, raised.value.retry_after) == (True, 0.1)
    assert len(fake.book.requests_of("balances")) == 3


async def test_a_retry_after_longer_than_the_cap_is_not_slept(fake: Fake) -> None:
    fake.book.faults.rate_limited["balances"] = 1
    fake.book.faults.retry_after_seconds = 60
    async with open_ccxt_venue(settings(fake.origin, max_backoff_seconds=5)) as venue:
        with pytest.raises(VenueRateLimited) as raised:
            await venue.balances(ACCOUNT)
    assert raised.value.retry_after == 60
    assert len(fake.book.requests_of("balances")) == 1


async def test_a_rate_limited_submit_is_placed_by_a_retry_under_the_same_id(
    fake: Fake, venue: CcxtVenue
) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.rate_limited["create"] = 1
    fake.book.faults.retry_after_seconds = 0.1
    state = await venue.place_order(ACCOUNT, "c-429", "ETH/USDT", "buy", D("0.1"))
    assert (state.status, state.filled) == ("filled", D("0.1"))
    assert [r["newClientOrderId"] for r in fake.book.requests_of("create")] == ["c-429", "c-429"]
    assert len(fake.book.orders) == 1
    assert fake.book.accounts[KEY]["USDT"] == D("700")


async def test_the_venues_own_rate_limit_is_respected_by_the_throttle(fake: Fake) -> None:
    """The fake admits Binance weights at 200 a second (its burst 30: one /account, 20, the throttle's
    own bank of one cost unit, 5, and a margin); the throttle at 5000/200 = 25 ms per cost unit keeps
    under it: no 429, and the pace is the limit's."""
    fake.fund(USDT="1000")
    fake.book.rate_limit = RateLimit(per_second=200, burst=30, weighted=True)
    async with open_ccxt_venue(settings(fake.origin, rate_limit_ms=25)) as venue:
        await venue.markets()
        started = asyncio.get_running_loop().time()
        for _ in range(6):
            await venue.balances(ACCOUNT)
        elapsed = asyncio.get_running_loop().time() - started
    assert (len(fake.book.requests_of("balances")), fake.book.rate_limit.refused) == (6, 0)
    # exchangeInfo (20) then 6 x /account (20): at least 5 waits of 20/200 s after the first two.
    assert elapsed >= 0.45


async def test_without_the_throttle_the_venues_rate_limit_answers_429_and_is_waited_out(
    fake: Fake,
) -> None:
    fake.fund(USDT="1000")
    fake.book.rate_limit = RateLimit(per_second=10, burst=2)  # load_markets sends 2 at once
    async with open_ccxt_venue(settings(fake.origin, enable_rate_limit=False)) as venue:
        for _ in range(4):
            assert (await venue.balances(ACCOUNT)).free == {"USDT": D("1000")}
    assert len(fake.book.requests_of("balances")) == 4
    assert fake.book.rate_limit.refused >= 1


async def test_insufficient_funds_is_its_own_rejection(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="100")
    before = errors_counted("insufficient_funds")
    with pytest.raises(InsufficientFunds) as raised:
        await venue.place_order(ACCOUNT, "c-poor", "ETH/USDT", "buy", D("0.1"))  # 300 > 100
    assert (raised.value.reason, raised.value.retryable) == ("insufficient_funds", False)
    assert "insufficient balance" in raised.value.detail
    assert errors_counted("insufficient_funds") == before + 1
    assert fake.book.orders == {}


async def test_a_rejection_by_the_venue_carries_its_reason(fake: Fake, venue: CcxtVenue) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.reject_message = "Filter failure: PERCENT_PRICE_BY_SIDE"
    with pytest.raises(OrderRejected) as raised:
        await venue.place_order(ACCOUNT, "c-refused", "ETH/USDT", "buy", D("0.1"))
    assert raised.value.reason.startswith("invalid_order: ")
    assert "PERCENT_PRICE_BY_SIDE" in raised.value.reason
    assert fake.book.orders == {}


async def test_bad_keys_are_an_auth_error_not_a_retryable_one(fake: Fake) -> None:
    async with open_ccxt_venue(settings(fake.origin, api_key=SecretStr("stolen"))) as wrong:
        with pytest.raises(VenueAuthError) as raised:
            await wrong.balances(ACCOUNT)
        assert isinstance(raised.value, VenueError)
        assert not raised.value.retryable
        with pytest.raises(VenueAuthError):
            await wrong.place_order(ACCOUNT, "c-auth", "ETH/USDT", "buy", D("0.1"))
    assert fake.book.orders == {}


async def test_a_venue_holds_the_keys_of_one_account(venue: CcxtVenue) -> None:
    with pytest.raises(ValueError, match="holds the keys of account"):
        await venue.balances("someone/else")


async def test_open_orders_lists_ours_and_others_with_a_stable_id_for_those_without_one(
    fake: Fake, venue: CcxtVenue
) -> None:
    fake.fund(USDT="1000")
    fake.book.faults.fill_delay_seconds = 60  # our market order rests a minute
    await venue.place_order(ACCOUNT, "rb-ours", "ETH/USDT", "buy", D("0.1"))
    by_hand = fake.book.rest(KEY, "BTCUSDT", "BUY", D("0.01"))  # placed in the web UI: no client id
    fake.book.rest(KEY, "SOLUSDT", "SELL", D("2"), "bot-7")
    listed = await venue.open_orders(ACCOUNT)
    figures = [(s.client_order_id, s.symbol, s.side, s.amount, s.status, s.filled) for s in listed]
    assert figures == [
        (f"venue:{by_hand.order_id}", "BTC/USDT", "buy", D("0.01"), "open", D(0)),
        ("rb-ours", "ETH/USDT", "buy", D("0.1"), "open", D(0)),
        ("bot-7", "SOL/USDT", "sell", D("2"), "open", D(0)),
    ]
    assert [s.client_order_id for s in await venue.open_orders(ACCOUNT, "SOL/USDT")] == ["bot-7"]
    assert [r.get("symbol") for r in fake.book.requests_of("open_orders")] == [None, "SOLUSDT"]
    # Once filled, ours is no longer open; the resting ones still are.
    fake.book.faults.fill_delay_seconds = 0
    assert [s.client_order_id for s in await venue.open_orders(ACCOUNT)] == [
        f"venue:{by_hand.order_id}",
        "bot-7",
    ]
