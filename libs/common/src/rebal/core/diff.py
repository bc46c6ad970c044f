"""The diff tree: current and desired value of every node, computed level by level on arrays.

Values are in the prices' valuation currency and count only the *free* (unlocked) part of each wallet:
locked parts are carved out and never rebalanced. The desired value of the root is the free total
(a net-zero rebalance), plus `invest` or minus `withdraw`. Going down, a listed child gets its weight of
its parent's desired value; an unlisted child gets nothing (sell all), or keeps its value when the parent
says ``keep_unlisted`` (the listed siblings then share what is left), or scales with its parent when the
desired tree does not list the parent's children at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.numbers import LARGEST, RANGE, VALUE_EPSILON
from rebal.core.tree import BoolArray, FloatArray, IntArray, Tree, assembled
from rebal.core.union import UnionTree, union, union_again

SELL, HOLD, BUY = -1, 0, 1
OPERATION_NAMES = {SELL: "sell", HOLD: "hold", BUY: "buy"}
Int8Array = npt.NDArray[np.int8]


@dataclass(frozen=True, eq=False)
class DiffTree:
    """Per node of the union tree: values, weights, amounts and the operation (-1 sell, 0 hold, +1 buy)."""

    tree: UnionTree
    prices: Prices
    asset_names: list[str]
    asset_id: IntArray
    asset_price: FloatArray
    price: FloatArray
    current_value: FloatArray
    desired_value: FloatArray
    current_weight: FloatArray
    desired_weight: FloatArray
    operation: Int8Array
    free_amount: FloatArray
    desired_free_amount: FloatArray
    band: float
    # A buy-only rebalance (`rebal.core.partial.buy_only`): nothing may be sold, also where pools decide.
    buy_only: bool = False

    @property
    def diff_value(self) -> FloatArray:
        return self.desired_value - self.current_value

    @property
    def diff_amount(self) -> FloatArray:
        return self.desired_free_amount - self.free_amount

    @property
    def desired_amount(self) -> FloatArray:
        return self.desired_free_amount + self.tree.locked

    @property
    def scale(self) -> float:
        """The size of the portfolio, for relative tolerances."""
        return max(float(self.current_value[0]), float(self.desired_value[0]), 1e-300)

    @cached_property
    def account_quote(self) -> IntArray:
        """Per account node, the asset id of the quote it trades against (-1 on every other node)."""
        ids = {name: i for i, name in enumerate(self.asset_names)}
        quote = np.full(len(self.tree), -1, dtype=np.int64)
        for node, (_, name) in self.tree.accounts.items():
            quote[node] = ids[name]
        return quote

    @cached_property
    def cash(self) -> BoolArray:
        """The wallets holding their account's quote: its cash, which trades change but no order moves."""
        tree = self.tree
        cash: BoolArray = tree.wallet & (self.asset_id == self.account_quote[np.maximum(tree.account_of, 0)])
        return cash


def diff_trees(
    real: Tree,
    target: Tree,
    prices: Prices,
    *,
    band: float = 0.0,
    invest: float = 0.0,
    withdraw: float = 0.0,
) -> DiffTree:
    """Compare the real tree with the desired tree. Raises `InputError` for inconsistent input."""
    if band < 0:
        raise InputError("--band", f"must be >= 0, got {band}", "options")
    if invest < 0 or withdraw < 0:
        raise InputError("--invest/--withdraw", "amounts must be >= 0", "options")
    if not (invest <= float(LARGEST) and withdraw <= float(LARGEST)):  # also NaN
        raise InputError("--invest/--withdraw", f"amounts must be within the range {RANGE}", "options")
    tree = union(real, target, prices.quote)
    asset_names, asset_id, asset_price = _asset_prices(tree, prices)
    return _diff(tree, target, prices, (asset_names, asset_id, asset_price), band, invest, withdraw)


