"""The venue conformance check, run against the fake Binance through an unmodified ccxt client: every
assumption the executor relies on is reported pass or fail with what was seen."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rebal_venues.ccxt_venue import open_ccxt_venue
from rebal_venues.conformance import check_venue
from tests.fake_exchange import serving
from tests.venues.support import KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


async def test_the_fake_binance_keeps_every_assumption_and_says_how() -> None:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("1000")})
    book.faults.not_found_seconds = 0.3  # it shows new orders late, as Binance may
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        report = await check_venue(venue, "ETH/USDT", allow_live=True, poll_seconds=0.1)
    assert report.passed, report
    seen = {a.name: a.detail for a in report.assumptions}
    assert list(seen) == [
        "precision and minimums",
        "client-id look-up",
        "fee currency",
        "open id refused, cancel by id",
        "reused id of a closed order",
        "sell fills",
        "rate-limit headers",
    ]
    assert seen["precision and minimums"] == (
        "step 0.0001, minimum 0.0001 ETH and 5 USDT, taker fee 0.001; the test orders are 0.0018 ETH"
    )
    assert seen["client-id look-up"].startswith("a market buy found by its client id after 0.")
    assert seen["fee currency"] == "fees in ETH (the asset received)"
    assert seen["open id refused, cancel by id"] == (
        "the id of an open order was refused; cancelled by its client id"
    )
    assert seen["reused id of a closed order"].startswith("accepted as a NEW order")
    assert seen["rate-limit headers"] == "sent x-mbx-used-weight-1m"
    # What it bought it sold back (less the fees); the resting order is gone.
    assert book.open_orders(KEY, None) == []
    assert book.accounts[KEY]["USDT"] > D("999")


async def test_a_live_account_is_refused_unless_allowed() -> None:
    book = fake_book()
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        assert not venue.sandboxed
        report = await check_venue(venue, "ETH/USDT")
    assert not report.passed
    assert [(a.name, a.passed) for a in report.assumptions] == [("testnet", False)]
    assert book.requests_of("create") == []


async def test_a_venue_that_hides_orders_longer_than_the_window_fails_the_look_up() -> None:
    book = fake_book()
    book.accounts[KEY].update({"USDT": D("1000")})
    book.faults.not_found_seconds = 30
    async with serving(book) as origin, open_ccxt_venue(settings(origin)) as venue:
        report = await check_venue(
            venue, "ETH/USDT", allow_live=True, lookup_window_seconds=0.4, poll_seconds=0.2
        )
    failed = {a.name: a.detail for a in report.assumptions if not a.passed}
    assert failed["client-id look-up"] == "a market buy not found by its client id within 0.4 s"
