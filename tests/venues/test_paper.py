"""The paper exchange's contract, against a real Postgres: exact balances, rejections, and a venue's
documented unpleasant parts (client ids reused once their order ended, late look-ups, order-count limits,
fees in the asset received)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from rebal.core.venues import Quote
from rebal.events import derive_id
from rebal.venue import ClientIdInUse, OrderRejected, QuotingVenue, Venue, VenueRateLimited
from rebal_venues.paper import PaperVenue
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
ACCOUNT = "demo/paper/spot"
D = Decimal


def still_venue(pool: asyncpg.Pool) -> PaperVenue:
    return PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), **STILL)


async def funded(pool: asyncpg.Pool, **amounts: str) -> PaperVenue:
    venue = still_venue(pool)
    assert await venue.seed(ACCOUNT, {asset: D(amount) for asset, amount in amounts.items()})
    return venue


async def test_implements_the_venue_port(pool: asyncpg.Pool) -> None:
    venue: Venue = still_venue(pool)
    assert venue.name == EXCHANGE


async def test_markets_come_from_the_markets_document(pool: asyncpg.Pool) -> None:
    markets = await still_venue(pool).markets()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    btc = markets["BTC/USDT"]
    assert (btc.base, btc.quote, btc.amount_step, btc.min_cost, btc.fee_rate) == (
        "BTC",
        "USDT",
        D("0.00001"),
        D("5"),
        D("0.001"),
    )


async def test_buy_moves_quote_and_base_by_cost_plus_fee(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, USDT="100000")
    state = await venue.place_order(ACCOUNT, "c-1", "BTC/USDT", "buy", D("0.5"))
    # 0.5 x 60000 = 30000, fee 0.1% = 30: 100000 - 30030 = 69970.
    assert state.status == "filled"
    assert state.filled == D("0.5")
    [fill] = state.fills
    assert (fill.amount, fill.price, fill.fee, fill.fee_asset) == (D("0.5"), D("60000"), D("30"), "USDT")
    assert (await venue.balances(ACCOUNT)).free == {"BTC": D("0.5"), "USDT": D("69970")}


async def test_sell_yields_cost_minus_fee(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, ETH="2", USDT="10")
    state = await venue.place_order(ACCOUNT, "c-2", "ETH/USDT", "sell", D("1.2345"))
    # 1.2345 x 3000 = 3703.5, fee 3.7035: 10 + 3699.7965.
    assert state.fills[0].fee == D("3.7035")
    assert (await venue.balances(ACCOUNT)).free == {"ETH": D("0.7655"), "USDT": D("3709.7965")}


async def test_each_exchange_has_its_own_prices_and_fills_at_its_bid_and_ask(pool: asyncpg.Pool) -> None:
    """`price_factor` 0.99 and `spread_bps` 20: BTC's mid is 59400 there, bid 59340.6, ask 59459.4; a buy
    pays the ask, a sell gets the bid, and `quotes` shows both (what a ticker's best bid and ask show)."""
    venue = PaperVenue.from_documents(
        EXCHANGE, pool, MARKETS, PRICES, Clock(), price_factor=D("0.99"), spread_bps=D(20), **STILL
    )
    assert isinstance(venue, QuotingVenue)
    assert await venue.seed(ACCOUNT, {"USDT": D(100000)})
    assert await venue.prices(["BTC/USDT"]) == {"BTC/USDT": D(59400)}
    assert await venue.quotes(["BTC/USDT", "ETH/USDT"]) == {
        "BTC/USDT": Quote(D("59340.6"), D("59459.4")),
        "ETH/USDT": Quote(D("2967.03"), D("2972.97")),
    }
    bought = await venue.place_order(ACCOUNT, "c-bid-ask-1", "BTC/USDT", "buy", D("0.1"))
    sold = await venue.place_order(ACCOUNT, "c-bid-ask-2", "BTC/USDT", "sell", D("0.1"))
    assert (bought.fills[0].price, sold.fills[0].price) == (D("59459.4"), D("59340.6"))
    # The round trip paid the spread (11.88) and two fees (5.94594 + 5.93406).
    assert (await venue.balances(ACCOUNT)).free == {"USDT": D("99976.24")}


async def test_selling_everything_leaves_no_balance(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, SOL="3", USDT="0")
    await venue.place_order(ACCOUNT, "c-3", "SOL/USDT", "sell", D("3"))
    assert (await venue.balances(ACCOUNT)).free == {"USDT": D("449.55")}


@pytest.mark.parametrize(
    ("symbol", "side", "amount", "reason"),
    [
        ("DOGE/USDT", "buy", "10", "unknown_symbol"),
        ("BTC/USDT", "buy", "0.00005", "below_min_cost"),  # 3 USDT < 5
        ("BTC/USDT", "buy", "0.000015", "not_step_multiple"),
        ("ETH/USDT", "buy", "0", "amount_not_positive"),
        ("BTC/USDT", "buy", "2", "insufficient_funds"),  # costs 120120 > 100000
        ("BTC/USDT", "buy", "1.665", "insufficient_funds"),  # 99900 + fee 99.9 > 99999.8
        ("ETH/USDT", "sell", "1", "insufficient_funds"),  # holds no ETH
    ],
)
async def test_rejections_name_the_reason_and_change_nothing(
    pool: asyncpg.Pool, symbol: str, side: str, amount: str, reason: str
) -> None:
    venue = await funded(pool, USDT="99999.8")
    with pytest.raises(OrderRejected) as raised:
        await venue.place_order(ACCOUNT, "c-r", symbol, side, D(amount))  # type: ignore[arg-type]
    assert raised.value.reason == reason
    assert (await venue.balances(ACCOUNT)).free == {"USDT": D("99999.8")}
    stored = await venue.order(ACCOUNT, "c-r")
    assert stored is not None
    assert (stored.status, stored.reason, stored.fills) == ("rejected", reason, ())
    # Placing it again gives the same answer, whatever happened since.
    await venue.place_order(ACCOUNT, "fund", "BTC/USDT", "buy", D("0.0001"))
    with pytest.raises(OrderRejected, match=reason):
        await venue.place_order(ACCOUNT, "c-r", symbol, side, D(amount))  # type: ignore[arg-type]


async def test_a_buy_that_exactly_fits_the_quote_fills(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, USDT="99999.9")
    await venue.place_order(ACCOUNT, "c-fit", "BTC/USDT", "buy", D("1.665"))
    assert (await venue.balances(ACCOUNT)).free == {"BTC": D("1.665")}


async def test_a_client_order_id_is_taken_again_once_its_order_has_ended(pool: asyncpg.Pool) -> None:
    # Binance: newClientOrderId is "a unique id among open orders"; the first order filled, so the same id
    # is a NEW order (placing an id again blindly trades twice).
    venue = await funded(pool, USDT="1000")
    first = await venue.place_order(ACCOUNT, "c-4", "ETH/USDT", "buy", D("0.1"))
    again = await venue.place_order(ACCOUNT, "c-4", "ETH/USDT", "buy", D("0.1"))
    assert first.fills[0].trade_id != again.fills[0].trade_id
    assert (await venue.balances(ACCOUNT)).free == {"ETH": D("0.2"), "USDT": D("399.4")}
    assert await venue.order(ACCOUNT, "c-4") == again  # the look-up finds the latest
    assert await pool.fetchval("SELECT count(*) FROM paper.orders WHERE client_order_id = 'c-4'") == 2


async def test_an_id_is_refused_while_its_order_is_open(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, USDT="1000")
    await pool.execute(  # an order under the id still open (written by another program, or mid-placement)
        "INSERT INTO paper.orders (exchange, client_order_id, account, symbol, side, amount, status,"
        " created_at) VALUES ($1, 'c-5', $2, 'ETH/USDT', 'buy', 0.1, 'open', $3)",
        EXCHANGE,
        ACCOUNT,
        T0,
    )
    with pytest.raises(ClientIdInUse):
        await venue.place_order(ACCOUNT, "c-5", "ETH/USDT", "buy", D("0.1"))
    assert (await venue.balances(ACCOUNT)).free == {"USDT": D("1000")}


async def test_trade_ids_derive_from_the_exchange_and_client_order_id(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, USDT="1000")
    state = await venue.place_order(ACCOUNT, "c-6", "ETH/USDT", "buy", D("0.1"))
    assert state.fills[0].trade_id == "paper-" + derive_id("paper-fill", EXCHANGE, "c-6").hex
    again = await venue.place_order(ACCOUNT, "c-6", "ETH/USDT", "buy", D("0.1"))
    assert again.fills[0].trade_id == "paper-" + derive_id("paper-fill", EXCHANGE, "c-6", 1).hex


async def test_a_new_order_is_not_found_until_it_is_visible(pool: asyncpg.Pool) -> None:
    # Binance reads an order "Memory => Database": a look-up may answer "Order does not exist." for a while.
    clock = Clock()
    venue = PaperVenue.from_documents(
        EXCHANGE, pool, MARKETS, PRICES, clock, order_visible_after=timedelta(seconds=2), **STILL
    )
    await venue.seed(ACCOUNT, {"USDT": D("1000")})
    placed = await venue.place_order(ACCOUNT, "c-late", "ETH/USDT", "buy", D("0.1"))
    assert placed.status == "filled"  # the answer to the submit says so
    assert await venue.order(ACCOUNT, "c-late") is None
    clock.now += timedelta(seconds=2)
    assert await venue.order(ACCOUNT, "c-late") == placed


async def test_new_orders_beyond_the_per_10_seconds_limit_are_rate_limited(pool: asyncpg.Pool) -> None:
    clock = Clock()
    venue = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, clock, orders_per_10s=3, **STILL)
    await venue.seed(ACCOUNT, {"USDT": D("1000")})
    for n in range(3):
        await venue.place_order(ACCOUNT, f"c-{n}", "ETH/USDT", "buy", D("0.01"))
        clock.now += timedelta(seconds=1)
    with pytest.raises(VenueRateLimited) as raised:
        await venue.place_order(ACCOUNT, "c-3", "ETH/USDT", "buy", D("0.01"))
    assert raised.value.retry_after == 7.0  # the first of the three leaves the window at 10 s
    clock.now += timedelta(seconds=7)
    await venue.place_order(ACCOUNT, "c-3", "ETH/USDT", "buy", D("0.01"))


