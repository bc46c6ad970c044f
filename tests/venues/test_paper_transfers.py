"""Transfers on the paper exchange: debited at once, credited (less the fee) after the delay, once; refused
with a reason before anything moves."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from rebal.venue import AssetNetwork, DepositAddress, TransferRefused, TransferVenue, transfer_problem
from rebal_venues.paper import PAPER_NETWORK, PaperVenue
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, Clock

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal
FROM, TO = "demo/paper/spot", "demo/paper/savings"
FEES = {"BTC": D("0.0005"), "USDT": D("1")}


def venue(pool: asyncpg.Pool, clock: Clock, exchange: str = EXCHANGE) -> PaperVenue:
    markets = {exchange: MARKETS[EXCHANGE]}
    return PaperVenue.from_documents(
        exchange, pool, markets, PRICES, clock, timedelta(seconds=30), FEES, **STILL
    )


async def test_a_transfer_is_debited_at_once_and_credited_less_the_fee_after_the_delay(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    paper: TransferVenue = venue(pool, clock)
    assert isinstance(paper, PaperVenue)
    await paper.seed(FROM, {"BTC": D("1"), "USDT": D("100")})
    btc = (await paper.networks("BTC"))[PAPER_NETWORK]
    assert (btc.withdraw_fee, btc.withdraw_enabled, btc.deposit_enabled) == (D("0.0005"), True, True)
    address = await paper.deposit_address(TO, "BTC", PAPER_NETWORK)
    assert address == DepositAddress("BTC", PAPER_NETWORK, f"paper:{EXCHANGE}:{TO}")

    sent = await paper.withdraw(FROM, "t-1", "BTC", D("0.5"), address)
    assert (sent.amount, sent.fee, sent.received, sent.status) == (
        D("0.5"),
        D("0.0005"),
        D("0.4995"),
        "pending",
    )
    assert (await paper.balances(FROM)).free == {"BTC": D("0.5"), "USDT": D("100")}
    assert (await paper.balances(TO)).free == {}
    deposit = await paper.deposit(TO, "BTC", sent.txid)
    assert deposit is not None and deposit.status == "pending"

    clock.now += timedelta(seconds=29)
    assert (await paper.balances(TO)).free == {}
    clock.now += timedelta(seconds=1)
    assert (await paper.balances(TO)).free == {"BTC": D("0.4995")}
    assert (await paper.balances(TO)).free == {"BTC": D("0.4995")}  # credited once
    done = await paper.withdrawal(FROM, "t-1", "BTC")
    assert done is not None and (done.status, done.txid) == ("sent", sent.txid)
    credited = await paper.deposit(TO, "BTC", sent.txid)
    assert credited is not None and (credited.status, credited.received) == ("credited", D("0.4995"))


async def test_the_same_transfer_id_moves_nothing_twice(pool: asyncpg.Pool) -> None:
    clock = Clock()
    paper = venue(pool, clock)
    await paper.seed(FROM, {"USDT": D("100")})
    address = await paper.deposit_address(TO, "USDT", PAPER_NETWORK)
    first = await paper.withdraw(FROM, "t-2", "USDT", D("40"), address)
    again = await paper.withdraw(FROM, "t-2", "USDT", D("40"), address)
    assert again == first
    clock.now += timedelta(seconds=30)
    assert (await paper.balances(FROM)).free == {"USDT": D("60")}
    assert (await paper.balances(TO)).free == {"USDT": D("39")}


async def test_a_transfer_to_another_paper_exchange_is_credited_there(pool: asyncpg.Pool) -> None:
    clock = Clock()
    here, there = venue(pool, clock), venue(pool, clock, "paper-b")
    await here.seed(FROM, {"USDT": D("10")})
    address = await there.deposit_address(FROM, "USDT", PAPER_NETWORK)
    sent = await here.withdraw(FROM, "t-3", "USDT", D("10"), address)
    clock.now += timedelta(seconds=30)
    assert (await there.balances(FROM)).free == {"USDT": D("9")}
    assert (await here.balances(FROM)).free == {}
    assert await here.deposit(FROM, "USDT", sent.txid) is None  # not a deposit into this exchange


@pytest.mark.parametrize(
    ("asset", "amount", "address", "reason"),
    [
        ("BTC", "2", f"paper:{EXCHANGE}:{TO}", "insufficient_funds"),
        ("DOGE", "1", f"paper:{EXCHANGE}:{TO}", "withdraw_network_unknown"),
        ("USDT", "1", f"paper:{EXCHANGE}:{TO}", "amount_not_above_fee"),  # the fee is 1 USDT
        ("BTC", "0.1", "bc1qsomewhereelse", "invalid_address"),
    ],
)
async def test_a_refused_transfer_names_the_reason_and_moves_nothing(
    pool: asyncpg.Pool, asset: str, amount: str, address: str, reason: str
) -> None:
    paper = venue(pool, Clock())
    await paper.seed(FROM, {"BTC": D("1"), "USDT": D("100")})
    with pytest.raises(TransferRefused) as refused:
        await paper.withdraw(FROM, "t-no", asset, D(amount), DepositAddress(asset, PAPER_NETWORK, address))
    assert (refused.value.transfer_id, refused.value.reason, refused.value.retryable) == (
        "t-no",
        reason,
        False,
    )
    assert (await paper.balances(FROM)).free == {"BTC": D("1"), "USDT": D("100")}
    assert await paper.withdrawal(FROM, "t-no", asset) is None


async def test_the_pre_check_of_both_ends() -> None:
    out = AssetNetwork("USDT", "TRC20", True, True, D("1"), D("10"))
    into = AssetNetwork("USDT", "TRC20", True, True, D("0"))
    assert transfer_problem(out, into, D("10")) == ""
    assert transfer_problem(None, into, D("10")) == "withdraw_network_unknown"
    assert transfer_problem(out, None, D("10")) == "deposit_network_unknown"
    assert transfer_problem(out, AssetNetwork("USDT", "ERC20", True, True, D("0")), D("10")) == (
        "deposit_network_unknown"
    )
    assert transfer_problem(AssetNetwork("USDT", "TRC20", True, False, D("1")), into, D("10")) == (
        "withdrawals_disabled"
    )
    assert transfer_problem(out, AssetNetwork("USDT", "TRC20", False, True, D("0")), D("10")) == (
        "deposits_disabled"
    )
    assert transfer_problem(out, into, D("9.99")) == "below_withdraw_min"
    assert transfer_problem(AssetNetwork("USDT", "TRC20", True, True, D("10")), into, D("10")) == (
        "amount_not_above_fee"
    )


async def test_withdrawals_are_listed_since_a_moment_and_one_to_outside_is_sent_and_credited_nowhere(
    pool: asyncpg.Pool,
) -> None:
    """`TransferVenue.withdrawals` (ccxt's fetchWithdrawals): the account's withdrawals of an asset asked at
    or after a moment, oldest first, named by their ids, pending until sent. An `outside:` address (an
    operator's wire to a bank) is debited at once, "sent" after the delay, and credited on no exchange."""
    clock = Clock()
    paper = venue(pool, clock)
    await paper.seed(FROM, {"USDT": D("1000")})
    inside = await paper.deposit_address(TO, "USDT", PAPER_NETWORK)
    early = await paper.withdraw(FROM, "rt-000000000000-0", "USDT", D("100"), inside)
    clock.now += timedelta(seconds=10)
    since = clock.now
    bank = DepositAddress("USDT", PAPER_NETWORK, "outside:bank-account-DE89")
    wire = await paper.withdraw(FROM, "venue:w-1", "USDT", D("300"), bank)
    assert (wire.amount, wire.fee, wire.received, wire.status) == (D("300"), D("1"), D("299"), "pending")
    assert (await paper.balances(FROM)).free == {"USDT": D("600")}

    listed = await paper.withdrawals(FROM, "USDT", since)
    assert [(t.transfer_id, t.amount, t.status, t.requested_at) for t in listed] == [
        ("venue:w-1", D("300"), "pending", since)
    ]
    everything = await paper.withdrawals(FROM, "USDT", since - timedelta(seconds=10))
    assert [t.transfer_id for t in everything] == [early.transfer_id, "venue:w-1"]
    assert await paper.withdrawals(FROM, "BTC", since) == []
    assert await paper.withdrawals(TO, "USDT", since) == []

    clock.now += timedelta(seconds=30)
    [sent] = await paper.withdrawals(FROM, "USDT", since)
    assert (sent.status, sent.received) == ("sent", D("299"))
    assert (await paper.balances(FROM)).free == {"USDT": D("600")}
    assert (await paper.balances(TO)).free == {"USDT": D("99")}  # the early one; the wire nowhere
    assert await paper.withdrawal(FROM, "venue:w-1", "USDT") == sent
