"""`assembled` builds the core's hot results (diffs, plans, decisions) without their dataclasses'
generated `__init__`: every field is given, so each is the object `__init__` would make."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from rebal.core import diff as differ
from rebal.core.diff import diff_trees
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.core.policy import Bands, Policy, evaluate
from rebal.core.tree import parse_tree

REAL = {"name": "p", "children": [{"name": "spot", "kind": "account", "exchange": "x", "quote": "USD",
        "children": [{"name": "usd", "asset": "USD", "amount": "1000"},
                     {"name": "btc", "asset": "BTC", "amount": "2"}]}]}  # fmt: skip
TARGET = {"name": "p", "children": [{"name": "spot", "weight": 1, "children": [
    {"name": "btc", "asset": "BTC", "weight": "50%"},
    {"name": "eth", "asset": "ETH", "weight": "50%"}]}]}  # fmt: skip
PRICES = Prices.parse({"quote": "USD", "prices": {"USD": "1", "BTC": "700", "ETH": "30"}})
MARKETS = Markets.parse({"x": {"BTC/USD": {"fee_rate": "0.001"}, "ETH/USD": {"fee_rate": "0.001"}}})


def _same_as_init(made: Any) -> None:
    names = {field.name for field in dataclasses.fields(made)}
    assert names <= set(vars(made)), names - set(vars(made))
    again = dataclasses.replace(made)  # through `__init__`, every field as given
    for name in names:
        one, other = getattr(made, name), getattr(again, name)
        assert type(one) is type(other)
        if isinstance(one, np.ndarray):
            assert one.tobytes() == other.tobytes()
        else:
            assert one is other or one == other


@pytest.mark.parametrize("small_nodes", [0, 48])  # the array path and the small one
def test_the_hot_results_have_every_field_as_init_makes_them(
    small_nodes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(differ, "SMALL_NODES", small_nodes)
    diff = diff_trees(parse_tree(REAL, "real"), parse_tree(TARGET, "target"), PRICES)
    _same_as_init(diff)
    plan = plan_rebalance(diff, MARKETS)
    assert len(plan) == 2
    _same_as_init(plan)
    decision = evaluate(diff, Policy(bands=Bands(absolute=0.05)), now=0, last_rebalance=None)
    assert decision.rebalance
    _same_as_init(decision)
    assert dataclasses.replace(decision) == decision
