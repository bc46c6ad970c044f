"""Invariants of the planner on generated trees."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import orjson
from hypothesis import HealthCheck, assume, given, settings

from rebal.render import plan_json
from tests.strategies import Case, cases, mirror
from tests.support import nodes_by_path, run

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wallets(node: dict) -> list[dict]:
    return [n for n in nodes_by_path(node).values() if "asset" in n]


def exact_free(case: Case) -> dict[tuple[str, str], Decimal]:
    """Free amount per (account path, asset) from the input file, in exact decimals."""
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for acc in case.real["children"]:
        for part in acc["children"]:
            for w in part.get("children", [part]):
                amount = Decimal(w["amount"])
                locked = sum(
                    (
                        Decimal(lk["amount"]) if "amount" in lk else Decimal(lk["share"]) * amount
                        for lk in w.get("locks", [])
                    ),
                    Decimal(0),
                )
                out[(f"root/{acc['name']}", w["asset"])] += amount - locked
    return out


@SETTINGS
@given(cases())
def test_planning_what_is_already_held_gives_no_orders(case: Case) -> None:
    _, _, out = run(case.real, mirror(case.real, case.prices), case.prices, case.markets)
    assert out["orders"] == []
    assert out["transfers"] == []


@SETTINGS
@given(cases())
def test_no_order_sells_more_than_the_free_amount_and_locks_stay(case: Case) -> None:
    _, _, out = run(case.real, case.target, case.prices, case.markets)
    free = exact_free(case)
    sold: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for order in out["orders"]:
        if order["side"] == "sell":
            sold[(order["account"], order["symbol"].split("/")[0])] += Decimal(order["amount"])
    for key, amount in sold.items():
        assert amount <= free[key], key
    for w in wallets(out["diff"]):
        assert Decimal(w["desired_amount"]) >= Decimal(w["locked_amount"]) - Decimal("1e-9")


@SETTINGS
@given(cases())
def test_sells_precede_buys(case: Case) -> None:
    _, _, out = run(case.real, case.target, case.prices, case.markets)
    phases = [o["phase"] for o in out["orders"]]
    assert phases == sorted(phases)
    assert all((o["side"] == "sell") == (o["phase"] == 1) for o in out["orders"])


@SETTINGS
@given(cases())
def test_buys_never_exceed_the_available_quote(case: Case) -> None:
    _, _, out = run(case.real, case.target, case.prices, case.markets)
    cash = {f"root/{acc['name']}": Decimal(acc["children"][2]["amount"]) for acc in case.real["children"]}
    for order in out["orders"]:
        cost, fee = Decimal(order["est_cost"]), Decimal(order["est_fee"])
        cash[order["account"]] += (cost - fee) if order["side"] == "sell" else -(cost + fee)
    for transfer in out["transfers"]:
        cash[transfer["from"]] -= Decimal(transfer["amount"])
        cash[transfer["to"]] += Decimal(transfer["amount"])
    for account, left in cash.items():
        assert left >= Decimal("-1e-6"), (account, left)


@SETTINGS
@given(cases(max_accounts=1, fees=False, cash_share=3000))
def test_applying_the_plan_lands_every_wallet_within_one_step_or_minimum(case: Case) -> None:
    _, _, out = run(case.real, case.target, case.prices, case.markets)
    price = {k: Decimal(v) for k, v in case.prices["prices"].items()}
    market = case.markets["ex0"]
    held: dict[str, Decimal] = defaultdict(Decimal)
    wanted: dict[str, Decimal] = defaultdict(Decimal)
    for w in wallets(out["diff"]):  # an asset may sit in two wallets (moved between sectors)
        held[w["asset"]] += Decimal(w["current_amount"])
        wanted[w["asset"]] += Decimal(w["desired_amount"])
    # Enough cash that no buy is squeezed: the desired cash covers every truncation and skipped sell.
    slack = sum(
        Decimal(m["amount_step"]) * price[s.split("/")[0]] + Decimal(m["min_cost"]) for s, m in market.items()
    )
    assume(Decimal(out["diff"]["desired_value"]) * Decimal("0.3") > slack)
    for order in out["orders"]:
        base = order["symbol"].split("/")[0]
        held[base] += Decimal(order["amount"]) if order["side"] == "buy" else -Decimal(order["amount"])
    for asset, amount in held.items():
        if asset == "USDT":
            continue
        m = market[f"{asset}/USDT"]
        # What truncation leaves (under a step) plus an order too small to send (under the minimum).
        allowed = Decimal(m["amount_step"]) + Decimal(m["min_cost"]) / price[asset] + Decimal("1e-9")
        assert abs(amount - wanted[asset]) <= allowed, (asset, amount, wanted[asset], out["skipped"])


@SETTINGS
@given(cases())
def test_value_is_conserved_down_the_tree(case: Case) -> None:
    _, _, out = run(case.real, case.target, case.prices, case.markets)
    root = out["diff"]
    assert Decimal(root["desired_value"]) == Decimal(root["current_value"])
    for node in nodes_by_path(root).values():
        if node["children"] and Decimal(node["desired_value"]) > 0:
            total = sum(Decimal(c["desired_value"]) for c in node["children"])
            assert abs(total - Decimal(node["desired_value"])) <= Decimal("1e-6") * max(Decimal(1), total)


@settings(max_examples=50, deadline=None)
@given(cases())
def test_output_is_deterministic(case: Case) -> None:
    _, first, _ = run(case.real, case.target, case.prices, case.markets)
    _, second, _ = run(case.real, case.target, case.prices, case.markets)
    assert orjson.dumps(plan_json(first)) == orjson.dumps(plan_json(second))