def diff_again(diff: DiffTree, real: Tree, *, invest: float = 0.0, withdraw: float = 0.0) -> DiffTree:
    """`diff_trees(real, target, prices, band=...)` of `diff`'s target, prices and band for a `real` tree
    holding no asset `diff` does not know (`diff`'s real tree with empty wallets added: a pool's,
    `rebal.core.where`): the same assets, ids and prices, not looked up again."""
    tree = union_again(diff.tree, real, diff.prices.quote)
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    asset_id = tree.asset_codes.within(ids)
    assert not ((asset_id < 0) & tree.wallet).any(), "a wallet of an asset the diff does not know"
    assets = (diff.asset_names, asset_id, diff.asset_price)
    made = _diff(tree, diff.tree.target, diff.prices, assets, diff.band, invest, withdraw)
    if len(diff.tree) == len(diff.tree.real) and len(tree) == len(real) and "account_quote" in diff.__dict__:
        # Both unions are their real trees (no desired-only node): the old nodes kept their places and
        # the new ones are wallets, so the accounts' quotes are the old ones.
        quote = np.full(len(tree), -1, dtype=np.int64)
        quote[: len(diff.tree)] = diff.account_quote
        made.__dict__["account_quote"] = quote
    return made


@dataclass(frozen=True, eq=False)
class DiffShape:
    """A real tree's shape matched to a target once: the union tree and its asset ids, for diffs of the
    same holdings at other amounts and prices (a replay diffs one shape at thousands of rows). A diff made
    here is the one `diff_trees` makes: the same code after the match."""

    tree: UnionTree
    target: Tree
    asset_names: list[str]
    asset_id: IntArray
    _derived: dict[str, IntArray | BoolArray] = field(default_factory=dict)  # per shape: quotes, cash

    @classmethod
    def of(cls, real: Tree, target: Tree, prices: Prices) -> DiffShape:
        """The shape of `real` against `target`; `prices` must price every asset (as `diff_trees`)."""
        tree = union(real, target, prices.quote)
        asset_names, asset_id, _ = _asset_prices(tree, prices)
        return cls(tree, target, asset_names, asset_id)

    def price_table(self, prices: Prices) -> FloatArray:
        """`prices` per asset id (`asset_names`) as floats: what `diff` takes."""
        return _price_table(self.tree, self.asset_names, prices)

    def diff(self, real: Tree, prices: Prices, asset_price: FloatArray) -> DiffTree:
        """`diff_trees(real, target, prices)` for `real` of this shape (the same nodes; other amounts),
        `asset_price` the prices per asset id (`asset_names`) as floats."""
        if len(real) != len(self.tree.real) or asset_price.size != len(self.asset_names):
            raise ValueError("the real tree or the prices are not of this shape")
        tree = self.tree.with_real(real)
        made = _diff(tree, self.target, prices, (self.asset_names, self.asset_id, asset_price), 0.0, 0.0, 0.0)
        if self._derived:
            made.__dict__.update(self._derived)  # cached properties of the shape: the same for every diff
        else:
            self._derived.update(account_quote=made.account_quote, cash=made.cash)
        return made


def _diff(
    tree: UnionTree,
    target: Tree,
    prices: Prices,
    assets: tuple[list[str], IntArray, FloatArray],
    band: float,
    invest: float,
    withdraw: float,
) -> DiffTree:
    count = len(tree)
    asset_names, asset_id, asset_price = assets
    small = _SmallDescent.of(tree, target)
    if small is not None:
        return small.diff(tree, prices, assets, band, invest, withdraw)
    price = _node_prices(tree, asset_id, asset_price)
    free = np.where(tree.wallet, tree.amount - tree.locked, 0.0)
    free = np.maximum(free, 0.0)
    current = roll_up(tree, free * price)

    desired = np.zeros(count, dtype=np.float64)
    desired[0] = _desired_root(float(current[0]), invest, withdraw)
    fixed = _fixed_levels(tree, target)
    if fixed is not None:  # `_Descent`'s assignments alone: nothing else of it applies to this target
        for nodes, parents, weight, listed, factor in fixed:
            share = weight * np.maximum(desired[parents], 0.0)
            desired[nodes] = share if listed is None else np.where(listed, share, current[nodes] * factor)
    else:
        descent = _Descent.start(tree, target, current, desired)
        for level in descent.levels[1:]:
            descent.assign(level)
    above = current[tree.parent_or_root]
    current_weight = share_of(current, above)
    current_weight[0] = 1.0 if current[0] > 0 else 0.0
    side = _desired_side(tree, price, current, desired, band)
    return assembled(
        DiffTree,
        tree=tree,
        prices=prices,
        asset_names=asset_names,
        asset_id=asset_id,
        asset_price=asset_price,
        price=price,
        current_value=current,
        desired_value=side.desired_value,
        current_weight=current_weight,
        desired_weight=side.desired_weight,
        operation=side.operation,
        free_amount=free,
        desired_free_amount=side.desired_free_amount,
        band=band,
        buy_only=False,
    )


