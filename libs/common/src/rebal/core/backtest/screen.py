"""The vectorised screen: a policy's trigger over many rows at once, while the holdings stay the same.

Between two trades the holdings are fixed and only prices move, so every node's current value over a
block of rows is one product and one cumulative sum (the real tree is in pre-order: a node's wallets
are a contiguous run). What the screen must know about the desired side it learns from the core itself,
once per tree shape: two diffs (`diff_trees`) at different prices tell which nodes keep a fixed desired
weight (listed nodes: their target weight) and which scale with their own current weight (children of
a desired node that does not list them); bands come from `find_breaches` on a diff whose every node
drifts. A node that is neither, or a target that keeps unlisted children (`keep_unlisted`, whose listed
siblings' weights move with prices), makes the screen step aside: every row then goes to the core.

The screen only proposes rows. It flags a row whose drift comes within `MARGIN` of a limit, whose cash
comes within `MARGIN` of its threshold, or whose schedule or cooldown says so; the replay evaluates each
proposed row with `rebal.core.policy.evaluate`, exactly as `rebal trigger` does, and that decides. A row
it does not propose is one the core would not fire on: float noise in the sums is far below `MARGIN`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cached_property

import numpy as np

from rebal.core.backtest.book import Book
from rebal.core.backtest.history import History
from rebal.core.diff import DiffShape, DiffTree, share_of
from rebal.core.market import Prices
from rebal.core.numbers import VALUE_EPSILON
from rebal.core.policy import DRIFT_TOLERANCE, Policy, find_breaches
from rebal.core.tree import BoolArray, FloatArray, IntArray, Tree, assembled

# A weight drift or a cash surplus this close to its limit is handed to the core to decide.
MARGIN = 1e-9
# Two desired weights this close are the same weight (the probes' float noise is ~1e-16).
SAME_WEIGHT = 1e-12
# The second probe's prices: each asset's price times a factor in [0.5, 1.5) (golden-ratio sequence).
GOLDEN = 0.6180339887498949
# Every node drifts this far in the probe that reads the bands' limits.
PROBE_DRIFT = 1e9
# Columns of a block (union nodes): a slice or an index array.
Columns = slice | IntArray
# Rows the screen values at once (more when the tree is small): its arrays stay in the cache (~64k cells
# measured fastest per cell at 500 assets: twice as fast as 2 million), with few numpy calls.
BLOCK_CELLS = 65_536
# Sets of screens whose checks a `Batch` keeps; then it starts again.
BATCHES_KEPT = 64


@dataclass(frozen=True, eq=False)
class Block:
    """The screen's view of `rows` (a range of history rows) with the holdings fixed."""

    start: int
    value: FloatArray  # the portfolio's free value per row
    drift: FloatArray  # the largest |current - desired| share of any wallet, per row (fraction)
    breach: BoolArray  # a node within MARGIN of a band, or beyond it
    cash_above: FloatArray  # free cash above the target cash (valuation currency)


