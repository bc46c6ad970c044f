"""The paper exchange's perpetual futures accounts against a real Postgres: positions opened, increased,
reduced, flipped and closed at the mark price; fees, margin and leverage; reduce-only, margin and
leverage refusals as Binance's; funding payments; liquidation at the mark price."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from rebal.core.market import Prices
from rebal.futures import REDUCE_ONLY_REJECTED, FuturesVenue, LeverageRefused, MarginModeRefused
from rebal.venue import InsufficientFunds, OrderRejected
from rebal_venues.paper import MovingPrices, PaperVenue
from rebal_venues.paper_futures import DEFAULT_LEVERAGE, PaperFuturesVenue, futures_of
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, T0, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
ACCOUNT = "demo/paper/futures"
BTC = "BTC/USDT:USDT"
D = Decimal
CONTRACTS = {
    EXCHANGE: {
        BTC: {
            "amount_step": "0.001",
            "min_amount": "0.001",
            "min_cost": "100",
            "fee_rate": "0.0005",
            "max_leverage": 125,
            "maintenance_margin_rate": "0.004",
        }
    }
}


async def venue(pool: asyncpg.Pool, usdt: str = "10000", clock: Clock | None = None) -> PaperFuturesVenue:
    spot = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, clock or Clock(), **STILL)
    futures = futures_of(spot, CONTRACTS, liquidation_fee_rate=D("0.01"))
    assert isinstance(futures, PaperFuturesVenue)
    assert await futures.seed(ACCOUNT, {"USDT": D(usdt)})
    return futures


def move_to(futures: PaperFuturesVenue, btc: str) -> None:
    futures.price_model = MovingPrices(Prices.parse({"quote": "USDT", "prices": {"BTC": btc}}), **STILL)


async def held(futures: PaperFuturesVenue) -> dict[str, tuple[Decimal, Decimal]]:
    return {p.symbol: (p.amount, p.entry_price) for p in await futures.positions(ACCOUNT)}


async def test_a_paper_venue_with_contracts_is_a_futures_venue(pool: asyncpg.Pool) -> None:
    futures = await venue(pool)
    assert isinstance(futures, FuturesVenue)
    (contract,) = (await futures.contracts()).values()
    assert (contract.symbol, contract.amount_step, contract.max_leverage) == (BTC, D("0.001"), 125)
    assert await futures.mark_prices([BTC]) == {BTC: D(60000)}
    assert await futures.prices([BTC, "BTC/USDT"]) == {BTC: D(60000), "BTC/USDT": D(60000)}
    spot = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), **STILL)
    assert futures_of(spot, {"elsewhere": {}}) is spot  # no contracts listed for it: spot only


async def test_open_increase_reduce_and_close_at_the_mark(pool: asyncpg.Pool) -> None:
    futures = await venue(pool)
    await futures.set_leverage(ACCOUNT, BTC, 3)
    state = await futures.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.1"), False)
    # 0.1 x 60000 = 6000 notional, taker fee 0.05% = 3 USDT off the wallet.
    (fill,) = state.fills
    assert (state.status, fill.price, fill.fee, fill.fee_asset) == ("filled", D(60000), D(3), "USDT")
    margin = await futures.margin(ACCOUNT)
    assert (margin.wallet_balance, margin.unrealized_pnl, margin.available) == (D(9997), D(0), D(7997))
    (position,) = await futures.positions(ACCOUNT)
    assert (position.amount, position.leverage, position.margin_mode) == (D("0.1"), 3, "cross")
    # Increased at 62000: the entry is averaged, the profit of the first part is unrealized.
    move_to(futures, "62000")
    await futures.place_position_order(ACCOUNT, "o-2", BTC, "buy", D("0.1"), False)
    assert await held(futures) == {BTC: (D("0.2"), D(61000))}
    assert (await futures.margin(ACCOUNT)).unrealized_pnl == D(200)
    # Reduced at 63000: 0.05 x (63000 - 61000) = 100 realized, less the fee 1.575.
    move_to(futures, "63000")
    await futures.place_position_order(ACCOUNT, "o-3", BTC, "sell", D("0.05"), True)
    assert await held(futures) == {BTC: (D("0.15"), D(61000))}
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(9997) - D("3.1") + D(100) - D("1.575")
    # Closed reduce-only: the position row is gone, the rest realized.
    await futures.place_position_order(ACCOUNT, "o-4", BTC, "sell", D("0.15"), True)
    assert await futures.positions(ACCOUNT) == []
    assert (await futures.margin(ACCOUNT)).wallet_balance == D("10387.6"), (
        "9997 - 3.1 + 100 - 1.575 + 300 - 4.725"
    )


async def test_a_flip_realizes_the_old_side_and_enters_the_new_at_the_mark(pool: asyncpg.Pool) -> None:
    futures = await venue(pool)
    await futures.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.1"), False)
    move_to(futures, "59000")
    await futures.place_position_order(ACCOUNT, "o-2", BTC, "sell", D("0.3"), False)
    assert await held(futures) == {BTC: (D("-0.2"), D(59000))}
    # Never set: Binance's default, 20x cross.
    assert [(p.leverage, p.margin_mode) for p in await futures.positions(ACCOUNT)] == [
        (DEFAULT_LEVERAGE, "cross")
    ]
    # -100 realized on the long; fees 3 and 8.85.
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(10000) - D(3) - D(100) - D("8.85")


async def test_reduce_only_orders_that_would_not_reduce_are_rejected(pool: asyncpg.Pool) -> None:
    futures = await venue(pool)
    with pytest.raises(OrderRejected) as none_held:
        await futures.place_position_order(ACCOUNT, "r-1", BTC, "sell", D("0.1"), True)
    await futures.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.1"), False)
    with pytest.raises(OrderRejected) as same_side:
        await futures.place_position_order(ACCOUNT, "r-2", BTC, "buy", D("0.1"), True)
    with pytest.raises(OrderRejected) as too_much:
        await futures.place_position_order(ACCOUNT, "r-3", BTC, "sell", D("0.2"), True)
    assert {none_held.value.reason, same_side.value.reason, too_much.value.reason} == {REDUCE_ONLY_REJECTED}
    state = await futures.order(ACCOUNT, "r-3", BTC)
    assert state is not None and (state.status, state.reason) == ("rejected", REDUCE_ONLY_REJECTED)
    assert await held(futures) == {BTC: (D("0.1"), D(60000))}


async def test_margin_minimums_and_leverage_are_checked(pool: asyncpg.Pool) -> None:
    futures = await venue(pool, usdt="1000")
    await futures.set_leverage(ACCOUNT, BTC, 1)
    with pytest.raises(InsufficientFunds):  # 1200 of initial margin at 1x on 1000: -2019
        await futures.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.02"), False)
    with pytest.raises(OrderRejected, match="below_min_cost"):  # 60 < the 100 minimum notional
        await futures.place_position_order(ACCOUNT, "o-2", BTC, "buy", D("0.001"), False)
    with pytest.raises(LeverageRefused, match="leverage 126 is not valid"):
        await futures.set_leverage(ACCOUNT, BTC, 126)
    await futures.set_leverage(ACCOUNT, BTC, 5)
    await futures.place_position_order(ACCOUNT, "o-3", BTC, "buy", D("0.05"), False)  # 3000 at 5x: 600
    with pytest.raises(LeverageRefused, match="too low for the position held"):
        await futures.set_leverage(ACCOUNT, BTC, 2)  # 1500 of margin on ~998 free
    with pytest.raises(MarginModeRefused, match="Margin type cannot be changed if there exists position"):
        await futures.set_margin_mode(ACCOUNT, BTC, "isolated")
    await futures.set_margin_mode(ACCOUNT, BTC, "cross")  # already cross: nothing to change


async def test_funding_is_paid_once_per_funding_time_by_longs(pool: asyncpg.Pool) -> None:
    clock = Clock(T0 + timedelta(hours=7))
    futures = await venue(pool, clock=clock)
    await futures.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.1"), False)
    clock.now = T0 + timedelta(hours=17)  # past 08:00 and 16:00
    # 0.1 x 60000 x 0.01% = 0.6 at each funding time; read twice, paid once each.
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(10000) - D(3) - D("1.2")
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(10000) - D(3) - D("1.2")
    rows = await pool.fetch("SELECT funding_time, payment FROM paper.funding ORDER BY funding_time")
    assert [(r["funding_time"].hour, r["payment"]) for r in rows] == [(8, D("0.6")), (16, D("0.6"))]


async def test_a_short_receives_funding(pool: asyncpg.Pool) -> None:
    clock = Clock(T0 + timedelta(hours=7))
    futures = await venue(pool, clock=clock)
    await futures.place_position_order(ACCOUNT, "o-1", BTC, "sell", D("0.1"), False)
    clock.now = T0 + timedelta(hours=9)
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(10000) - D(3) + D("0.6")


async def test_cross_positions_are_liquidated_at_the_mark_price(pool: asyncpg.Pool) -> None:
    futures = await venue(pool)
    await futures.set_leverage(ACCOUNT, BTC, 3)
    await futures.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.45"), False)
    (position,) = await futures.positions(ACCOUNT)
    # (9986.5 - 0.45 x 60000) / (0.45 x 0.004 - 0.45): liquidated at 37959.62.
    assert position.liquidation_price == D("37959.61624275")
    move_to(futures, "38000")
    assert await held(futures) == {BTC: (D("0.45"), D(60000))}
    move_to(futures, "37900")
    assert await futures.positions(ACCOUNT) == []
    (liquidation,) = await futures.liquidations(ACCOUNT)
    assert (liquidation["amount"], liquidation["mark_price"], liquidation["realized_pnl"]) == (
        D("0.45"),
        D(37900),
        D(-9945),
    )
    # 9986.5 - 9945 - the 170.55 clearance fee is below zero: the insurance fund brings it back to 0.
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(0)


async def test_an_isolated_position_is_liquidated_on_its_own_margin(pool: asyncpg.Pool) -> None:
    futures = await venue(pool)
    await futures.set_margin_mode(ACCOUNT, BTC, "isolated")
    await futures.set_leverage(ACCOUNT, BTC, 10)
    await futures.place_position_order(ACCOUNT, "o-1", BTC, "sell", D("0.1"), False)
    (position,) = await futures.positions(ACCOUNT)
    # 600 of isolated margin: (600 + 6000) / (0.0004 + 0.1) = 65737.05
    assert position.margin_mode == "isolated" and position.liquidation_price == D("65737.05179283")
    move_to(futures, "65800")
    assert await futures.positions(ACCOUNT) == []
    # Only the 600 of margin is lost; the wallet keeps the rest.
    assert (await futures.margin(ACCOUNT)).wallet_balance == D(10000) - D(3) - D(600)
