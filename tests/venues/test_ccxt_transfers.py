"""Transfers through an unmodified ccxt binance client against the fake exchange: networks and fees from
``fetch_currencies``, the pre-check of both ends, withdraw by our transfer id, pending then credited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from rebal.venue import AssetNetwork, Transfer, TransferRefused, TransferVenue, check_transfer
from rebal_venues.ccxt_venue import CcxtVenue, open_ccxt_venue
from tests.fake_exchange import FakeBook, serving
from tests.fake_exchange.state import Rejected
from tests.venues.support import ACCOUNT, KEY, OTHER_ACCOUNT, OTHER_KEY, fake_book, settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
Book = tuple[FakeBook, CcxtVenue, CcxtVenue]


@pytest.fixture
async def book() -> AsyncIterator[Book]:
    fake = fake_book()
    fake.accounts[KEY].update(BTC=D("1"), USDT=D("500"), SOL=D("10"))
    async with (
        serving(fake) as origin,
        open_ccxt_venue(settings(origin)) as source,
        open_ccxt_venue(settings(origin, account=OTHER_ACCOUNT, api_key=SecretStr(OTHER_KEY))) as destination,
    ):
        yield fake, source, destination


async def test_networks_carry_fees_minimums_and_switches(book: Book) -> None:
    _, source, _ = book
    venue: TransferVenue = source
    # Binance's network ids become ccxt's unified codes: TRX is TRC20, ETH is ERC20.
    assert await venue.networks("USDT") == {
        "ERC20": AssetNetwork("USDT", "ERC20", True, True, D("3.5"), D("10")),
        "TRC20": AssetNetwork("USDT", "TRC20", True, True, D("1"), D("10")),
    }
    assert await venue.networks("SOL") == {"SOL": AssetNetwork("SOL", "SOL", True, False, D("0.01"), D("0"))}
    assert await venue.networks("DOGE") == {}


async def test_a_withdrawal_is_pending_then_credited_less_its_fee(
    book: Book,
) -> None:
    fake, source, destination = book
    fake.faults.transfer_delay_seconds = 0.5
    assert await check_transfer(source, destination, "USDT", "TRC20", D("100")) == ""
    address = await destination.deposit_address(OTHER_ACCOUNT, "USDT", "TRC20")
    sent = await source.withdraw(ACCOUNT, "tr-1", "USDT", D("100"), address)
    assert (sent.amount, sent.fee, sent.received, sent.status) == (D("100"), D("1"), D("99"), "pending")
    assert [r["withdrawOrderId"] for r in fake.requests_of("withdraw")] == ["tr-1"]
    assert (await source.balances(ACCOUNT)).free["USDT"] == D("400")
    pending = await destination.deposit(OTHER_ACCOUNT, "USDT", sent.txid)
    assert pending is not None and pending.status == "pending"
    assert "USDT" not in (await destination.balances(OTHER_ACCOUNT)).free
    await asyncio.sleep(0.55)
    credited = await destination.deposit(OTHER_ACCOUNT, "USDT", sent.txid)
    assert credited is not None and (credited.status, credited.amount) == ("credited", D("99"))
    assert (await destination.balances(OTHER_ACCOUNT)).free == {"USDT": D("99")}
    done = await source.withdrawal(ACCOUNT, "tr-1", "USDT")
    assert done is not None and done.requested_at is not None
    assert replace(done, requested_at=None) == Transfer(
        "tr-1", "USDT", "TRC20", D("100"), D("1"), "sent", sent.txid
    )


async def test_withdrawing_again_under_the_same_id_sends_nothing(
    book: Book,
) -> None:
    fake, source, destination = book
    address = await destination.deposit_address(OTHER_ACCOUNT, "BTC", "BTC")
    first = await source.withdraw(ACCOUNT, "tr-2", "BTC", D("0.01"), address)
    again = await source.withdraw(ACCOUNT, "tr-2", "BTC", D("0.01"), address)
    assert again == first
    assert len(fake.requests_of("withdraw")) == 1
    # 0.01 debited once; 0.01 - 0.0002 credited once.
    assert (fake.accounts[KEY]["BTC"], fake.accounts[OTHER_KEY]["BTC"]) == (D("0.99"), D("0.0098"))


@pytest.mark.parametrize(
    ("asset", "network", "amount", "reason"),
    [
        ("BTC", "BTC", "2", "insufficient_funds"),
        ("SOL", "SOL", "1", "refused: binance"),  # withdrawals of SOL are switched off
        ("USDT", "TRC20", "5", "refused: binance"),  # below the minimum of 10
    ],
)
async def test_a_refused_withdrawal_names_its_reason_and_moves_nothing(
    book: Book, asset: str, network: str, amount: str, reason: str
) -> None:
    fake, source, destination = book
    address = await destination.deposit_address(OTHER_ACCOUNT, asset, network)
    with pytest.raises(TransferRefused) as refused:
        await source.withdraw(ACCOUNT, "tr-no", asset, D(amount), address)
    assert refused.value.reason.startswith(reason)
    assert not refused.value.retryable
    assert fake.accounts[KEY] == {"BTC": D("1"), "USDT": D("500"), "SOL": D("10")}
    assert fake.withdrawals == []


@pytest.mark.parametrize(
    ("asset", "network", "amount", "problem"),
    [
        ("USDT", "TRC20", "10", ""),
        ("USDT", "TRC20", "9.99", "below_withdraw_min"),
        ("USDT", "BEP20", "100", "withdraw_network_unknown"),
        ("SOL", "SOL", "1", "withdrawals_disabled"),
        ("BTC", "BTC", "0.0002", "below_withdraw_min"),
    ],
)
async def test_the_pre_check_asks_both_venues(
    book: Book, asset: str, network: str, amount: str, problem: str
) -> None:
    fake, source, destination = book
    assert await check_transfer(source, destination, asset, network, D(amount)) == problem
    assert fake.withdrawals == []


async def test_the_pre_check_sees_deposits_switched_off_at_the_destination(book: Book) -> None:
    fake, source, destination = book
    usdt = fake.networks["USDT"]
    fake.networks["USDT"] = [replace(usdt[0], deposit_enabled=False), usdt[1]]
    assert await check_transfer(source, destination, "USDT", "TRC20", D("100")) == "deposits_disabled"


async def test_withdrawals_are_listed_from_binance_s_history_since_a_moment(book: Book) -> None:
    """``fetch_withdrawals(asset, since)`` on ``GET /sapi/v1/capital/withdraw/history``: ours by our
    ``withdrawOrderId``, one made by hand (no ``withdrawOrderId`` in the record) by ``venue:<Binance's
    id>``, oldest first whatever order Binance answers in, each dated (``applyTime``, to the second);
    what was asked before the moment is left out, and the window ccxt asks is within Binance's 90 days."""
    fake, source, destination = book
    fake.faults.transfer_delay_seconds = 0.5
    fake.outside.add("bank-wire-DE89")
    address = await destination.deposit_address(OTHER_ACCOUNT, "USDT", "TRC20")
    old = await source.withdraw(ACCOUNT, "rt-000000000000-0", "USDT", D("50"), address)
    fake.withdrawals[-1].time_ms -= 3_600_000  # an hour ago
    since = datetime.now(UTC)
    ours = await source.withdraw(ACCOUNT, "rt-000000000001-1", "USDT", D("100"), address)
    # The operator's wire to a bank, asked at Binance by hand: no withdrawOrderId.
    by_hand = fake.withdraw(KEY, "USDT", "TRX", "bank-wire-DE89", D("200"), "")
    assert fake.accounts[KEY]["USDT"] == D("150")  # debited when asked

    listed = await source.withdrawals(ACCOUNT, "USDT", since)
    assert [(t.transfer_id, t.amount, t.fee, t.status) for t in listed] == [
        (ours.transfer_id, D("100"), D("1"), "pending"),
        (f"venue:{by_hand.withdrawal_id}", D("200"), D("1"), "pending"),
    ]
    assert all(t.requested_at is not None and t.requested_at >= since.replace(microsecond=0) for t in listed)
    [request] = fake.requests_of("withdrawals")[-1:]
    assert (request["coin"], int(request["endTime"]) - int(request["startTime"])) == ("USDT", 90 * 86_400_000)
    assert int(request["startTime"]) == int(since.timestamp()) * 1000
    everything = await source.withdrawals(ACCOUNT, "USDT", since - timedelta(hours=2))
    assert everything[0].transfer_id == old.transfer_id

    await asyncio.sleep(0.55)
    sent = await source.withdrawals(ACCOUNT, "USDT", since)
    assert [(t.status, t.received) for t in sent] == [("sent", D("99")), ("sent", D("199"))]
    assert fake.accounts[OTHER_KEY]["USDT"] == D("49") + D("99")  # the wire is credited nowhere here


async def test_binance_s_withdrawal_history_keeps_to_its_documented_window(book: Book) -> None:
    """More than 90 days between startTime and endTime is refused (7 with a withdrawOrderId)."""
    fake, _, _ = book
    day = 86_400_000
    with pytest.raises(Rejected) as refused:
        fake.withdrawal_history(KEY, "USDT", None, {"startTime": "0", "endTime": str(91 * day)})
    assert refused.value.code == -1127
    with pytest.raises(Rejected):
        fake.withdrawal_history(KEY, "USDT", "rt-1", {"startTime": "0", "endTime": str(8 * day)})
    assert fake.withdrawal_history(KEY, "USDT", None, {"startTime": "0", "endTime": str(90 * day)}) == []