async def test_a_buys_fee_can_be_taken_from_the_asset_received(pool: asyncpg.Pool) -> None:
    # Binance takes the taker fee from what the order receives: the base on a buy (commissionAsset).
    venue = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), fee_in_received=True, **STILL)
    await venue.seed(ACCOUNT, {"USDT": D("1000")})
    state = await venue.place_order(ACCOUNT, "c-fee", "ETH/USDT", "buy", D("0.1"))
    assert [(f.fee, f.fee_asset) for f in state.fills] == [(D("0.0001"), "ETH")]
    assert (await venue.balances(ACCOUNT)).free == {"ETH": D("0.0999"), "USDT": D("700")}
    sold = await venue.place_order(ACCOUNT, "c-sell", "ETH/USDT", "sell", D("0.05"))
    assert [(f.fee, f.fee_asset) for f in sold.fills] == [(D("0.15"), "USDT")]


async def test_an_unknown_order_is_none(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, USDT="1000")
    await venue.place_order(ACCOUNT, "c-7", "ETH/USDT", "buy", D("0.1"))
    assert await venue.order(ACCOUNT, "nope") is None
    assert await venue.order("someone-else", "c-7") is None


async def test_seed_only_when_the_account_has_no_balances(pool: asyncpg.Pool) -> None:
    venue = await funded(pool, USDT="1000", BTC="0.1")
    await venue.place_order(ACCOUNT, "c-8", "BTC/USDT", "sell", D("0.1"))
    # A second start: the layout's amounts are not loaded again, the traded balances stay.
    restarted = still_venue(pool)
    assert not await restarted.seed(ACCOUNT, {"USDT": D("1000"), "BTC": D("0.1")})
    assert (await restarted.balances(ACCOUNT)).free == {"USDT": D("6994")}
    assert await restarted.seed("fresh", {"ETH": D("1")})