@dataclass(frozen=True, eq=False)
class Screen:
    """What the screen knows about one tree shape under one policy (see the module's docstring)."""

    fast: bool
    n_real: int
    n_union: int
    end: IntArray  # per real node: one past its subtree (pre-order)
    # The book's wallets priced by the history (their positions, their assets' history columns, their
    # columns in the running sums: their real node + 1), and those holding the valuation currency.
    priced: tuple[Columns, Columns, Columns]
    unpriced: tuple[Columns, Columns]  # (positions, columns in the running sums)
    # Per level below the root: its nodes, their columns and their parents' (`_columns`), and their
    # fixed desired weights when every node of the level keeps one (None: some scale with their weight).
    shares: list[tuple[IntArray, Columns, Columns, FloatArray | None]]
    fixed: BoolArray
    desired_weight: FloatArray
    limit: FloatArray
    cash: IntArray  # the cash wallets' union nodes
    wallets: Columns  # every union wallet node
    checked: IntArray  # fixed nodes with a finite limit (the ones a band can fire on)
    checked_columns: tuple[Columns, Columns]  # theirs and their parents'
    checked_weight: FloatArray  # their desired weights
    checked_near: FloatArray  # the drift that comes within MARGIN of their limit
    parent: IntArray  # per union node its parent (the root's: 0)

    @classmethod
    def build(
        cls, book: Book, target: Tree, history: History, row: int, policy: Policy, shape: DiffShape
    ) -> Screen:
        """What the screen knows of `book`'s shape (`shape`: its match to `target`) under `policy`."""
        # Every wallet holds something (its amount as the document has it, plus one): scaling shows.
        probe = book.tree_of(np.where(book.amount > 0, book.amount, 0.0) + 1.0)
        prices = history.row_prices(row)
        moved = _moved(prices)
        first = shape.diff(probe, prices, shape.price_table(prices))
        second = shape.diff(probe, moved, shape.price_table(moved))
        tree = first.tree
        count = len(tree)
        n_real = len(tree.real)
        same = np.abs(first.desired_weight - second.desired_weight) <= SAME_WEIGHT
        scaling = (
            ~same
            & (np.abs(first.desired_weight - first.current_weight) <= SAME_WEIGHT)
            & (np.abs(second.desired_weight - second.current_weight) <= SAME_WEIGHT)
        )
        fast = bool((same | scaling)[1:].all()) and not bool(target.keep_unlisted.any())
        limit = np.full(count, math.inf)
        drifting = replace(first, current_weight=first.desired_weight + PROBE_DRIFT)
        for breach in find_breaches(drifting, policy):
            limit[breach.node] = breach.limit
        fixed = same.copy()
        fixed[0] = False
        columns = [history.column(asset) for asset in _assets(book)]
        wallet_column = np.array([-1 if c is None else c for c in columns], dtype=np.int64)
        spread_column = np.flatnonzero(tree.real.wallet) + 1
        priced, unpriced = (wallet_column >= 0).nonzero()[0], (wallet_column < 0).nonzero()[0]
        parent = np.maximum(tree.parent, 0)
        desired_weight = np.where(fixed, first.desired_weight, 0.0)
        checked = np.flatnonzero(fixed & np.isfinite(limit))
        return cls(
            fast=fast,
            n_real=n_real,
            n_union=count,
            end=_subtree_ends(tree.real.parent),
            priced=(_columns(priced), _columns(wallet_column[priced]), _columns(spread_column[priced])),
            unpriced=(_columns(unpriced), _columns(spread_column[unpriced])),
            shares=[
                (
                    level,
                    _columns(level),
                    _columns(parent[level]),
                    desired_weight[level] if fixed[level].all() else None,
                )
                for level in tree.levels[1:]
            ],
            fixed=fixed,
            desired_weight=desired_weight,
            limit=limit,
            cash=np.flatnonzero(first.cash),
            wallets=_columns(np.flatnonzero(tree.wallet)),
            checked=checked,
            checked_columns=(_columns(checked), _columns(parent[checked])),
            checked_weight=desired_weight[checked],
            checked_near=limit[checked] + DRIFT_TOLERANCE - MARGIN,
            parent=parent,
        )

    @cached_property
    def fixed_weights(self) -> list[tuple[int, float]]:
        """The nodes whose desired weight the screen took for fixed, with that weight."""
        nodes = self.fixed.nonzero()[0]
        return list(zip(nodes.tolist(), self.desired_weight[nodes].tolist(), strict=True))

    def block_rows(self) -> int:
        return int(max(16, min(4096, BLOCK_CELLS // max(self.n_union, 1))))

    def scan(self, history: History, free: FloatArray, start: int, stop: int) -> Block:
        """Values, drift, band proximity and cash over rows start..stop-1 of `history`."""
        checked = (self.checked_columns, self.checked_weight, self.checked_near)
        return self._scan(history.prices[start:stop], start, free, checked)

    @cached_property
    def structure(self) -> tuple[object, ...]:
        """What `_scan` reads of the tree's shape (not of the policy): screens with the same structure
        scan their rows together (`scan_many`)."""

        def key(columns: Columns | FloatArray | BoolArray | None) -> object:
            if columns is None:
                return None
            if isinstance(columns, slice):  # (hashable from Python 3.12 only)
                return (columns.start, columns.stop, columns.step)
            return (columns.dtype.str, columns.tobytes())

        return (
            self.n_real,
            self.n_union,
            key(self.end),
            tuple(key(c) for c in self.priced),
            tuple(key(c) for c in self.unpriced),
            tuple(tuple(key(c) for c in level) for level in self.shares),
            key(self.fixed),
            key(self.desired_weight),
            key(self.cash),
            key(self.wallets),
        )

    def _scan(
        self,
        prices: FloatArray,
        start: int,
        free: FloatArray,
        checked: tuple[tuple[Columns, Columns], FloatArray, FloatArray],
    ) -> Block:
        """`scan` of `prices` (rows), `free` the wallets' free amounts (one row of them for every row,
        or per row) and `checked` the checked nodes' and their parents' columns, their desired weights
        and the drift within MARGIN of their limits (per node, or per row and node). Every figure of a
        row is made from that row alone: a row comes out the same whatever rows are scanned with it."""
        spread = np.zeros((prices.shape[0], self.n_real + 1))  # each wallet's value, by real node + 1
        wallets, columns, at = self.priced
        spread[:, at] = prices[:, columns] * free[..., wallets]
        wallets, at = self.unpriced
        spread[:, at] = free[..., wallets]  # the valuation currency, priced 1: the amounts themselves
        sums = np.cumsum(spread, axis=1)
        if self.n_union == self.n_real:  # no node of the target's alone (holding nothing)
            value = sums[:, self.end] - sums[:, : self.n_real]
        else:
            value = np.zeros((prices.shape[0], self.n_union))
            value[:, : self.n_real] = sums[:, self.end] - sums[:, : self.n_real]

        def weight(nodes: Columns, parents: Columns) -> FloatArray:
            """The current weights of `nodes` in their `parents`, per row (only where they are needed)."""
            part, above = value[:, nodes], value[:, parents]
            return share_of(part, above)

        desired = np.empty_like(value)  # every column is written: the root, then level by level
        desired[:, 0] = value[:, 0]
        for level, columns, up, fixed_share in self.shares:
            share = (
                fixed_share
                if fixed_share is not None
                else np.where(self.fixed[level], self.desired_weight[level], weight(columns, up))
            )
            desired[:, columns] = desired[:, up] * share
        root = value[:, 0]
        (nodes, parents), checked_weight, checked_near = checked
        if checked_near.shape[-1]:
            drift = np.abs(weight(nodes, parents) - checked_weight)
            near = (drift > checked_near).any(axis=1)
        else:
            near = np.zeros(root.size, dtype=np.bool_)
        cash_above = (value[:, self.cash] - desired[:, self.cash]).sum(axis=1)
        shares = np.abs(value[:, self.wallets] - desired[:, self.wallets]).max(axis=1, initial=0.0)
        wallet_drift = share_of(shares, root)
        breach = near | (root <= 0)
        return assembled(
            Block, start=start, value=root, drift=wallet_drift, breach=breach, cash_above=cash_above
        )


# The checked nodes' and their parents' columns, their desired weights, the drift near their limits.
Checks = tuple[tuple[Columns, Columns], FloatArray, FloatArray]


class Batch:
    """Scans of many policies' screens at once (`scan_many`): what a set of screens with the same
    structure checks, kept per set (the same policies ask round after round)."""

    def __init__(self) -> None:
        self._checks: dict[tuple[int, ...], tuple[list[Screen], Checks]] = {}
        self._structures: dict[tuple[object, ...], int] = {}
        self._kind: dict[int, tuple[Screen, int]] = {}

    def kind(self, screen: Screen) -> int:
        """A number per `structure`, kept per screen (a structure's tuple is hashed once a screen)."""
        known = self._kind.get(id(screen))
        if known is not None and known[0] is screen:
            return known[1]
        kind = self._structures.setdefault(screen.structure, len(self._structures))
        self._kind[id(screen)] = (screen, kind)  # the screen kept: its id stays its own
        return kind

    def scan_many(self, history: History, requests: list[tuple[Screen, FloatArray, int, int]]) -> list[Block]:
        """`Screen.scan` of each (screen, free, start, stop), the screens of one `structure`, in one
        pass over all their rows: each row's figures are made from that row alone, as `scan` makes
        them, so each block is the same."""
        if len(requests) == 1:
            screen, free, start, stop = requests[0]
            return [screen.scan(history, free, start, stop)]
        screen = requests[0][0]
        counts = [stop - start for _, _, start, stop in requests]
        firsts, done = [], 0  # where each request's rows begin among all of them
        for count in counts:
            firsts.append(done)
            done += count
        shift = [start - first for (_, _, start, _), first in zip(requests, firsts, strict=True)]
        rows = np.arange(done) + np.repeat(np.array(shift), counts)
        free = np.repeat(np.array([free for _, free, _, _ in requests]), counts, axis=0)
        columns, weight, near = self._checks_of([s for s, _, _, _ in requests])
        checked = (columns, weight, np.repeat(near, counts, axis=0))
        block = screen._scan(history.prices[rows], 0, free, checked)
        value, drift, breach, cash = block.value, block.drift, block.breach, block.cash_above
        return [
            assembled(
                Block,
                start=start,
                value=value[at : at + n],
                drift=drift[at : at + n],
                breach=breach[at : at + n],
                cash_above=cash[at : at + n],
            )
            for (_, _, start, _), at, n in zip(requests, firsts, counts, strict=True)
        ]

    def _checks_of(self, screens: list[Screen]) -> Checks:
        """The nodes any of `screens` checks (theirs and their parents' columns), their desired
        weights, and per screen the drift that comes near its limit on each (inf where that screen does
        not check the node: never exceeded)."""
        key = tuple(id(s) for s in screens)
        known = self._checks.get(key)
        if known is not None and all(a is b for a, b in zip(known[0], screens, strict=True)):
            return known[1]
        if len(self._checks) >= BATCHES_KEPT:
            self._checks.clear()
        nodes = np.unique(np.concatenate([s.checked for s in screens]))
        near = np.full((len(screens), nodes.size), math.inf)
        for i, s in enumerate(screens):
            near[i, np.searchsorted(nodes, s.checked)] = s.checked_near
        first = screens[0]
        checks = ((_columns(nodes), _columns(first.parent[nodes])), first.desired_weight[nodes], near)
        self._checks[key] = (screens, checks)
        return checks


def cash_due(block: Block, threshold: float | None) -> BoolArray:
    """Rows whose cash above target is within MARGIN of the threshold, or above it."""
    if threshold is None:
        return np.zeros(block.value.size, dtype=np.bool_)
    scale = np.maximum(block.value, 1e-300)
    return block.cash_above > threshold + VALUE_EPSILON * scale - MARGIN * scale


def drift_of(diff: DiffTree) -> float:
    """The largest |current - desired| share of the portfolio of any wallet (the screen's `drift`)."""
    root = float(diff.current_value[0])
    wallets = diff.tree.wallet
    if root <= 0 or not wallets.any():
        return 0.0
    return float(np.abs(diff.current_value[wallets] - diff.desired_value[wallets]).max()) / root


def _columns(nodes: IntArray) -> Columns:
    """Columns `nodes` as a slice where they are a run (a view of them, not a copy), one column where
    they are all the same (it broadcasts), else as they are."""
    if nodes.size and (nodes == nodes[0]).all():
        return slice(int(nodes[0]), int(nodes[0]) + 1)
    if nodes.size and bool((np.diff(nodes) == 1).all()):
        return slice(int(nodes[0]), int(nodes[-1]) + 1)
    return nodes


def _assets(book: Book) -> list[str]:
    return [str(node["asset"]) for node in book.wallets]


def _moved(prices: Prices) -> Prices:
    moved = {
        asset: price * Decimal(repr(0.5 + (k * GOLDEN) % 1.0))
        for k, (asset, price) in enumerate(sorted(prices.prices.items()), start=1)
    }
    return Prices(prices.quote, moved)


def _subtree_ends(parent: IntArray) -> IntArray:
    """Per node of a pre-order tree: one past the last node of its subtree."""
    count = parent.size
    end = np.arange(1, count + 1, dtype=np.int64)
    for node in range(count - 1, 0, -1):  # children after their parents: fold upwards
        up = int(parent[node])
        end[up] = max(end[up], end[node])
    return end
