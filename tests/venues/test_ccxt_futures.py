"""Perpetual futures accounts through an unmodified ccxt `binanceusdm` client against the fake exchange's
USDⓈ-M futures: contracts, mark prices, positions and margin; leverage and margin mode; reduce-only
orders; and the venue's faults — leverage refused, reduce-only rejected, liquidation at the mark price —
as the port's errors and facts. Then the executor running a plan on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from rebal.events import PlannedPositionOrder, PlannedPositionSetting, RunFinished
from rebal.futures import REDUCE_ONLY_REJECTED, FuturesVenue, LeverageRefused, MarginModeRefused
from rebal.venue import InsufficientFunds, OrderRejected, VenueError
from rebal_executor.execution import Executor
from rebal_executor.settings import ExecutorSettings
from rebal_tracker.tracker import Tracker
from rebal_venues.ccxt_futures import CcxtFuturesVenue
from rebal_venues.ccxt_venue import open_ccxt_venue
from rebal_venues.factory import CcxtAccounts, VenuesConfig, open_venues
from rebal_venues.settings import PaperSettings
from tests.executor.memory_journal import MemoryJournal
from tests.executor.test_positions import order as position_order
from tests.executor.test_positions import plan
from tests.fake_exchange import FakeContract, FakeFutures, serving
from tests.fakes import RecordingPublisher
from tests.paper_support import Clock
from tests.venues.support import KEY, SECRET, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
ACCOUNT = "demo/binance/futures"
BTC = "BTC/USDT:USDT"


@dataclass
class Fake:
    futures: FakeFutures
    venue: CcxtFuturesVenue


def fake_futures() -> FakeFutures:
    return FakeFutures(
        contracts={
            "BTCUSDT": FakeContract("BTC", "USDT", D("0.001"), D("0.001"), D("100"), 125, D("0.004")),
            "ETHUSDT": FakeContract("ETH", "USDT", D("0.001"), D("0.001"), D("20"), 100, D("0.005")),
        },
        marks={"BTCUSDT": D(60000), "ETHUSDT": D(3000)},
        wallets={KEY: D(10000)},
    )


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    futures = fake_futures()
    async with serving(fake_book(), futures) as origin:
        venue = open_ccxt_venue(settings(origin, exchange_id="binanceusdm", account=ACCOUNT))
        assert isinstance(venue, CcxtFuturesVenue)
        try:
            yield Fake(futures, venue)
        finally:
            await venue.close()


async def filled(fake: Fake, client_order_id: str) -> tuple[str, Decimal, Decimal, Decimal]:
    state = await fake.venue.order(ACCOUNT, client_order_id, BTC)
    assert state is not None
    (fill,) = state.fills
    return state.status, fill.amount, fill.price, fill.fee


async def test_contracts_marks_and_margin_come_from_ccxts_unified_api(fake: Fake) -> None:
    venue = fake.venue
    assert isinstance(venue, FuturesVenue)
    contracts = await venue.contracts()
    btc = contracts[BTC]
    assert (btc.amount_step, btc.min_amount, btc.min_cost, btc.max_leverage, btc.maintenance_margin_rate) == (
        D("0.001"),
        D("0.001"),
        D(100),
        125,
        D("0.004"),
    )
    assert await venue.mark_prices([BTC]) == {BTC: D(60000)}
    margin = await venue.margin(ACCOUNT)
    assert (margin.asset, margin.wallet_balance, margin.available) == ("USDT", D(10000), D(10000))


async def test_positions_are_opened_reduced_flipped_and_closed(fake: Fake) -> None:
    venue = fake.venue
    await venue.set_leverage(ACCOUNT, BTC, 3)
    await venue.set_margin_mode(ACCOUNT, BTC, "cross")  # already cross: ccxt's MarginModeAlreadySet, no error
    placed = await venue.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.1"), False)
    # Binance answers a futures market order with its ACK (NEW, nothing executed): a look-up shows the fill.
    assert (placed.status, placed.filled) == ("open", D(0))
    assert await filled(fake, "o-1") == ("filled", D("0.1"), D(60000), D(3))
    (position,) = await venue.positions(ACCOUNT)
    assert (
        position.symbol,
        position.amount,
        position.entry_price,
        position.leverage,
        position.margin_mode,
    ) == (
        BTC,
        D("0.1"),
        D(60000),
        3,
        "cross",
    )
    assert fake.futures.requests_of("/fapi/v1/order")[0]["newClientOrderId"] == "o-1"
    await venue.place_position_order(ACCOUNT, "o-2", BTC, "sell", D("0.05"), True)
    (sent,) = [r for r in fake.futures.requests_of("/fapi/v1/order") if r.get("newClientOrderId") == "o-2"]
    assert sent["reduceOnly"] == "true"
    fake.futures.marks["BTCUSDT"] = D(59000)
    await venue.place_position_order(ACCOUNT, "o-3", BTC, "sell", D("0.15"), False)
    (short,) = await venue.positions(ACCOUNT)
    assert (short.amount, short.entry_price, short.mark_price) == (D("-0.1"), D(59000), D(59000))
    await venue.place_position_order(ACCOUNT, "o-4", BTC, "buy", D("0.1"), True)
    assert await venue.positions(ACCOUNT) == []
    # 10000 - the fees (3 + 1.5 + 4.425 + 2.95) - 50 realized closing the long's last 0.05 at 59000.
    assert (await venue.margin(ACCOUNT)).wallet_balance == D("9938.125")


async def test_a_refused_leverage_is_leverage_refused(fake: Fake) -> None:
    with pytest.raises(LeverageRefused, match="leverage 126 refused"):
        await fake.venue.set_leverage(ACCOUNT, BTC, 126)
    fake.futures.faults.refuse_leverage = True
    with pytest.raises(LeverageRefused, match="Leverage 3 is not valid"):
        await fake.venue.set_leverage(ACCOUNT, BTC, 3)


async def test_a_margin_mode_cannot_change_under_a_position(fake: Fake) -> None:
    await fake.venue.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.01"), False)
    with pytest.raises(MarginModeRefused, match="Margin type cannot be changed if there exists position"):
        await fake.venue.set_margin_mode(ACCOUNT, BTC, "isolated")


async def test_reduce_only_rejections_and_margin_are_the_ports(fake: Fake) -> None:
    venue = fake.venue
    with pytest.raises(OrderRejected) as nothing_held:
        await venue.place_position_order(ACCOUNT, "r-1", BTC, "sell", D("0.01"), True)
    assert nothing_held.value.reason == REDUCE_ONLY_REJECTED
    await venue.place_position_order(ACCOUNT, "o-1", BTC, "buy", D("0.01"), False)
    fake.futures.faults.reject_reduce_only = True
    with pytest.raises(OrderRejected) as scripted:
        await venue.place_position_order(ACCOUNT, "r-2", BTC, "sell", D("0.01"), True)
    assert scripted.value.reason == REDUCE_ONLY_REJECTED
    await venue.set_leverage(ACCOUNT, BTC, 1)
    with pytest.raises(InsufficientFunds):  # 12000 of margin at 1x on 10000: -2019
        await venue.place_position_order(ACCOUNT, "o-2", BTC, "buy", D("0.2"), False)


async def test_a_position_is_liquidated_at_the_mark_price(fake: Fake) -> None:
    venue = fake.venue
    await venue.set_leverage(ACCOUNT, BTC, 3)
    await venue.place_position_order(ACCOUNT, "o-1", BTC, "sell", D("0.4"), False)
    (position,) = await venue.positions(ACCOUNT)
    # (9988 + 0.4 x 60000) / (0.4 x 0.004 + 0.4) = 84631.47, as the venue reports it.
    assert (position.amount, position.unrealized_pnl) == (D("-0.4"), D(0))
    assert position.liquidation_price == D("84631.47410359")
    fake.futures.marks["BTCUSDT"] = D(84600)
    assert len(await venue.positions(ACCOUNT)) == 1
    fake.futures.marks["BTCUSDT"] = D(84700)
    assert await venue.positions(ACCOUNT) == []
    liquidations = [o for o in fake.futures.orders.values() if o.client_order_id.startswith("autoclose-")]
    assert [(o.side, o.orig_qty, o.status) for o in liquidations] == [("BUY", D("0.4"), "FILLED")]
    # The loss (0.4 x 24700 = 9880) and the 1.25% clearance fee (423.5) exceed the 9988 left: the insurance
    # fund brings the wallet back to 0.
    assert (await venue.margin(ACCOUNT)).wallet_balance == D(0)


async def test_the_executor_runs_a_plan_on_the_ccxt_futures_account(fake: Fake) -> None:
    def order(side: str, amount: str, reduce_only: bool) -> PlannedPositionOrder:
        return position_order(side, amount, reduce_only, account=ACCOUNT, exchange="binanceusdm")

    setting = PlannedPositionSetting(
        account=ACCOUNT, exchange="binanceusdm", symbol=BTC, leverage=3, margin_mode="cross"
    )
    recorder = RecordingPublisher()
    settings = ExecutorSettings(live=True, execution={"poll_interval_seconds": 0.05})
    run = Executor({"binanceusdm": fake.venue}, recorder, settings, MemoryJournal(), clock=Clock())
    await run.on_plan(plan(order("buy", "0.087", False), settings=(setting,)))
    (done,) = [e for e in recorder.published if isinstance(e, RunFinished)]
    assert (done.status, done.filled) == ("completed", 1), done
    assert [(p.amount, p.leverage) for p in await fake.venue.positions(ACCOUNT)] == [(D("0.087"), 3)]
    # The venue refuses the next reduce-only order: the leg is rejected with the port's reason.
    fake.futures.faults.reject_reduce_only = True
    await run.on_plan(plan(order("sell", "0.087", True), key="run-2"))
    done = [e for e in recorder.published if isinstance(e, RunFinished)][-1]
    assert done.status == "completed_with_adjustments"
    assert done.reasons == (f"leg 1000000 {BTC} sell rejected: {REDUCE_ONLY_REJECTED}",)


FUTURES_LAYOUT = {
    "name": "demo",
    "kind": "user",
    "children": [
        {
            "name": "binance",
            "kind": "exchange",
            "children": [
                {
                    "name": "futures",
                    "kind": "futures",
                    "quote": "USDT",
                    "children": [{"name": "usdt", "asset": "USDT", "amount": "0"}],
                }
            ],
        }
    ],
}


async def test_the_tracker_reads_a_configured_binanceusdm_account() -> None:
    """A venue configured as ccxt ``binanceusdm`` (`open_venues`) is a futures venue: the tracker snapshots
    its account at the margin balance with its positions, and the contracts with their mark prices."""
    futures = fake_futures()
    async with serving(fake_book(), futures) as origin:
        config = VenuesConfig.model_validate(
            {
                "venues": {
                    "binance": {
                        "kind": "ccxt",
                        "exchange_id": "binanceusdm",
                        "sandbox": False,
                        "api_base_url": origin,
                        "account": ACCOUNT,
                        "api_key": KEY,
                        "secret": SECRET,
                    }
                }
            }
        )
        venues = open_venues(["binance"], None, PaperSettings(contracts_file=None), config)
        binance = venues["binance"]
        assert isinstance(binance, CcxtAccounts) and isinstance(binance, FuturesVenue)
        try:
            await binance.set_leverage(ACCOUNT, BTC, 3)
            await binance.place_position_order(ACCOUNT, "o-1", BTC, "sell", D("0.1"), False)
            futures.marks["BTCUSDT"] = D(59000)
            recorder = RecordingPublisher()
            tracker = Tracker("demo", FUTURES_LAYOUT, "USDT", venues, recorder)
            facts = await tracker.read()
        finally:
            await binance.close()
    account = facts["tree"]["children"][0]["children"][0]
    # 10000 - the 3 fee + 100 unrealized on the short: the margin balance.
    assert account["children"] == [{"name": "usdt", "asset": "USDT", "amount": "10097"}]
    (position,) = account["positions"]
    assert (position["symbol"], position["side"], position["amount"], position["leverage"]) == (
        BTC,
        "short",
        "0.1",
        3,
    )
    assert facts["contracts"]["binance"][BTC]["mark_price"] == "59000"


async def test_a_spot_ccxt_venue_has_no_futures_accounts() -> None:
    async with serving(fake_book()) as origin:
        accounts = CcxtAccounts("binance", "USDT", {"demo/binance/spot": open_ccxt_venue(settings(origin))})
        try:
            with pytest.raises(VenueError, match=r"binance \(binance\) has no perpetual futures accounts"):
                await accounts.positions("demo/binance/spot")
        finally:
            await accounts.close()
