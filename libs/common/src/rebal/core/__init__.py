"""The pure core: tree, valuation, diff, rounding and planning.

Values in, values out: no I/O, no clock, no randomness, no logging. Files, events and venues live outside.

The names below are loaded when first used: importing a light module of the core (`numbers`,
`display`, `errors`) does not load numpy and the planner (`rebal --help` starts in a fraction of the
time).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rebal.core.diff import DiffTree, diff_trees
    from rebal.core.errors import InputError
    from rebal.core.market import Market, Markets, Prices
    from rebal.core.plan import Order, Plan, Skip, Transfer, plan_rebalance
    from rebal.core.tree import Lock, Tree, parse_tree

_WHERE = {
    "DiffTree": "diff",
    "diff_trees": "diff",
    "InputError": "errors",
    "Market": "market",
    "Markets": "market",
    "Prices": "market",
    "Order": "plan",
    "Plan": "plan",
    "Skip": "plan",
    "Transfer": "plan",
    "plan_rebalance": "plan",
    "Lock": "tree",
    "Tree": "tree",
    "parse_tree": "tree",
}

__all__ = [
    "DiffTree",
    "InputError",
    "Lock",
    "Market",
    "Markets",
    "Order",
    "Plan",
    "Prices",
    "Skip",
    "Transfer",
    "Tree",
    "diff_trees",
    "parse_tree",
    "plan_rebalance",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rebal.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rebal.core.{module}"), name)
