"""The fund core with worked numbers: netting, pro-rata fees, steps, minimums, withdrawals, splits, dust."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import pytest

from rebal.core.errors import InputError
from rebal.core.fund_checks import apply_split, check_split, drift, dust, reconcile
from rebal.core.funds import (
    BELOW_MIN_COST,
    NOT_FREE,
    Due,
    NeedsAdjustment,
    Quote,
    Rejected,
    plan_cycle,
    settle,
    split_deposit,
)
from rebal.core.ledger import Fund, Ledger, apportion, give
from rebal.core.market import Market
from tests.funds.sim import Account, Cycle, run_cycle

FEE = D("0.001")
FUND = Fund("f1", "paper", "main", "USDT", {"BTC": D("0.6"), "ETH": D("0.4")})
QUOTES = {
    "BTC": Quote(Market("BTC", "USDT", D("0.0001"), D(0), D(5), FEE), D(50000)),
    "ETH": Quote(Market("ETH", "USDT", D("0.001"), D(0), D(5), FEE), D(2500)),
}


def ledger(**users: dict[str, str]) -> Ledger:
    return Ledger.from_amounts(FUND.assets(), {u: {a: D(v) for a, v in h.items()} for u, h in users.items()})


def account_of(book: Ledger, quotes: dict[str, Quote] = QUOTES) -> Account:
    return Account(dict(book.totals()), quotes)


def cycle(book: Ledger, due: Due, account: Account | None = None) -> tuple[Cycle, Account]:
    account = account or account_of(book)
    result = run_cycle(FUND, book, due, account)
    assert isinstance(result, Cycle)
    return result, account


def test_apportion_is_exact_and_never_exceeds_a_weight() -> None:
    assert apportion(10, np.array([1, 1, 1], dtype=np.int64)).tolist() == [4, 3, 3]
    assert apportion(7, np.array([3, 0, 1], dtype=np.int64)).tolist() == [5, 0, 2]
    # 499.5, 299.7, 199.8: floors 997, the two largest remainders get the last two units.
    assert apportion(999, np.array([500, 300, 200], dtype=np.int64)).tolist() == [499, 300, 200]
    assert apportion(0, np.zeros(3, dtype=np.int64)).tolist() == [0, 0, 0]


def test_unsold_units_fall_on_the_other_sellers_before_a_partial_withdrawal() -> None:
    sells = np.array([16994, 17, 500], dtype=np.int64)
    partial = np.array([False, True, False])
    # 17,000 of 17,511 sold: the partial withdrawal's 17 in full, the rest shared by the others.
    assert give(17000, sells, partial).tolist() == [16498, 17, 485]
    assert give(10, sells, partial).tolist() == [0, 10, 0]
    assert give(17511, sells, partial).tolist() == sells.tolist()


def test_a_deposit_and_a_withdrawal_cross_internally() -> None:
    book = ledger(alice={"USDT": "1000"}, bob={"BTC": "0.02", "ETH": "0.4"})
    result, account = cycle(book, Due(deposits={"alice": D(1000)}, withdrawals={"bob": D(500)}))
    plan = result.plan
    # Bob sells 0.25075 of each holding (500 / 1998 grossed up by the 0.2% margin, rounded up to whole
    # units); Alice buys 600/400.
    assert plan.sells[1].tolist() == [0, 501502, 10030031]
    # Only the net goes out: one buy per asset, the crossed part at 50000 / 2500 with no fee.
    assert [(o.asset, o.side, o.amount) for o in account.sent] == [
        ("BTC", "buy", D("0.0069")),
        ("ETH", "buy", D("0.059")),
    ]
    assert plan.netting.user_orders == 4 and plan.netting.net_orders == 2
    assert plan.netting.fees_saved == D("1.0")  # 1.4925 one at a time, 0.4925 netted
    assert result.payout.paid == {"bob": D(500)}
    final = result.payout.ledger
    assert final.amounts("alice") == {"USDT": D("5.505725"), "BTC": D("0.01191502"), "ETH": D("0.15930031")}
    assert final.amounts("bob") == {"USDT": D("1.501775"), "BTC": D("0.01498498"), "ETH": D("0.29969969")}
    # Bob was crossed whole: Alice alone pays the venue's fees.
    assert result.fees == {"alice": D("0.4925")}
    assert final.totals() == dict(account.balances.items())


def test_fees_are_shared_pro_rata_and_amounts_are_whole_steps() -> None:
    fund = Fund("f1", "paper", "main", "USDT", {"BTC": D(1)})
    book = Ledger.from_amounts(fund.assets(), {"a": {"USDT": D(300)}, "b": {"USDT": D(100)}})
    account = account_of(book)
    result = run_cycle(fund, book, Due(deposits={"a": D(300), "b": D(100)}), account)
    assert isinstance(result, Cycle)
    # 400 less 2 slack units at 50000 x 1.001 x 1.005: 0.00795... truncated to the 0.0001 step.
    assert [(o.side, o.amount) for o in account.sent] == [("buy", D("0.0079"))]
    # Cost 395, fee 0.395: split 3:1 like the budgets, and the BTC too.
    assert result.fees == {"a": D("0.29625"), "b": D("0.09875")}
    final = result.payout.ledger
    assert final.amounts("a") == {"USDT": D("3.45375"), "BTC": D("0.005925")}
    assert final.amounts("b") == {"USDT": D("1.15125"), "BTC": D("0.001975")}
    assert final.totals() == account.balances


def test_a_fee_taken_in_the_asset_bought_is_shared_by_the_buyers_units() -> None:
    fund = Fund("f1", "paper", "main", "USDT", {"BTC": D(1)})
    book = Ledger.from_amounts(fund.assets(), {"a": {"USDT": D(300)}, "b": {"USDT": D(100)}})
    account = account_of(book)
    account.fee_in_base = True
    result = run_cycle(fund, book, Due(deposits={"a": D(300), "b": D(100)}), account)
    assert isinstance(result, Cycle)
    assert [(o.side, o.amount) for o in account.sent] == [("buy", D("0.0079"))]
    # The venue keeps 0.0000079 BTC of the 0.0079 bought: 0.0078921 split 3:1; 395 USDT paid, no USDT fee.
    assert account.balances == {"USDT": D(5), "BTC": D("0.0078921")}
    final = result.payout.ledger
    assert final.amounts("a") == {"USDT": D("3.75"), "BTC": D("0.00591908")}
    assert final.amounts("b") == {"USDT": D("1.25"), "BTC": D("0.00197302")}
    assert final.totals() == account.balances
    # The fee reported per user is the BTC's value at the reference price, split like the budgets.
    assert result.fees == {"a": D("0.29625"), "b": D("0.09875")}


def test_a_net_order_below_the_minimum_waits_as_cash_for_a_later_cycle() -> None:
    fund = Fund("f1", "paper", "main", "USDT", {"BTC": D(1)})
    quotes = {"BTC": Quote(Market("BTC", "USDT", D("0.0001"), D(0), D(10), FEE), D(50000))}
    book = Ledger.from_amounts(fund.assets(), {"a": {"USDT": D(6)}})
    plan = plan_cycle(fund, book, Due(deposits={"a": D(6)}), quotes)
    assert not isinstance(plan, NeedsAdjustment)
    assert plan.orders == ()
    assert [(s.asset, s.side, s.reason) for s in plan.skipped] == [("BTC", "buy", BELOW_MIN_COST)]
    # Another user's deposit in the same cycle lifts the net order above the minimum.
    book = book.credit("b", "USDT", D(20))
    plan = plan_cycle(fund, book, Due(deposits={"a": D(6), "b": D(20)}), quotes)
    assert not isinstance(plan, NeedsAdjustment)
    assert [(o.side, o.amount) for o in plan.orders] == [("buy", D("0.0005"))]


FIVE = ("AAA", "BBB", "CCC", "DDD", "EEE")


def test_a_deposit_under_every_minimum_buys_by_descending_weight_while_it_lasts() -> None:
    # Five assets at 20%, a 45 USDT deposit, a minimum cost of 10 (no fee): each 9 alone buys nothing.
    # By weight (then name) each gets the minimum while the 45 lasts: four buys of 10; 5 stays cash.
    fund = Fund("f5", "paper", "main", "USDT", dict.fromkeys(FIVE, D("0.2")))
    quotes = {a: Quote(Market(a, "USDT", D("0.01"), D(0), D(10), D(0)), D(1)) for a in FIVE}
    book = Ledger.from_amounts(fund.assets(), {"a": {"USDT": D(45)}, "b": {}})
    result = run_cycle(fund, book, Due(deposits={"a": D(45)}), Account(dict(book.totals()), quotes))
    assert isinstance(result, Cycle)
    assert [(o.asset, o.side, o.amount) for o in result.phase2.orders] == [
        (asset, "buy", D(10)) for asset in FIVE[:4]
    ]
    final = result.payout.ledger
    assert final.amounts("a") == {"USDT": D(5), **{asset: D(10) for asset in FIVE[:4]}, "EEE": D(0)}
    assert final.totals() == {"USDT": D(5), **{asset: D(10) for asset in FIVE[:4]}, "EEE": D(0)}


def test_one_deposit_alone_buys_by_descending_weight_while_it_lasts() -> None:
    fund_weights = dict.fromkeys(FIVE, D("0.2"))
    quotes = {a: Quote(Market(a, "USDT", D("0.01"), D(0), D(10), D(0)), D(1)) for a in FIVE}
    spend, cash = split_deposit(D(45), fund_weights, quotes, "USDT")
    assert spend == {asset: D(10) for asset in FIVE[:4]} and cash == D(5)


def test_one_deposit_alone_drops_the_assets_under_the_minimum() -> None:
    spend, cash = split_deposit(D(12), FUND.weights, QUOTES, "USDT")
    # 7.2 buys 0.0001 BTC (5 USDT) and 4.8 is below ETH's 5 USDT minimum: it stays cash.
    assert spend == {"BTC": D("7.2")} and cash == D("4.8")


def test_a_full_withdrawal_pays_exactly_what_the_holdings_fetched() -> None:
    book = ledger(alice={"USDT": "10", "BTC": "0.01", "ETH": "0.2"}, bob={"BTC": "0.01"})
    result, account = cycle(book, Due(withdrawals={"alice": None}))
    # 10 + 500 x 0.999 + 500 x 0.999: the fees are the venue's, each rounded up to 1e-8.
    assert result.payout.paid == {"alice": D("1009.0")}
    assert result.payout.ledger.amounts("alice") == {"USDT": D(0), "BTC": D(0), "ETH": D(0)}
    assert result.payout.ledger.amounts("bob") == {"USDT": D(0), "BTC": D("0.01"), "ETH": D(0)}
    assert result.payout.ledger.totals() == account.balances


def test_a_partial_withdrawal_receives_what_was_asked_after_fees() -> None:
    book = ledger(alice={"BTC": "0.02"})
    result, account = cycle(book, Due(withdrawals={"alice": D(400)}))
    # 400 / 999 of 0.02 BTC grossed up by the margin is 0.00802404 BTC: truncated to the 0.0001 step it
    # would fetch 399.6, so the sell goes up to the next step (0.0081 BTC, 404.595 after the fee).
    assert [(o.side, o.amount) for o in account.sent] == [("sell", D("0.0081"))]
    assert result.payout.paid == {"alice": D(400)} and result.payout.short == {}
    assert result.payout.ledger.amounts("alice") == {"USDT": D("4.595"), "BTC": D("0.0119"), "ETH": D(0)}
    assert result.payout.ledger.totals() == account.balances


def test_a_withdrawal_above_the_holdings_worth_is_rejected() -> None:
    book = ledger(alice={"BTC": "0.001"})
    plan = plan_cycle(FUND, book, Due(withdrawals={"alice": D(60)}), QUOTES)
    assert not isinstance(plan, NeedsAdjustment)
    assert plan.rejected == (Rejected("alice", D(60), D("49.95")),) and plan.orders == ()


def test_a_rebalance_sells_what_decreases_and_buys_with_the_proceeds() -> None:
    book = ledger(alice={"BTC": "0.02"}, bob={"ETH": "0.8"})
    result, account = cycle(book, Due(rebalance=True))
    plan = result.plan
    # Alice holds 1000 in BTC (wants 600/400), Bob 2000 in ETH (wants 1200/800). Each one's buys are
    # capped by the sell proceeds after fees (399.6 and 1198.8): Alice's 0.15984 ETH cross with Bob's
    # sell, 0.321 ETH go to the venue (up to the step); Alice's 0.008 BTC cross with Bob's buy, the
    # venue buys 0.0158 BTC with the rest (phase 2, after the ETH proceeds are in).
    assert plan.phase_of == (0, 2, 1)
    assert [(o.asset, o.side, o.amount, o.phase) for o in account.sent] == [
        ("ETH", "sell", D("0.321"), 1),
        ("BTC", "buy", D("0.0158"), 2),
    ]
    final = result.payout.ledger
    assert final.amounts("alice") == {"USDT": D("0.400025"), "BTC": D("0.012"), "ETH": D("0.15983999")}
    assert final.amounts("bob") == {"USDT": D("10.507475"), "BTC": D("0.0238"), "ETH": D("0.31916001")}
    # Bob's flows alone reached the venue: he pays both fees (0.8025 + 0.79).
    assert result.fees == {"bob": D("1.5925")}
    assert final.totals() == account.balances
    assert all(v >= 0 for v in final.units.ravel())


@pytest.mark.parametrize("fill", ["0.999", "0.981"])
def test_a_buy_crossed_in_phase_1_stays_paid_when_the_sell_paying_for_it_fills_low(fill: str) -> None:
    # Alice rebalances 0.2 BTC into BTC/ETH; Bob leaves with 4 ETH. Alice's ETH buy crosses Bob's ETH in
    # phase 1 (final, at the reference price), paid by her BTC sold on the venue in the same phase, which
    # fills below the reference. Counting that sell 2% low (SELL_PRICE_MARGIN) keeps her cash >= 0.
    book = ledger(alice={"BTC": "0.2"}, bob={"ETH": "4"})
    account = account_of(book)
    account.fill_price = lambda order: (order.est_price * D(fill)).quantize(D("0.01"))
    result, account = cycle(book, Due(withdrawals={"bob": None}, rebalance=True), account)
    assert [(o.asset, o.side, o.phase) for o in account.sent] == [("BTC", "sell", 1), ("ETH", "sell", 1)]
    final = result.payout.ledger
    assert final.totals() == account.balances and (final.units >= 0).all()
    alice = final.amounts("alice")
    assert alice["ETH"] > 0 and alice["USDT"] >= 0
    # Bob is paid all his cash; what is under ETH's step could not be sold and stays his, reported.
    bob = final.amounts("bob")
    assert bob["USDT"] == 0 and bob["BTC"] == 0 and bob["ETH"] < QUOTES["ETH"].market.amount_step
    assert ("ETH", "sell", "below_step") in {(s.asset, s.side, s.reason) for s in result.plan.skipped}


def test_a_sell_left_under_a_step_is_reported_with_the_withdrawal_it_shorts() -> None:
    quotes = {
        "BTC": Quote(Market("BTC", "USDT", D("0.00001"), D(0), D(0), D(0)), D(50000)),
        "ETH": Quote(Market("ETH", "USDT", D("0.0001"), D(0), D(0), D(0)), D(2500)),
    }
    # Alice holds 1.17 steps of each and needs 1.04 of them sold: 0.04 cannot go out (and she has too
    # little left to round the sell up to 2 steps); it stays hers, the skip says why, the payout is short.
    book = ledger(alice={"BTC": "0.0000117", "ETH": "0.000117"}, bob={"USDT": "1"})
    account = account_of(book, quotes)
    result = run_cycle(FUND, book, Due(withdrawals={"alice": D("0.78")}), account)
    assert isinstance(result, Cycle)
    assert [(o.asset, o.amount) for o in account.sent] == [("BTC", D("0.00001")), ("ETH", D("0.0001"))]
    assert {(s.asset, s.side, s.reason) for s in result.plan.skipped} == {
        ("BTC", "sell", "below_step"),
        ("ETH", "sell", "below_step"),
    }
    assert result.payout.paid == {"alice": D("0.75")} and result.payout.short == {"alice": D("0.03")}
    assert result.payout.ledger.totals() == account.balances


def test_net_sells_never_exceed_the_free_balance() -> None:
    book = ledger(alice={"BTC": "0.02"})
    plan = plan_cycle(FUND, book, Due(withdrawals={"alice": None}), QUOTES, free={"BTC": D("0.015")})
    assert not isinstance(plan, NeedsAdjustment)
    assert [(o.side, o.amount) for o in plan.orders] == [("sell", D("0.015"))]
    assert [(s.asset, s.amount, s.reason) for s in plan.skipped] == [("BTC", D("0.005"), NOT_FREE)]


def test_an_inactive_or_unpriced_market_needs_adjustment_and_sends_nothing() -> None:
    book = ledger(alice={"USDT": "100"})
    inactive = {**QUOTES, "ETH": Quote(QUOTES["ETH"].market, D(2500), active=False)}
    assert plan_cycle(FUND, book, Due(deposits={"alice": D(100)}), inactive) == NeedsAdjustment(
        "f1", ("ETH: market ETH/USDT is inactive",)
    )
    unpriced = {**QUOTES, "BTC": Quote(QUOTES["BTC"].market, D(0))}
    result = plan_cycle(FUND, book, Due(deposits={"alice": D(100)}), unpriced)
    assert result == NeedsAdjustment("f1", ("BTC: no positive price",))


def test_a_split_freezes_the_asset_until_positions_reflect_it() -> None:
    # The price halves with no fills: value jumped by half, the asset is frozen.
    frozen = check_split(D(10), D(10), D(100), D(50), filled_since=False)
    assert frozen.status == "frozen"
    # Once the venue shows twice the quantity, the split is confirmed and applied exactly.
    confirmed = check_split(D(10), D(20), D(100), D(50), filled_since=False)
    assert (confirmed.status, confirmed.ratio) == ("split", D(2))
    assert check_split(D(10), D(10), D(100), D(50), filled_since=True).status == "ok"
    book = ledger(alice={"ETH": "0.3"}, bob={"ETH": "0.00000001"})
    split = apply_split(book, "ETH", D("0.60000002"))
    assert split.amounts("alice")["ETH"] == D("0.6") and split.amounts("bob")["ETH"] == D("0.00000002")
    # A frozen asset is left out of a cycle; the rest trades.
    plan = plan_cycle(
        FUND,
        ledger(alice={"USDT": "1000"}),
        Due(deposits={"alice": D(1000)}),
        QUOTES,
        frozen=frozenset({"ETH"}),
    )
    assert not isinstance(plan, NeedsAdjustment)
    assert [o.asset for o in plan.orders] == ["BTC"] and plan.budgets[0, 2] == 0


def test_dust_is_tracked_and_left_out_of_drift() -> None:
    book = ledger(alice={"BTC": "0.006", "ETH": "0.0015"}, bob={"ETH": "0.16", "USDT": "0"})
    assert dust(book, QUOTES).tolist() == [[False, False, True], [False, False, False]]
    # 300 BTC and 400 ETH of Bob (Alice's 3.75 ETH is dust): 300/700 vs 0.6.
    assert drift(book, FUND, QUOTES) == {
        "USDT": D(0),
        "BTC": D("0.428571428571") - D("0.6"),
        "ETH": D("0.571428571429") - D("0.4"),
    }


def test_reconcile_reports_unattributed_holdings_and_never_assigns_them() -> None:
    book = ledger(alice={"BTC": "0.01"})
    report = reconcile(book, {"BTC": D("0.0100001"), "ETH": D("1.5"), "USDT": D(0)}, {"BTC": D("0.0001")})
    assert report.unattributed == {"ETH": D("1.5")} and report.missing == {}
    assert reconcile(book, {"BTC": D("0.009")}, {"BTC": D("0.0001")}).missing == {"BTC": D("0.001")}


def test_a_deposit_during_a_run_is_credited_but_not_spent() -> None:
    book = ledger(alice={"USDT": "1000"})
    plan = plan_cycle(FUND, book, Due(deposits={"alice": D(1000)}), QUOTES)
    assert not isinstance(plan, NeedsAdjustment)
    # Carol deposits while the run is under way: her cash is on the ledger at once...
    during = book.credit("carol", "USDT", D(250))
    account = account_of(book)
    account.balances["USDT"] += D(250)
    settled = settle(plan, during, 2, account.execute(plan.phase_orders(2), "USDT"))
    # ...and untouched by the run, which spent only Alice's budget.
    assert settled.ledger.amounts("carol") == {"USDT": D(250), "BTC": D(0), "ETH": D(0)}
    assert settled.ledger.totals() == account.balances


def test_bad_amounts_are_named() -> None:
    with pytest.raises(InputError, match=r"alice.USDT: 0.000000001 is not a whole multiple of 0.00000001"):
        ledger(alice={"USDT": "0.000000001"})
    with pytest.raises(InputError, match=r"weights sum to 0\.9"):
        Fund("f", "paper", "main", "USDT", {"BTC": D("0.9")})


def test_a_withdrawal_releases_funds_locked_in_our_open_orders_first() -> None:
    book = ledger(alice={"BTC": "0.02"})
    due = Due(withdrawals={"alice": None})
    # 0.012 BTC free, 0.006 in an open order of ours: release 0.006, then sell 0.018; 0.002 is not there.
    plan = plan_cycle(FUND, book, due, QUOTES, free={"BTC": D("0.012")}, locked={"BTC": D("0.006")})
    assert not isinstance(plan, NeedsAdjustment)
    assert [(r.asset, r.amount) for r in plan.releases] == [("BTC", D("0.006"))]
    assert [(o.side, o.amount) for o in plan.orders] == [("sell", D("0.018"))]
    assert [(s.amount, s.reason) for s in plan.skipped] == [(D("0.002"), NOT_FREE)]
    # Free enough: nothing is released.
    plan = plan_cycle(FUND, book, due, QUOTES, free={"BTC": D("0.02")}, locked={"BTC": D("0.006")})
    assert not isinstance(plan, NeedsAdjustment) and plan.releases == ()
