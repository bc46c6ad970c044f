"""The screen proposes every row the core would fire on: a replay that evaluates every row with the core
makes the same rebalances, at the same rows, to the same values."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebal.core.backtest import replay
from rebal.core.backtest.start import with_cash_wallets
from rebal.core.market import Markets
from rebal.core.tree import parse_tree
from rebal.policy import parse_policy
from tests.backtest.paths import BINANCE, MARKETS, account, history

TWO_ACCOUNTS_TARGET: dict[str, Any] = {
    "name": "alice",
    "children": [
        {"name": "spot", "weight": "60%", "children": [
            {"name": "crypto", "weight": "90%", "children": [
                {"name": "btc", "asset": "BTC", "weight": "70%"},
                {"name": "eth", "asset": "ETH", "weight": "30%"},
            ]},
            {"name": "usdt", "asset": "USDT", "weight": "10%"},
        ]},
        {"name": "other", "weight": "40%", "children": [
            {"name": "sol", "asset": "SOL", "weight": "80%"},
            {"name": "usdt", "asset": "USDT", "weight": "20%"},
        ]},
    ],
}  # fmt: skip
TWO_ACCOUNTS_REAL: dict[str, Any] = {
    "name": "alice",
    "children": [
        {"name": "spot", "kind": "account", "exchange": "binance", "quote": "USDT", "children": [
            {"name": "crypto", "children": [
                {"name": "btc", "asset": "BTC", "amount": "6", "locks": [{"owner": "bot", "share": "0.25"}]},
                {"name": "eth", "asset": "ETH", "amount": "2"},
            ]},
            {"name": "usdt", "asset": "USDT", "amount": "100"},
        ]},
        account("other", {"SOL": "1", "USDT": "50"}, exchange="kraken"),
    ],
}  # fmt: skip
KRAKEN = Markets.parse(
    {"binance": BINANCE, "kraken": {"SOL/USDT": {"amount_step": "0.01", "fee_rate": "0.0026"}}}
)
CASES: dict[str, dict[str, Any]] = {
    "absolute": {"drift_absolute": 0.03},
    "relative": {"drift_relative": 0.1, "bands": {"alice/spot/usdt": {"drift_relative": None}}},
    "monthly": {"schedule": "0 0 1 * *"},
    "cooldown": {"drift_absolute": 0.02, "cooldown": "10d"},
    "breaching": {"drift_absolute": 0.03, "scope": "breaching"},
    "cash": {"drift_absolute": 0.1, "invest_cash_above": "200"},
    "overrides": {"drift_absolute": 0.2, "bands": {"alice/spot/crypto/btc": {"drift_absolute": 0.02}}},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_screen_proposes_every_row_the_core_fires_on(name: str) -> None:
    path = history(rows=200, seed=3)
    flows = np.zeros(len(path))
    flows[[30, 90, 150]] = [800.0, -400.0, 1200.0]
    policy = parse_policy(CASES[name]).to_policy()
    start = with_cash_wallets(TWO_ACCOUNTS_REAL, "USDT")
    args = (path, start, parse_tree(TWO_ACCOUNTS_TARGET, "target"), KRAKEN, policy)
    fast = replay(*args, flows=flows)
    every = replay(*args, flows=flows, every_row=True)
    assert fast.rebalances > 0
    assert np.array_equal(fast.kind, every.kind)
    assert np.allclose(fast.value, every.value, rtol=1e-12)
    assert np.allclose(fast.drift, every.drift, atol=1e-12)
    assert np.array_equal(fast.orders, every.orders)
    assert fast.evaluations < every.evaluations


def test_a_target_that_keeps_unlisted_children_has_every_row_evaluated() -> None:
    """`keep_unlisted` makes the listed siblings' desired weights move with prices: the screen steps aside."""
    doc = {
        "name": "alice",
        "children": [{"name": "spot", "weight": 1, "keep_unlisted": True, "children": [
            {"name": "btc", "asset": "BTC", "weight": "60%"},
            {"name": "usdt", "asset": "USDT", "weight": "40%"},
        ]}],
    }  # fmt: skip
    path = history(rows=60, seed=4)
    start = with_cash_wallets(
        {"name": "alice", "children": [account("spot", {"BTC": "5", "ETH": "2", "USDT": "500"})]}, "USDT"
    )
    run = replay(
        path, start, parse_tree(doc, "target"), MARKETS, parse_policy({"drift_absolute": 0.02}).to_policy()
    )
    assert run.evaluations == len(path)
    assert run.rebalances > 0