def _desired_root(current: float, invest: float, withdraw: float) -> float:
    """The root's desired value: its current value, plus `invest`, less `withdraw` (never below 0)."""
    desired = current + invest - withdraw
    if desired < -VALUE_EPSILON * max(current, 1.0):
        raise InputError(
            "--withdraw", f"withdrawing {withdraw} exceeds the free total {current:.8f}", "options"
        )
    return max(desired, 0.0)


def share_of(part: FloatArray, whole: FloatArray) -> FloatArray:
    """`part / whole` where `whole` > 0, else 0: a plain division where every `whole` is (nearly always;
    a masked division costs several times as much), the same quotients."""
    positive = whole > 0
    if np.count_nonzero(positive) == positive.size:
        plain: FloatArray = part / whole
        return plain
    found: FloatArray = np.divide(
        part, whole, out=np.zeros(np.broadcast_shapes(part.shape, whole.shape)), where=positive
    )
    return found


_NO_PRICE = np.zeros(1)


def _node_prices(tree: UnionTree, asset_id: IntArray, asset_price: FloatArray) -> FloatArray:
    """Per node its asset's price, 0.0 where it has no asset: the table with a 0.0 appended, read at an
    index kept per shape (a replay diffs one shape at every rebalance)."""
    known = tree.shape_memo.get("price index")
    if not (isinstance(known, tuple) and known[0] is asset_id and known[1] == asset_price.size):
        known = (asset_id, asset_price.size, np.where(asset_id >= 0, asset_id, asset_price.size))
        tree.shape_memo["price index"] = known
    price: FloatArray = np.concatenate((asset_price, _NO_PRICE))[known[2]]
    return price


def with_desired(diff: DiffTree, desired: FloatArray) -> DiffTree:
    """The same comparison with other desired values (one per node, children summing to their parent):
    the desired weights, the desired amounts and the operations follow from them."""
    side = _desired_side(diff.tree, diff.price, diff.current_value, desired, diff.band)
    changed = replace(diff, **side._asdict())
    # What follows from the nodes and assets alone, already read, is the same: kept (per account, a
    # where plan reads them on every diff it places).
    for name in _OF_NODES:
        if name in diff.__dict__:
            changed.__dict__[name] = diff.__dict__[name]
    return changed


# `DiffTree`'s cached properties that read only the tree and the asset ids (not the desired side).
_OF_NODES = ("account_quote", "cash")


class _DesiredSide(NamedTuple):
    desired_value: FloatArray
    desired_weight: FloatArray
    operation: Int8Array
    desired_free_amount: FloatArray


def _desired_side(
    tree: UnionTree, price: FloatArray, current: FloatArray, desired: FloatArray, band: float
) -> _DesiredSide:
    """Weights of the parent, amounts and operations (a difference within the band holds) of `desired`."""
    above = desired[tree.parent_or_root]
    desired_weight = share_of(desired, above)
    desired_free = np.divide(desired, price, out=np.zeros(desired.size), where=tree.wallet & (price > 0))
    desired_weight[0] = 1.0 if desired[0] > 0 else 0.0
    delta = desired - current
    threshold = np.maximum(band * desired, VALUE_EPSILON * max(float(current[0]), float(desired[0]), 1.0))
    # BUY (1) above the threshold, SELL (-1) below minus it (the threshold is positive), else HOLD (0).
    operation: Int8Array = (delta > threshold).view(np.int8) - (delta < -threshold).view(np.int8)
    return _DesiredSide(desired, desired_weight, operation, desired_free)


def roll_up(tree: UnionTree, values: FloatArray) -> FloatArray:
    """Per node, the sum of `values` over its wallets (the values of portfolio nodes are ignored)."""
    total = np.where(tree.wallet, values, 0.0)
    count = len(tree)
    for level, parents in _roll_levels(tree):
        total += np.bincount(parents, weights=total[level], minlength=count)
    return total


def _roll_levels(tree: UnionTree) -> list[tuple[IntArray | slice, IntArray]]:
    """`roll_up`'s levels, deepest first (the root's aside), each with its nodes' parents; a level of
    consecutive nodes as a slice (read as a view, not gathered): per shape, in its `shape_memo`."""
    known = tree.shape_memo.get("roll levels")
    if isinstance(known, list):
        return known
    found: list[tuple[IntArray | slice, IntArray]] = []
    for level in reversed(tree.levels[1:]):
        consecutive = level.size > 0 and int(level[-1]) - int(level[0]) == level.size - 1
        if consecutive and level.size > 1:
            consecutive = bool(np.all(np.diff(level) == 1))
        nodes: IntArray | slice = slice(int(level[0]), int(level[-1]) + 1) if consecutive else level
        found.append((nodes, tree.parent[level]))
    tree.shape_memo["roll levels"] = found
    return found


