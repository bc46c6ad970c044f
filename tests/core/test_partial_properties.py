"""Invariants of the partial rebalances on generated trees: buy-only plans never sell and never move a
wallet further from its target; the breaching scope moves only what it must."""

from __future__ import annotations

import copy
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.partial import breaching_only, buy_only, cash_above_target
from rebal.core.plan import plan_rebalance
from rebal.core.tree import parse_tree
from rebal.render import plan_json
from tests.strategies import Case, cases

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Float sums of up to a few hundred thousand USD.
NOISE = 1e-9


def diff_of(real: dict, case: Case) -> DiffTree:
    return diff_trees(parse_tree(real, "real"), parse_tree(case.target, "target"), Prices.parse(case.prices))


def filled(case: Case, planned: dict) -> tuple[dict, Decimal]:
    """The real tree after every buy filled at its estimated price (fee paid in quote) and every transfer
    arrived; and the fees paid."""
    after = copy.deepcopy(case.real)
    accounts = {f"root/{acc['name']}": acc for acc in after["children"]}

    def wallets(acc: dict) -> dict[str, dict]:
        return {w["asset"]: w for part in acc["children"] for w in part.get("children", [part])}

    def placed(account: str, asset: str) -> dict:
        """The wallet where the target puts the asset (sector s1 or s2 of the account), made if new:
        a buy lands there, where the diff wanted more of it."""
        wanted = next(acc for acc in case.target["children"] if f"root/{acc['name']}" == account)
        sector = next(
            part for part in wanted["children"] for w in part.get("children", []) if w["asset"] == asset
        )
        part = next(part for part in accounts[account]["children"] if part["name"] == sector["name"])
        found = next((w for w in part["children"] if w["asset"] == asset), None)
        if found is None:
            found = {"name": asset.lower(), "asset": asset, "amount": "0"}
            part["children"].append(found)
        return found

    fees = Decimal(0)
    for order in planned["orders"]:
        assert order["side"] == "buy"
        base, quote = order["symbol"].split("/")
        cost, fee = Decimal(order["est_cost"]), Decimal(order["est_fee"])
        bought = placed(order["account"], base)
        bought["amount"] = str(Decimal(bought["amount"]) + Decimal(order["amount"]))
        cash = wallets(accounts[order["account"]])[quote]
        cash["amount"] = str(Decimal(cash["amount"]) - cost - fee)
        fees += fee
    for transfer in planned["transfers"]:
        amount = Decimal(transfer["amount"])
        source, sink = wallets(accounts[transfer["from"]]), wallets(accounts[transfer["to"]])
        source[transfer["asset"]]["amount"] = str(Decimal(source[transfer["asset"]]["amount"]) - amount)
        sink[transfer["asset"]]["amount"] = str(Decimal(sink[transfer["asset"]]["amount"]) + amount)
    return after, fees


def wallet_drift(diff: DiffTree) -> float:
    """The largest |current - desired| of any wallet, as a share of the portfolio."""
    wallets = diff.tree.wallet
    total = max(float(diff.current_value[0]), 1e-300)
    return float(np.abs(diff.current_value - diff.desired_value)[wallets].max(initial=0.0)) / total


@SETTINGS
@given(cases(locks=False))
def test_buy_only_never_sells_and_never_increases_the_largest_drift(case: Case) -> None:
    before = diff_of(case.real, case)
    planned = plan_json(plan_rebalance(buy_only(before), Markets.parse(case.markets)))
    assert all(order["side"] == "buy" for order in planned["orders"])
    after, fees = filled(case, planned)
    for acc in after["children"]:
        for part in acc["children"]:
            for w in part.get("children", [part]):
                assert Decimal(w["amount"]) >= 0, (acc["name"], w)
    total = float(before.current_value[0])
    # Fees leave the portfolio: every weight may shift by up to twice their share of it.
    slack = 2 * float(fees) / total if total > 0 else 0.0
    # A buy is truncated to its market's step: the cash it leaves behind (less than one step's value per
    # market, and possibly moved to the account for it) stays in the account's cash wallet.
    steps = sum(
        float(Decimal(spec["amount_step"]) * Decimal(case.prices["prices"][symbol.split("/")[0]]))
        for markets in case.markets.values()
        for symbol, spec in markets.items()
    )
    slack += steps / total if total > 0 else 0.0
    bought = diff_of(after, case)
    # Drift as a share of the portfolio, per wallet. A node's weight of its PARENT can rise under buy-only:
    # when an account over its target sends its spare cash away, what it cannot sell becomes a larger
    # share of what is left in it (an account wanted at 0% that keeps two unsold coins holds them at 100%).
    assert wallet_drift(bought) <= wallet_drift(before) + slack + NOISE


@SETTINGS
@given(cases(locks=False, fees=False, minimums=False))
def test_buy_only_spends_the_cash_above_target_and_no_more(case: Case) -> None:
    before = diff_of(case.real, case)
    bought = buy_only(before)
    spent = float((bought.desired_value - before.current_value)[before.tree.wallet & ~before.cash].sum())
    available = max(cash_above_target(before), 0.0)
    assert spent <= available + NOISE * max(float(before.current_value[0]), 1.0)
    assert float(bought.desired_value[0]) == float(before.current_value[0]) or available > 0
    assert (bought.desired_value >= before.current_value - NOISE * max(float(before.scale), 1.0))[
        before.tree.wallet & ~before.cash
    ].all()


@SETTINGS
@given(cases(locks=False))
def test_breaching_only_restores_the_listed_weights_and_keeps_the_total(case: Case) -> None:
    diff = diff_of(case.real, case)
    count = len(diff.tree)
    listed = [node for node in range(1, count) if node % 3 == 1]
    partial = breaching_only(diff, listed)
    assert abs(float(partial.desired_value[0]) - float(diff.desired_value[0])) <= NOISE * max(diff.scale, 1.0)
    parent = diff.tree.parent
    for node in listed:
        siblings = [s for s in range(1, count) if parent[s] == parent[node] and s not in listed]
        # Restored wherever the parent has value and another child that holds something takes the rest.
        if partial.desired_value[parent[node]] > NOISE * diff.scale and any(
            diff.current_value[s] > 0 for s in siblings
        ):
            assert abs(partial.desired_weight[node] - diff.desired_weight[node]) <= 1e-6
    assert (partial.desired_value >= -NOISE).all()
    # Nothing listed: nothing moves.
    untouched = breaching_only(diff, [])
    assert np.allclose(
        untouched.desired_value, diff.current_value, rtol=1e-9, atol=NOISE * max(diff.scale, 1.0)
    )