def test_value_is_conserved_but_for_the_fees() -> None:
    """At a rebalance row the value before the trades minus the fees is the value after (fills at the
    row's prices), and no wallet ever goes negative."""
    path = history(rows=120, seed=8)
    start = with_cash_wallets(TWO_ACCOUNTS_REAL, "USDT")
    policy = parse_policy({"drift_absolute": 0.03}).to_policy()
    run = replay(path, start, parse_tree(TWO_ACCOUNTS_TARGET, "target"), KRAKEN, policy, record=True)
    for trade in run.trades:
        assert trade.before is not None and trade.after is not None
        before = _value(trade.before, path, trade.row)
        after = _value(trade.after, path, trade.row)
        assert after == pytest.approx(before - run.fees[trade.row], rel=1e-12)
        assert all(float(w["amount"]) >= 0 for w in _wallets(trade.after))


def _wallets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        if "asset" in node:
            out.append(node)
        stack.extend(node.get("children") or [])
    return out


def _value(doc: dict[str, Any], path: Any, row: int) -> float:
    tree = parse_tree(doc, "real")
    return sum(
        (float(tree.amount[n]) - float(tree.locked[n])) * path.price_of(str(tree.assets[n]), row)
        for n in range(len(tree))
        if tree.wallet[n]
    )


def test_a_new_position_lands_in_the_targets_own_wallet() -> None:
    """Bought from cash into a nested target, each asset goes to the wallet the target names (not to a
    wallet of its own under the account, which the target does not list and the next plan would sell)."""
    path = history(rows=40, seed=6)
    start = {"name": "alice", "children": [account("spot", {"USDT": "10000"})]}
    nested = {
        "name": "alice",
        "children": [{"name": "spot", "weight": 1, "children": [
            {"name": "crypto", "weight": "90%", "children": [
                {"name": "bitcoin", "asset": "BTC", "weight": "60%"},
                {"name": "ether", "asset": "ETH", "weight": "40%"},
            ]},
            {"name": "usdt", "asset": "USDT", "weight": "10%"},
        ]}],
    }  # fmt: skip
    run = replay(
        path,
        start,
        parse_tree(nested, "target"),
        MARKETS,
        parse_policy({"drift_absolute": 0.05}).to_policy(),
        record=True,
    )
    first = run.trades[0]
    assert first.row == 0 and first.after is not None
    held = {w["name"]: float(w["amount"]) for w in _wallets(first.after)}
    assert set(held) == {"bitcoin", "ether", "usdt"} and held["bitcoin"] > 0 and held["ether"] > 0
    assert run.rebalances < 10  # not every row: nothing unlisted to sell


@settings(max_examples=int(os.environ.get("BACKTEST_EXAMPLES", "12")), deadline=None)
@given(
    seed=st.integers(0, 10_000),
    absolute=st.none() | st.floats(0.01, 0.12),
    relative=st.none() | st.floats(0.05, 0.6),
    cooldown=st.integers(0, 6),
    cash=st.none() | st.integers(50, 2_000),
)
def test_the_screen_and_the_core_make_the_same_rebalances(
    seed: int, absolute: float | None, relative: float | None, cooldown: int, cash: int | None
) -> None:
    """Any bands, cooldown and cash threshold on any path: proposing rows changes nothing."""
    document: dict[str, Any] = {"cooldown": f"{cooldown}d"} if cooldown else {}
    document |= {"drift_absolute": absolute} if absolute is not None else {}
    document |= {"drift_relative": relative} if relative is not None else {}
    document |= {"invest_cash_above": str(cash)} if cash is not None else {}
    path = history(rows=90, seed=seed, vol=0.05)
    flows = np.zeros(len(path))
    flows[[20, 60]] = [1500.0, -700.0]
    start = with_cash_wallets(TWO_ACCOUNTS_REAL, "USDT")
    args = (
        path,
        start,
        parse_tree(TWO_ACCOUNTS_TARGET, "target"),
        KRAKEN,
        parse_policy(document).to_policy(),
    )
    fast, every = replay(*args, flows=flows), replay(*args, flows=flows, every_row=True)
    assert np.array_equal(fast.kind, every.kind)
    assert np.allclose(fast.value, every.value, rtol=1e-12)