def _fixed_levels(
    tree: UnionTree, target: Tree
) -> list[tuple[IntArray, IntArray, FloatArray, BoolArray | None, FloatArray]] | None:
    """Where the target fixes every node's share (`_SmallDescent`'s trees, of any size: no node whose
    unlisted children scale with its values, none keeping them, no value to strand), `_Descent`'s levels
    below the root as it assigns them: nodes, parents, weights, and for a level with unlisted nodes which
    are listed and the factor the others take of their current value (None: every node listed). Per
    shape and target, in the union's `shape_memo`."""
    key = ("fixed levels", id(target))
    known = tree.shape_memo.get(key)
    if isinstance(known, tuple) and known[0] is target:
        found: list[tuple[IntArray, IntArray, FloatArray, BoolArray | None, FloatArray]] | None = known[1]
        return found
    shape = _TargetShape.of(tree, target)
    made = None
    if not shape.keeps and not any(level.scaling.size or level.may_strand.size for level in shape.levels):
        made = []
        for level in shape.levels[1:]:
            assert level.factor is not None, "no parent scales: the target fixes every factor"
            listed = None if level.listed else level.listed_nodes
            made.append((level.nodes, level.parents, level.weight, listed, level.factor))
    tree.shape_memo[key] = (target, made)  # the target kept: its id stays its own
    return made


@dataclass(eq=False)
class _Descent:
    """Desired values handed down one level at a time.

    A listed child takes its weight of what its parent hands to listed children; an unlisted child takes
    `factor * current`, where the factor is 1 (parent keeps unlisted), 0 (sell all) or the parent's own
    desired/current ratio (the desired tree does not list the parent's children).
    """

    tree: UnionTree
    current: FloatArray
    desired: FloatArray
    listed: npt.NDArray[np.bool_]
    lists_children: npt.NDArray[np.bool_]
    keep: npt.NDArray[np.bool_]
    weight: FloatArray
    kept: FloatArray | None  # None: no node keeps unlisted children (what they keep is 0 everywhere)
    factor: FloatArray
    child_factor: FloatArray
    tolerance: float
    levels: list[_Level]

    @classmethod
    def start(cls, tree: UnionTree, target: Tree, current: FloatArray, desired: FloatArray) -> _Descent:
        count = len(tree)
        shape = _TargetShape.of(tree, target)
        kept: FloatArray | None = None
        if shape.keeps:
            held = np.bincount(shape.unlisted_parent, weights=current[shape.unlisted], minlength=count)
            kept = np.where(shape.keep, held, 0.0)
        descent = cls(
            tree=tree,
            current=current,
            desired=desired,
            listed=shape.listed,
            lists_children=shape.lists_children,
            keep=shape.keep,
            weight=shape.weight,
            kept=kept,
            factor=np.full(count, np.nan),
            child_factor=shape.child_factor.copy(),
            tolerance=VALUE_EPSILON * max(float(current[0]), float(desired[0]), 1.0),
            levels=shape.levels,
        )
        descent.hand_down(shape.levels[0])
        return descent

    def assign(self, level: _Level) -> None:
        nodes, parents = level.nodes, level.parents
        handed = self.desired[parents] if self.kept is None else self.desired[parents] - self.kept[parents]
        share = level.weight * np.maximum(handed, 0.0)
        if level.listed:  # every node takes its weight of its parent (its factor stays NaN)
            self.desired[nodes] = share
        else:
            listed, factor = level.listed_nodes, level.factor
            if factor is None:  # a parent's factor the values decided (`hand_down`)
                factor = np.where(listed, np.nan, self.child_factor[parents])
            self.factor[nodes] = factor
            self.desired[nodes] = np.where(listed, share, self.current[nodes] * factor)
        self.hand_down(level)

    def hand_down(self, level: _Level) -> None:
        """The factor each node of `level` hands its unlisted children (`_TargetShape.child_factor` where
        the target alone fixes it; read from the values for `level.scaling`, the other nodes with
        children), and a node that may strand value checked."""
        nodes = level.scaling
        if nodes.size:
            current, desired = self.current[nodes], self.desired[nodes]
            scaled = np.divide(desired, current, out=np.zeros(nodes.size), where=current > 0)
            own = np.where(self.lists_children[nodes], np.where(self.keep[nodes], 1.0, 0.0), scaled)
            self.child_factor[nodes] = np.where(self.listed[nodes], own, self.factor[nodes])
        nodes = level.may_strand
        if not nodes.size:
            return
        current, desired = self.current[nodes], self.desired[nodes]
        stranded = nodes[(current <= 0) & (desired > self.tolerance)]
        if stranded.size:
            raise InputError(
                self.tree.path(int(stranded[0])),
                "desired value but nothing held to scale: list this portfolio's children with weights",
                "target",
            )