async def test_prices_move_with_the_clock_deterministically_and_bounded(pool: asyncpg.Pool) -> None:
    clock = Clock()
    venue = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, clock)
    twin = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock())
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC"]
    seen = []
    for minutes in range(0, 120, 10):
        clock.now = T0 + timedelta(minutes=minutes)
        twin.clock = lambda at=clock.now: at  # type: ignore[misc]
        now = await venue.prices(symbols)
        assert now == await twin.prices(symbols)
        for symbol, base in (("BTC/USDT", 60000), ("ETH/USDT", 3000), ("SOL/USDT", 150)):
            assert abs(now[symbol] / base - 1) <= D("0.021")
        assert now["ETH/BTC"] == pytest.approx(now["ETH/USDT"] / now["BTC/USDT"], rel=D("1e-9"))
        seen.append(now["BTC/USDT"])
    assert len(set(seen)) == len(seen)


async def test_orders_fill_at_the_price_of_the_moment(pool: asyncpg.Pool) -> None:
    clock = Clock(T0 + timedelta(minutes=17))
    venue = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, clock)
    await venue.seed(ACCOUNT, {"USDT": D("1000")})
    price = (await venue.prices(["ETH/USDT"]))["ETH/USDT"]
    assert price != D(3000)
    state = await venue.place_order(ACCOUNT, "c-9", "ETH/USDT", "buy", D("0.1"))
    assert state.fills[0].price == price
    cost = (D("0.1") * price).quantize(D("1e-8"))
    assert (await venue.balances(ACCOUNT)).free["USDT"] == D(1000) - cost - state.fills[0].fee


async def test_open_orders_are_those_still_open_of_the_account(pool: asyncpg.Pool) -> None:
    venue = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), **STILL)
    await venue.seed("a", {"USDT": Decimal("1000")})
    await venue.place_order("a", "rb-filled", "ETH/USDT", "buy", Decimal("0.1"))
    # An order another program wrote and left open (paper market orders never stay open by themselves).
    for cid, account, symbol in (
        ("ext-1", "a", "BTC/USDT"),
        ("ext-2", "a", "SOL/USDT"),
        ("ext-3", "b", "BTC/USDT"),
    ):
        await pool.execute(
            "INSERT INTO paper.orders (exchange, client_order_id, account, symbol, side, amount, status,"
            " created_at) VALUES ($1, $2, $3, $4, 'buy', 1, 'open', now())",
            EXCHANGE,
            cid,
            account,
            symbol,
        )
    assert [(s.client_order_id, s.symbol, s.status) for s in await venue.open_orders("a")] == [
        ("ext-1", "BTC/USDT", "open"),
        ("ext-2", "SOL/USDT", "open"),
    ]
    assert [s.client_order_id for s in await venue.open_orders("a", "SOL/USDT")] == ["ext-2"]
    assert await venue.open_orders("c") == []
