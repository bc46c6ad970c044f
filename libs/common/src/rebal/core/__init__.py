"""The pure core: tree, valuation, diff, rounding and planning.

Values in, values out: no I/O, no clock, no randomness, no logging. Files, events and venues live outside.
"""

from rebal.core.diff import DiffTree, diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Market, Markets, Prices
from rebal.core.plan import Order, Plan, Skip, Transfer, plan_rebalance
from rebal.core.tree import Lock, Tree, parse_tree

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