class _TargetShape(NamedTuple):
    """What the descent reads of the target per node of a union tree: the same for every diff of one
    shape (kept in the union's `shape_memo`: a replay diffs one shape at many rows)."""

    listed: BoolArray
    lists_children: BoolArray
    keep: BoolArray
    weight: FloatArray
    unlisted: IntArray  # nodes the target does not list (the root aside), and their parents
    unlisted_parent: IntArray
    keeps: bool  # a node keeps unlisted children (`keep_unlisted`) it has
    # Per node listed with its children listed, the factor it hands unlisted children: 1 (keep) or 0.
    child_factor: FloatArray
    levels: list[_Level]

    @classmethod
    def of(cls, tree: UnionTree, target: Tree) -> _TargetShape:
        key = ("target shape", id(target))
        known = tree.shape_memo.get(key)
        if isinstance(known, tuple) and known[0] is target:
            shape: _TargetShape = known[1]
            return shape
        listed = tree.target_index >= 0
        target_of = np.maximum(tree.target_index, 0)
        keep = listed & target.keep_unlisted[target_of]
        lists_children = listed & target.lists_children[target_of]
        unlisted = np.flatnonzero(~listed & (tree.parent >= 0))
        # A node holding a pool gets its accounts' values from `rebal.core.pools`.
        pool = (
            listed & np.isin(target_of, list(target.pools)) if target.pools else np.zeros(len(tree), np.bool_)
        )
        weight = np.where(listed, target.weight[target_of], np.nan)
        # Listed portfolios that scale their own children (no pool): nothing held there cannot be scaled.
        may_strand = listed & ~lists_children & ~tree.wallet & ~pool
        fixed = listed & lists_children
        has_children = np.bincount(tree.parent[1:], minlength=len(tree)) > 0
        scaling = has_children & ~fixed
        parent = tree.parent
        child_factor = np.where(fixed & keep, 1.0, 0.0)
        shape = cls(
            listed=listed,
            lists_children=lists_children,
            keep=keep,
            weight=weight,
            unlisted=unlisted,
            unlisted_parent=tree.parent[unlisted],
            keeps=bool(keep[tree.parent[unlisted]].any()),
            child_factor=child_factor,
            levels=[
                _Level(
                    level,
                    parent[level],
                    weight[level],
                    bool(listed[level].all()),
                    level[scaling[level]],
                    level[may_strand[level]],
                    listed[level],
                    None
                    if (parent[level] < 0).any() or scaling[parent[level]].any()  # (the root: no parent)
                    else np.where(listed[level], np.nan, child_factor[parent[level]]),
                )
                for level in tree.levels
            ],
        )
        tree.shape_memo[key] = (target, shape)  # the target kept: its id stays its own
        return shape


# Union trees up to this many nodes whose target fixes every share are diffed in Python floats
# (`_SmallDescent`): a replay diffs a small portfolio thousands of times, and numpy's per-call cost
# outweighs its arithmetic there.
SMALL_NODES = 48


