"""The diff's small path (`_SmallDescent`, Python floats) and the band check's (`_small_over`) against
their general paths (arrays): the same values, weights, amounts, operations and breaches, bit for bit,
on generated inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rebal.core import diff as differ
from rebal.core import policy as policy_module
from rebal.core.diff import DiffTree, diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.policy import Bands, Policy
from rebal.core.tree import parse_tree
from tests.strategies import Case, cases

FIELDS = (
    "price",
    "current_value",
    "desired_value",
    "current_weight",
    "desired_weight",
    "operation",
    "free_amount",
    "desired_free_amount",
)


def made(case: Case, invest: float, withdraw: float, band: float, small_nodes: int) -> DiffTree | str:
    saved = differ.SMALL_NODES
    differ.SMALL_NODES = small_nodes
    try:
        return diff_trees(
            parse_tree(case.real, "real"),
            parse_tree(case.target, "target"),
            Prices.parse(case.prices),
            band=band,
            invest=invest,
            withdraw=withdraw,
        )
    except InputError as error:
        return str(error)
    finally:
        differ.SMALL_NODES = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cases(),
    st.sampled_from((0.0, 0.0, 100.0, 2500.0)),
    st.sampled_from((0.0, 0.0, 50.0, 1000.0, 1e9)),
    st.sampled_from((0.0, 0.0, 0.01)),
)
def test_the_small_diff_is_the_general_diff(case: Case, invest: float, withdraw: float, band: float) -> None:
    small = made(case, invest, withdraw, band, differ.SMALL_NODES)
    general = made(case, invest, withdraw, band, 0)
    if isinstance(small, str) or isinstance(general, str):
        assert small == general
        return
    event("small path" if differ._SmallDescent.of(small.tree, small.tree.target) else "general path")
    for name in FIELDS:
        a, b = getattr(small, name), getattr(general, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), name
        assert np.array_equal(np.signbit(a), np.signbit(b)), name


def without_fixed_levels(case: Case, invest: float, withdraw: float, band: float) -> DiffTree | str:
    """The arrays' path with `_Descent` for every target (no fixed levels)."""
    saved = differ._fixed_levels
    differ._fixed_levels = lambda tree, target: None
    try:
        return made(case, invest, withdraw, band, 0)
    finally:
        differ._fixed_levels = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cases(),
    st.sampled_from((0.0, 0.0, 100.0, 2500.0)),
    st.sampled_from((0.0, 0.0, 50.0, 1000.0, 1e9)),
    st.sampled_from((0.0, 0.0, 0.01)),
)
def test_the_fixed_levels_are_the_descent(case: Case, invest: float, withdraw: float, band: float) -> None:
    """The arrays' path of a target fixing every share (`_fixed_levels`) hands down what `_Descent` does."""
    fixed = made(case, invest, withdraw, band, 0)
    descent = without_fixed_levels(case, invest, withdraw, band)
    if isinstance(fixed, str) or isinstance(descent, str):
        assert fixed == descent
        return
    event("fixed levels" if differ._fixed_levels(fixed.tree, fixed.tree.target) is not None else "descent")
    for name in FIELDS:
        a, b = getattr(fixed, name), getattr(descent, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), name
        assert np.array_equal(np.signbit(a), np.signbit(b)), name


def account(*wallets: dict[str, object]) -> dict[str, object]:
    return {
        "name": "root",
        "children": [
            {
                "name": "a",
                "kind": "account",
                "exchange": "x",
                "quote": "USDT",
                "weight": "1",
                "children": list(wallets),
            }
        ],
    }


PRICES = Prices.parse({"quote": "USDT", "prices": {"BTC": "10", "ETH": "1", "USDT": "1"}})


def test_a_target_listing_every_node_takes_the_small_path() -> None:
    real = parse_tree(
        account(
            {"name": "BTC", "asset": "BTC", "amount": "1"}, {"name": "ETH", "asset": "ETH", "amount": "2"}
        ),
        "real",
    )
    target = parse_tree(
        account(
            {"name": "BTC", "asset": "BTC", "weight": "0.5"}, {"name": "ETH", "asset": "ETH", "weight": "0.5"}
        ),
        "target",
    )
    found = diff_trees(real, target, PRICES)
    assert differ._SmallDescent.of(found.tree, found.tree.target) is not None
    assert found.desired_value.tolist() == [12.0, 12.0, 6.0, 6.0]
    assert found.current_weight.tolist() == [1.0, 1.0, 10 / 12, 2 / 12]


def test_a_target_not_listing_a_held_wallet_sells_it_on_the_small_path() -> None:
    real = parse_tree(
        account(
            {"name": "BTC", "asset": "BTC", "amount": "1"}, {"name": "ETH", "asset": "ETH", "amount": "2"}
        ),
        "real",
    )
    target = parse_tree(account({"name": "BTC", "asset": "BTC", "weight": "1"}), "target")
    found = diff_trees(real, target, PRICES)
    assert differ._SmallDescent.of(found.tree, found.tree.target) is not None  # ETH: sold (factor 0)
    assert found.desired_value.tolist() == [12.0, 12.0, 12.0, 0.0]


def test_a_target_keeping_unlisted_wallets_takes_the_general_path() -> None:
    real = parse_tree(
        account(
            {"name": "BTC", "asset": "BTC", "amount": "1"}, {"name": "ETH", "asset": "ETH", "amount": "2"}
        ),
        "real",
    )
    kept = account({"name": "BTC", "asset": "BTC", "weight": "1"})
    kept["children"][0]["keep_unlisted"] = True
    found = diff_trees(real, parse_tree(kept, "target"), PRICES)
    assert differ._SmallDescent.of(found.tree, found.tree.target) is None
    assert found.desired_value.tolist() == [12.0, 12.0, 10.0, 2.0]


BANDS = st.builds(
    Bands,
    absolute=st.sampled_from((None, 0.0, 0.001, 0.01, 0.05)),
    relative=st.sampled_from((None, 0.0, 0.05, 0.2)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), BANDS, st.sampled_from((0.0, 0.0, 2500.0)), st.booleans())
def test_the_small_band_check_is_the_general_one(
    case: Case, bands: Bands, invest: float, override: bool
) -> None:
    found = made(case, invest, 0.0, 0.0, differ.SMALL_NODES)
    if isinstance(found, str):
        return
    overrides = {found.tree.paths()[-1]: {"absolute": 0.002, "relative": None}} if override else {}
    policy = Policy(bands=bands, overrides=overrides)
    small = policy_module.find_breaches(found, policy)
    saved = policy_module.SMALL_NODES
    policy_module.SMALL_NODES = 0
    try:
        general = policy_module.find_breaches(found, policy)
    finally:
        policy_module.SMALL_NODES = saved
    event("breaches" if small else "none")
    assert repr(small) == repr(general)
