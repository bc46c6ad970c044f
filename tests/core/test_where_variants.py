"""The pools' variants (issue 14's review: a transfer split in two, a dear network making buys dearer than
no network): a where plan is also made with the pools' money in the fewest transfers and with each
account's own money buying, and the cheapest is kept, today's on a tie. Properties: the plan never costs
more than today's rule's; enabling a network never makes it costlier where the plan without it trades the
same (skips nothing, holds the same)."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rebal.core import pools
from rebal.core.diff import DiffTree, diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.networks import Networks
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.tree import parse_tree
from tests.core.test_where_budgets import sector_pool_inputs
from tests.strategies import WhereCase, pool_cases
from tests.support import account, folder, wallet

Doc = dict[str, Any]
# Float sums of a few hundred terms: anything under this share of the portfolio is noise.
COST_NOISE = 1e-9


def dear_money_inputs(fee: str = "10", enabled: bool = True) -> WhereCase:
    """The review's B_10: 20,000 USDT (binance 15,000, coinbase 5,000) and a pool half BTC; coinbase asks
    less, and binance sends USDT for `fee`."""
    real = folder(
        "alice",
        account("binance", wallet("usdt", "USDT", "15000"), exchange="binance"),
        account("coinbase", wallet("usdt", "USDT", "5000"), exchange="coinbase"),
    )
    price_doc = {
        "quote": "USD",
        "prices": {"BTC": "60000", "USDT": "1"},
        "venues": {
            "binance": {"BTC": {"bid": "59900", "ask": "60100"}},
            "coinbase": {"BTC": {"bid": "59950", "ask": "60050"}},
        },
    }
    markets = {
        v: {"BTC/USDT": {"amount_step": "0.0001", "fee_rate": "0.001"}} for v in ("binance", "coinbase")
    }
    net = {
        "withdrawals": {"binance": {"USDT": {"fee": fee, "enabled": enabled}}},
        "deposits": {"coinbase": {"USDT": {}}},
    }
    return WhereCase(real, {"name": "alice", "pool": {"BTC": "50%", "USDT": "50%"}}, price_doc, markets, net)


def plan_of(case: WhereCase, network: Doc | None = None) -> tuple[DiffTree, Plan]:
    diff = diff_trees(
        parse_tree(case.real, "real"),
        parse_tree(case.target, "target"),
        Prices.parse(case.prices),
        band=case.band,
    )
    doc = network if network is not None else case.network
    networks = Networks.parse(doc) if doc is not None else None
    return diff, plan_rebalance(diff, Markets.parse(case.markets), networks=networks)


def total(plan: Plan) -> float:
    assert plan.notes is not None
    return plan.notes.total


@settings(max_examples=150, deadline=None)
@given(pool_cases(networked=True, banded=True))
@example(WhereCase(*sector_pool_inputs()))
@example(dear_money_inputs())
def test_a_where_plan_never_costs_more_than_today_s_rule(case: WhereCase) -> None:
    """Today's rule: the pools' money shared in proportion, the buys of money that moves dear in
    proportion to it (no variant)."""
    diff, plan = plan_of(case)
    with mock.patch.object(pools, "variants", lambda *_: []):
        _, today = plan_of(case)
    assert total(plan) <= total(today) + COST_NOISE * diff.scale


def held(plan: Plan) -> dict[tuple[str, str], float]:
    """Per pool (or account outside any) and asset, the value the plan's diff desires: what the plan
    brings it to."""
    diff = plan.diff
    tree = diff.tree
    nodes = pools.pool_nodes(diff)
    member = pools.pool_of(diff, nodes)
    out: dict[tuple[str, str], float] = defaultdict(float)
    for node in range(len(tree)):
        if tree.wallet[node] and diff.asset_id[node] >= 0:
            owner = int(nodes[member[node]]) if member[node] >= 0 else int(tree.account_of[node])
            out[(tree.path(owner), diff.asset_names[int(diff.asset_id[node])])] += float(
                diff.desired_value[node]
            )
    return out


@settings(max_examples=150, deadline=None)
@given(pool_cases(networked=True), st.data())
@example(dear_money_inputs(), None)
def test_enabling_a_network_never_makes_a_plan_that_trades_the_same_costlier(
    case: WhereCase, data: st.DataObject | None
) -> None:
    """One enabled withdrawal disabled: where the plan without it skips nothing and brings every pool
    (and every account outside one) to the same holdings, the plan with it costs no more. Not in general:
    a disabled network skips the transfers it would carry and the buys they would pay for, so that plan
    trades less and costs less; and a pool whose money no network moves buys with the money it holds,
    what that leaves unbought staying money (held differently)."""
    assert case.network is not None
    enabled = [
        (exchange, asset)
        for exchange, assets in sorted(case.network["withdrawals"].items())
        for asset, way in sorted(assets.items())
        if way.get("enabled", True)
    ]
    if not enabled:
        return
    exchange, asset = enabled[0] if data is None else data.draw(st.sampled_from(enabled))
    closed = copy.deepcopy(case.network)
    closed["withdrawals"][exchange][asset]["enabled"] = False
    diff, with_it = plan_of(case)
    _, without = plan_of(case, closed)
    if len(without.skips):  # orders and transfers skipped
        return
    one, other = held(with_it), held(without)
    if any(abs(one[key] - other[key]) > 1e-6 * max(1.0, abs(one[key])) for key in one.keys() | other.keys()):
        return
    assert total(with_it) <= total(without) + COST_NOISE * diff.scale