@dataclass(frozen=True)
class _SmallDescent:
    """The descent and the roll-up of a small union tree whose target fixes every node's share (no node
    whose unlisted children scale with its values, none keeping them, no value to strand) in Python
    floats: the same operations on the same floats in the same order as `roll_up` (`np.bincount` adds
    each level's children in order) and `_Descent`, so the same values (tests/core/test_diff_small.py)."""

    wallet: list[bool]
    wallet_nodes: list[int]
    # Per level, deepest first: each parent of the level's nodes with its children there, in order.
    roll_levels: list[list[tuple[int, list[int]]]]
    # Per level, the root's children first: (node, parent, weight, factor); an unlisted node (weight NaN)
    # takes `factor` times its current value, its parent's fixed `_TargetShape.child_factor` (1 or 0).
    steps: list[tuple[int, int, float, float | None]]
    parent_or_root: list[int]

    @classmethod
    def of(cls, tree: UnionTree, target: Tree) -> _SmallDescent | None:
        """The small descent of `tree` against `target`, or None where the general one is needed."""
        key = ("small descent", id(target))
        known = tree.shape_memo.get(key)
        if isinstance(known, tuple) and known[0] is target:
            found: _SmallDescent | None = known[1]
            return found
        shape = _TargetShape.of(tree, target)
        simple = (
            len(tree) <= SMALL_NODES
            and not shape.keeps
            and not any(level.scaling.size or level.may_strand.size for level in shape.levels)
        )
        made = None
        if simple:
            parent = tree.parent.tolist()
            listed, factor = shape.listed.tolist(), shape.child_factor.tolist()
            made = cls(
                wallet=tree.wallet.tolist(),
                wallet_nodes=np.flatnonzero(tree.wallet).tolist(),
                roll_levels=[
                    _children_by_parent(level.tolist(), parent) for level in reversed(tree.levels[1:])
                ],
                steps=[
                    (n, p, w, None if listed[n] else factor[p])
                    for level in shape.levels[1:]
                    for n, p, w in zip(
                        level.nodes.tolist(), level.parents.tolist(), level.weight.tolist(), strict=True
                    )
                ],
                parent_or_root=tree.parent_or_root.tolist(),
            )
        tree.shape_memo[key] = (target, made)  # the target kept: its id stays its own
        return made

    def prices_and_free(
        self, asset_id: IntArray, asset_price: FloatArray, tree: UnionTree
    ) -> tuple[list[float], list[float]]:
        """Per node, its asset's price (0 where none) and its free amount (a wallet's amount less what
        is locked, at least 0; 0 elsewhere), as `_diff` makes them on arrays (`np.maximum`: NaN stays)."""
        table = asset_price.tolist()
        table.append(0.0)  # what the id -1 (no asset) reads
        price = [table[i] for i in asset_id.tolist()]
        free = [0.0] * len(price)
        amount, locked = tree.amount.tolist(), tree.locked.tolist()
        for node in self.wallet_nodes:
            left = amount[node] - locked[node]
            free[node] = left if left > 0.0 or math.isnan(left) else 0.0  # np.maximum(left, 0.0)
        return price, free

    def roll_up(self, values: list[float]) -> list[float]:
        """`roll_up(tree, values)`. Each level's pass adds its sums (0 where a node has no child there)
        to every node: the first turns -0.0 into 0.0 and changes nothing else, the later ones change
        only the parents (x + 0.0 is x but for -0.0), so only those are added."""
        if not self.roll_levels:
            return [v if wallet else 0.0 for v, wallet in zip(values, self.wallet, strict=True)]
        total = [v + 0.0 if wallet else 0.0 for v, wallet in zip(values, self.wallet, strict=True)]
        for level in self.roll_levels:
            for parent, children in level:
                added = 0.0  # `np.bincount`: from 0.0, the children in order
                for child in children:
                    added += total[child]
                total[parent] += added
        return total

    def descend(self, current: list[float], root: float) -> list[float]:
        """The desired values handed down from the root's `root` (`_Descent`)."""
        desired = [0.0] * len(self.wallet)
        desired[0] = root
        for node, parent, weight, factor in self.steps:
            desired[node] = weight * max(desired[parent], 0.0) if factor is None else current[node] * factor
        return desired

    def diff(
        self,
        tree: UnionTree,
        prices: Prices,
        assets: tuple[list[str], IntArray, FloatArray],
        band: float,
        invest: float,
        withdraw: float,
    ) -> DiffTree:
        """`_diff` of a tree this descent fits, in Python floats; its float columns made as one array
        (each field a row of it: one numpy call instead of seven)."""
        asset_names, asset_id, asset_price = assets
        price, free = self.prices_and_free(asset_id, asset_price, tree)
        current = self.roll_up([f * p for f, p in zip(free, price, strict=True)])
        desired = self.descend(current, _desired_root(current[0], invest, withdraw))
        desired_weight = self.weights(desired)
        desired_free = [
            value / each if wallet and each > 0 else 0.0
            for value, each, wallet in zip(desired, price, self.wallet, strict=True)
        ]
        columns = np.array(
            [price, free, current, self.weights(current), desired, desired_weight, desired_free],
            dtype=np.float64,
        )
        return assembled(
            DiffTree,
            tree=tree,
            prices=prices,
            asset_names=asset_names,
            asset_id=asset_id,
            asset_price=asset_price,
            price=columns[0],
            current_value=columns[2],
            desired_value=columns[4],
            current_weight=columns[3],
            desired_weight=columns[5],
            operation=np.array(self.operations(current, desired, band), dtype=np.int8),
            free_amount=columns[1],
            desired_free_amount=columns[6],
            band=band,
            buy_only=False,
        )

    @staticmethod
    def operations(current: list[float], desired: list[float], band: float) -> list[int]:
        """`_desired_side`'s operations (a threshold is the larger of the two, NaN if either is, as
        `np.maximum`)."""
        least = VALUE_EPSILON * max(current[0], desired[0], 1.0)
        unknown = math.isnan(least)
        operation = []
        if band == 0.0 and not unknown:  # (a replay's): the threshold is `least` where `want` is finite
            for have, want in zip(current, desired, strict=True):
                delta = want - have
                finite = -math.inf < want < math.inf  # else 0 * want is NaN: so is the threshold
                operation.append(1 if finite and delta > least else -1 if finite and delta < -least else 0)
        else:
            for have, want in zip(current, desired, strict=True):
                banded = band * want
                threshold = math.nan if math.isnan(banded) or unknown else max(banded, least)
                delta = want - have
                operation.append(1 if delta > threshold else -1 if delta < -threshold else 0)
        return operation

    def weights(self, current: list[float]) -> list[float]:
        """The current weights of each node in its parent (the root's: 1 where it holds anything)."""
        found = [
            value / above if above > 0 else 0.0
            for value, above in zip(current, [current[p] for p in self.parent_or_root], strict=True)
        ]
        found[0] = 1.0 if current[0] > 0 else 0.0
        return found


