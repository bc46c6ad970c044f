"""The planner's one-account path (`_plan_one_account`, Python floats) against its general path
(`_plan_groups`, arrays): the same orders, the same skips, the same decimal amounts, on generated inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebal.core import plan as planner
from rebal.core.diff import diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.plan import Plan, plan_rebalance
from rebal.core.tree import parse_tree
from tests.strategies import Case, cases

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def both(case: Case, invest: float, withdraw: float, least: float) -> tuple[Any, Any] | None:
    prices, markets = Prices.parse(case.prices), Markets.parse(case.markets)
    try:
        diff = diff_trees(
            parse_tree(case.real, "real"),
            parse_tree(case.target, "target"),
            prices,
            invest=invest,
            withdraw=withdraw,
        )
        groups = planner._Groups.build(diff, markets, None, least)
        planner._refuse_unreachable(diff, groups)
    except InputError:
        return None
    assert groups.all_direct and groups.accounts.size == 1
    lists = planner._SmallGroups.of_groups(groups)
    straight = planner._SmallGroups.of(diff, markets, least)
    if straight is not None:  # a small union tree: its lists made from the diff are the groups' own
        same_lists(straight, lists)
    small = planner._plan_one_account(diff, lists)
    general = planner._plan_groups(diff, planner._Groups.build(diff, markets, None, least), None)
    return small, general


def same_lists(a: Any, b: Any) -> None:
    """The same lists, float for float (`repr` tells -0.0 from 0.0 and shows NaN)."""
    for name in a._fields:
        mine, theirs = getattr(a, name), getattr(b, name)
        if isinstance(mine, np.ndarray):
            same_arrays(mine, theirs)
        else:
            assert repr(mine) == repr(theirs), name


def same_arrays(a: Any, b: Any) -> None:
    assert a.dtype == b.dtype
    assert np.array_equal(a, b)


def same_plans(small: Plan, general: Plan) -> None:
    for name in ("direct_account", "direct_market", "direct_side", "direct_steps", "direct_order"):
        same_arrays(getattr(small, name), getattr(general, name))
    for name in ("node", "asset", "account", "side", "amount", "code"):
        same_arrays(getattr(small.skips, name), getattr(general.skips, name))
    assert small.skips.symbol == general.skips.symbol
    assert small.direct_markets == general.direct_markets
    assert (small.legs, small.transfers, small.trading, small.direct_group) == (
        general.legs,
        general.transfers,
        general.trading,
        general.direct_group,
    )
    assert small.orders() == general.orders()
    assert small.skipped() == general.skipped()
    assert small.budgets() == general.budgets()


@SETTINGS
@given(
    cases(max_accounts=1),
    st.sampled_from((0.0, 0.0, 100.0, 2500.0)),
    st.sampled_from((0.0, 0.0, 50.0, 1000.0)),
    st.sampled_from((0.0, 0.0, 5.0, 40.0)),
)
def test_the_one_account_plan_is_the_general_plan(
    case: Case, invest: float, withdraw: float, least: float
) -> None:
    made = both(case, invest, withdraw, least)
    if made is None or made[0] is None:  # refused input, or a plan the general path makes
        return
    one, (general, _, general_flows) = made
    small, small_flows = one.plan, one.flows(one.plan.diff)
    same_plans(small, general)
    same_arrays(small_flows.wanted_by_slot, general_flows.wanted_by_slot)
    same_arrays(small_flows.cash_by_slot, general_flows.cash_by_slot)
    assert small_flows.first_in == general_flows.first_in
    assert small_flows.withdrawal_fees == general_flows.withdrawal_fees


def test_plan_rebalance_takes_the_one_account_path_and_agrees() -> None:
    """A portfolio short of cash for its buys (the budget squeezes them) and one sell: the path runs."""
    real = {
        "name": "root",
        "children": [
            {
                "name": "acc",
                "kind": "account",
                "exchange": "ex",
                "quote": "USDT",
                "children": [
                    {"name": "aaa", "asset": "AAA", "amount": "10"},
                    {"name": "cash", "asset": "USDT", "amount": "1000"},
                ],
            }
        ],
    }
    target = {
        "name": "root",
        "children": [
            {
                "name": "acc",
                "weight": "100%",
                "children": [
                    {"name": "aaa", "asset": "AAA", "weight": "10%"},
                    {"name": "bbb", "asset": "BBB", "weight": "45%"},
                    {"name": "ccc", "asset": "CCC", "weight": "45%"},
                ],
            }
        ],
    }
    prices = Prices.parse({"quote": "USD", "prices": {"USDT": "1", "AAA": "100", "BBB": "3", "CCC": "7"}})
    markets = Markets.parse(
        {"ex": {f"{x * 3}/USDT": {"fee_rate": "0.01", "amount_step": "0.01"} for x in "ABC"}}
    )
    diff = diff_trees(parse_tree(real, "real"), parse_tree(target, "target"), prices)
    small = planner._SmallGroups.of(diff, markets, 0.0)
    assert small is not None and planner._plan_one_account(diff, small) is not None
    plan = plan_rebalance(diff, markets)
    same_plans(plan, planner._plan_groups(diff, planner._Groups.build(diff, markets), None)[0])
    assert [(o.side, o.symbol) for o in plan.orders()] == [
        ("sell", "AAA/USDT"),
        ("buy", "BBB/USDT"),
        ("buy", "CCC/USDT"),
    ]


@SETTINGS
@given(
    cases(max_accounts=1),
    st.sampled_from((0.0, 0.0, 100.0, 2500.0)),
    st.sampled_from((0.0, 0.0, 50.0, 1000.0)),
    st.sampled_from((0.0, 0.0, 5.0, 40.0)),
)
def test_the_one_direct_plan_is_the_general_plan(
    case: Case, invest: float, withdraw: float, least: float
) -> None:
    """`_plan_one_direct` (one account, every group direct: what `plan_trading` takes past the Python
    path, a hundred wallets and more) makes `_plan_groups`' plan, flows and errors."""
    prices, markets = Prices.parse(case.prices), Markets.parse(case.markets)
    try:
        diff = diff_trees(
            parse_tree(case.real, "real"),
            parse_tree(case.target, "target"),
            prices,
            invest=invest,
            withdraw=withdraw,
        )
        groups = planner._Groups.build(diff, markets, None, least)
        planner._refuse_unreachable(diff, groups)
    except InputError:
        return
    if not (groups.all_direct and groups.accounts.size == 1):
        return
    try:
        general, _, general_flows = planner._plan_groups(diff, groups, None)
    except InputError as error:
        with pytest.raises(InputError) as raised:
            planner._plan_one_direct(diff, planner._Groups.build(diff, markets, None, least))
        assert str(raised.value) == str(error)
        return
    one, _, one_flows = planner._plan_one_direct(diff, planner._Groups.build(diff, markets, None, least))
    same_plans(one, general)
    same_arrays(one_flows.wanted_by_slot, general_flows.wanted_by_slot)
    same_arrays(one_flows.cash_by_slot, general_flows.cash_by_slot)
    assert (one_flows.first_in, one_flows.withdrawal_fees) == (
        general_flows.first_in,
        general_flows.withdrawal_fees,
    )
