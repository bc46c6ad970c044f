"""Partial rebalances: the diff tree with another desired side, so that the planner makes only some trades.

Both keep the current side and hand `plan_rebalance` an ordinary diff (`rebal.core.diff.with_desired`),
so steps, minimums, routes, transfers and every account's budget apply as to a full rebalance.

- `buy_only` (cash-flow rebalancing, docs/formats.md): no sells; the free cash above the target cash is
  spent on the underweight wallets. With the portfolio's value after the cash counted, each wallet's
  deficit is max(0, desired - current); if the deficits fit in the cash each is bought in full and the
  rest follows the targets, otherwise each deficit gets cash in proportion to its size. The diff says
  `buy_only`, so that pools (`rebal.core.pools`), which decide their accounts' holdings themselves, sell
  nothing either.
- `breaching_only` (a policy's ``scope: breaching``): only the given nodes go back to their target
  weights; their siblings fund them, in proportion to their current values, and every other node keeps
  its value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from rebal.core.diff import DiffTree, roll_up, with_desired
from rebal.core.numbers import VALUE_EPSILON
from rebal.core.tree import FloatArray, IntArray


def cash_above_target(diff: DiffTree) -> float:
    """The free cash above the target cash, in the valuation currency: what the cash wallets hold beyond
    their desired value, plus money being invested (negative when the cash is short of its target)."""
    cash = diff.cash
    current, desired = diff.current_value, diff.desired_value
    known = diff.tree.shape_memo.get("cash nodes")
    if not (isinstance(known, tuple) and known[0] is cash):  # once per shape (a replay's many diffs)
        known = (cash, np.flatnonzero(cash).tolist())
        diff.tree.shape_memo["cash nodes"] = known
    if len(known[1]) == 1:  # one cash wallet (a sum of one is itself): four floats, no array made
        node = known[1][0]
        return (float(current[node]) - float(desired[node])) + (float(desired[0]) - float(current[0]))
    total = np.add.reduce  # (`ndarray.sum` without its Python wrapper: the same pairwise sums)
    surplus = float(total(current[cash]) - total(desired[cash]))
    return surplus + float(desired[0] - current[0])


def buy_only(diff: DiffTree) -> DiffTree:
    """The diff of a buy-only rebalance: cash wallets go to their target, the rest of the cash above it
    buys the underweight wallets, nothing is sold (nothing at all when there is no cash above target)."""
    tree = diff.tree
    current, desired = diff.current_value, diff.desired_value
    cash = diff.cash
    assets = tree.wallet & ~cash
    available = cash_above_target(diff)
    if available <= VALUE_EPSILON * diff.scale:
        return replace(with_desired(diff, roll_up(tree, current)), buy_only=True)
    deficit = np.where(assets, np.maximum(desired - current, 0.0), 0.0)
    wanted = float(deficit.sum())
    if wanted <= available:
        targets = np.where(assets, desired, 0.0)
        total = float(targets.sum())
        rest = targets * ((available - wanted) / total) if total > 0 else 0.0
        bought = deficit + rest
    else:
        bought = deficit * (available / wanted)
    return replace(
        with_desired(diff, roll_up(tree, np.where(cash, desired, current + bought))), buy_only=True
    )


def breaching_only(diff: DiffTree, nodes: Iterable[int]) -> DiffTree:
    """The diff that brings only `nodes` (of `diff.tree`) back to their target weights of their parent.

    Level by level from the root: a listed node takes its desired weight of its parent's new value; the
    parent's remainder goes to the other children in proportion to their current values (by their
    target weights when they hold nothing; to every child when none of them can take it, so that no
    value is lost). A subtree without listed nodes keeps its proportions.
    """
    tree = diff.tree
    count = len(tree)
    listed = np.zeros(count, dtype=np.bool_)
    listed[np.fromiter(nodes, dtype=np.int64)] = True
    listed[0] = False
    current, weight = diff.current_value, diff.desired_weight
    new = np.zeros(count, dtype=np.float64)
    new[0] = diff.desired_value[0]
    for level in tree.levels[1:]:
        parent = tree.parent[level]
        moved = listed[level]
        fixed = np.where(moved, weight[level] * new[parent], 0.0)
        rest = np.maximum(new[parent] - _per_parent(parent, fixed, count), 0.0)
        pools = (
            np.where(moved, 0.0, current[level]),  # the other children, by what they hold
            np.where(moved, 0.0, weight[level]),  # ... by their target weights
            current[level],  # every child, by what it holds
            np.ones(level.size),  # every child alike
        )
        share = np.zeros(level.size)
        placed = np.zeros(level.size, dtype=np.bool_)  # the parent's remainder has found its pool
        for pool in pools:
            total = _per_parent(parent, pool, count)
            use = ~placed & (total > 0)
            share[use] = pool[use] / total[use]
            placed |= use
        new[level] = fixed + rest * share
    return with_desired(diff, roll_up(tree, new))


def _per_parent(parent: IntArray, values: FloatArray, count: int) -> FloatArray:
    """Each child's view of the sum of `values` over its siblings (itself included)."""
    sums = np.bincount(parent, weights=values, minlength=count).astype(np.float64, copy=False)
    return sums[parent]