def _children_by_parent(level: list[int], parent: list[int]) -> list[tuple[int, list[int]]]:
    """The parents of a level's nodes, each with its children in the level's order."""
    children: dict[int, list[int]] = {}
    for node in level:
        children.setdefault(parent[node], []).append(node)
    return list(children.items())


class _Level(NamedTuple):
    """One level of the descent, as the target's shape has it."""

    nodes: IntArray
    parents: IntArray
    weight: FloatArray  # the nodes' target weights (NaN where unlisted)
    listed: bool  # the target lists every node of the level
    scaling: IntArray  # nodes with children whose factor for them the values decide
    may_strand: IntArray  # see `_TargetShape`
    listed_nodes: BoolArray  # which of the nodes the target lists
    # The factor each node takes of its current value (NaN where listed) when no parent of the level
    # scales: the target alone fixes it (None: some parent's factor is read from the values).
    factor: FloatArray | None


def _asset_prices(tree: UnionTree, prices: Prices) -> tuple[list[str], IntArray, FloatArray]:
    """Asset ids (alphabetical) and the price table; every asset and account quote needs a price."""
    vocabulary = tree.asset_codes.vocabulary
    quotes = {quote for _, quote in tree.accounts.values()}
    # What a pool names may be held nowhere yet (`rebal.core.pools`).
    pooled = {asset for weights in tree.target.pools.values() for asset, _ in weights}
    names = sorted(set(vocabulary) | quotes | pooled)
    ids = {name: i for i, name in enumerate(names)}
    return names, tree.asset_codes.within(ids), _price_table(tree, names, prices)


def _price_table(tree: UnionTree, names: list[str], prices: Prices) -> FloatArray:
    table = np.zeros(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        value = prices.get(name)
        if value is None:
            raise InputError(
                f"prices.{name}", f"no price for asset {name} (used at {_first_use(tree, name)})", "prices"
            )
        table[i] = float(value)
    return table


def _first_use(tree: UnionTree, asset: str) -> str:
    for node, weights in sorted(tree.target.pools.items()):
        if any(name == asset for name, _ in weights):
            return f"the pool at {tree.target.path(node)}"
    if asset in tree.asset_codes.vocabulary:
        code = tree.asset_codes.vocabulary.index(asset)
        return tree.path(int(np.argmax(tree.asset_codes.ids == code)))
    for node, (_, quote) in sorted(tree.accounts.items()):
        if quote == asset:
            return tree.path(node)
    return asset
