"""Properties of where-mode plans on generated pools: never costlier than the plain plan, never selling
more than is free (or arrives), deterministic."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import numpy as np
from hypothesis import example, given, settings

from rebal import render
from rebal.core.diff import HOLD, DiffTree, diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.networks import Networks
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.tree import parse_tree
from rebal.core.where import plain_plan
from tests.core.test_where_budgets import holding_account_inputs, sector_pool_inputs
from tests.strategies import WhereCase, pool_cases

# Float sums of a few hundred terms: anything under this share of the portfolio is noise.
COST_NOISE = 1e-9


def planned(case: WhereCase) -> tuple[DiffTree, Plan, Plan]:
    diff = diff_trees(
        parse_tree(case.real, "real"),
        parse_tree(case.target, "target"),
        Prices.parse(case.prices),
        band=case.band,
    )
    markets = Markets.parse(case.markets)
    networks = Networks.parse(case.network) if case.network is not None else None
    return diff, plan_rebalance(diff, markets, networks=networks), plain_plan(diff, markets, networks)


@settings(max_examples=150, deadline=None)
@given(pool_cases())
def test_with_pools_the_plan_never_costs_more_than_the_plain_plan(case: WhereCase) -> None:
    diff, plan, plain = planned(case)
    assert plan.notes is not None and plain.notes is not None
    assert plan.notes.total <= plain.notes.total + COST_NOISE * diff.scale


@settings(max_examples=100, deadline=None)
@given(pool_cases())
def test_a_where_plan_never_sells_more_than_is_free_or_arrives(case: WhereCase) -> None:
    diff, plan, _ = planned(case)
    tree = diff.tree
    free: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for node in range(len(tree)):
        index = int(tree.real_index[node])
        if tree.wallet[node] and index >= 0 and tree.account_of[node] >= 0:
            key = (tree.path(int(tree.account_of[node])), str(tree.asset(node)))
            free[key] += tree.real.exact_amount(index) - tree.real.exact_locked(index)
    for transfer in plan.transfers:
        free[(transfer.source, transfer.asset)] -= transfer.amount
        free[(transfer.destination, transfer.asset)] += transfer.amount - transfer.fee
        assert free[(transfer.source, transfer.asset)] >= 0 or transfer.asset == "USDT"
    sold: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for order in plan.orders():
        if order.side == "sell":
            sold[(order.account, order.symbol.partition("/")[0])] += order.amount
    for key, amount in sold.items():
        assert amount <= free[key], key


def free_holdings(diff: DiffTree) -> dict[tuple[str, str], Decimal]:
    """Per (account path, asset), the free amount the real tree holds."""
    tree = diff.tree
    free: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for node in range(len(tree)):
        index = int(tree.real_index[node])
        if tree.wallet[node] and index >= 0 and tree.account_of[node] >= 0:
            key = (tree.path(int(tree.account_of[node])), str(tree.asset(node)))
            free[key] += tree.real.exact_amount(index) - tree.real.exact_locked(index)
    return free


def overspent(diff: DiffTree, plan: Plan) -> list[tuple[tuple[str, str], Decimal]]:
    """The (account, asset) balances the plan leaves below zero: free holdings, plus what sells bring
    (net of fees) and transfers bring (net of the network's fee), less what buys spend (with fees), sells
    give and transfers take out (beyond a rounding of 1e-9 of what moved there)."""
    left = free_holdings(diff)
    moved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    flows: list[tuple[tuple[str, str], Decimal]] = []
    for transfer in plan.transfers:
        flows.append(((transfer.source, transfer.asset), -transfer.amount))
        flows.append(((transfer.destination, transfer.asset), transfer.amount - transfer.fee))
    for order in plan.orders():
        base, _, quote = order.symbol.partition("/")
        sign = 1 if order.side == "buy" else -1
        flows.append(((order.account, base), sign * order.amount))
        flows.append(((order.account, quote), -sign * order.est_cost - order.est_fee))
    for key, change in flows:
        left[key] += change
        moved[key] += abs(change)
    return [(key, value) for key, value in left.items() if value < -moved[key] * Decimal("1e-9")]


@settings(max_examples=150, deadline=None)
@given(pool_cases(networked=True, banded=True))
@example(WhereCase(*holding_account_inputs(kraken_sends_usdt=False)))  # the review's Z5
@example(WhereCase(*sector_pool_inputs(), band=0.5))
def test_no_where_plan_spends_more_than_an_account_has_or_receives(case: WhereCase) -> None:
    """Per account and asset, the plan's orders and transfers (the pool plan and the plain one) never
    spend more than the free holding, the sells' proceeds and the transfers in (net of fees) less the
    transfers out: a buy is never paid with money the account does not have."""
    diff, plan, plain = planned(case)
    assert overspent(diff, plan) == []
    assert overspent(diff, plain) == []


@settings(max_examples=100, deadline=None)
@given(pool_cases(networked=True, banded=True))
@example(WhereCase(*sector_pool_inputs(), band=0.5))  # the review's H2 with --band 0.5
def test_a_where_plan_moves_nothing_out_of_a_wallet_the_band_holds(case: WhereCase) -> None:
    """An asset leaves an account (a move) only where one of its wallets of it trades: a held wallet is
    neither moved nor bought back."""
    _, plan, _ = planned(case)
    diff = plan.diff  # as the pools placed it
    tree = diff.tree
    trading = {
        (tree.path(int(tree.account_of[node])), diff.asset_names[int(diff.asset_id[node])])
        for node in np.flatnonzero(tree.wallet & (tree.account_of >= 0) & (diff.operation != HOLD)).tolist()
    }
    quotes = {tree.path(node): quote for node, (_, quote) in tree.accounts.items()}
    for transfer in plan.transfers:
        if transfer.asset != quotes[transfer.source]:
            assert (transfer.source, transfer.asset) in trading, transfer


@settings(max_examples=50, deadline=None)
@given(pool_cases())
def test_the_same_pool_input_gives_byte_identical_output(case: WhereCase) -> None:
    first = b"".join(render.plan_chunks(planned(case)[1]))
    assert first == b"".join(render.plan_chunks(planned(case)[1]))
