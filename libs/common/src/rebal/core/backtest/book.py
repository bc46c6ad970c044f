"""The holdings a replay trades: the real tree document, its wallets' amounts, and how fills change them.

The book owns a copy of the real tree document; the core's `Tree` is parsed from it whenever the amounts
changed (`parse_tree`, the same validation `rebal plan` applies). Amounts live in a float array beside
the document and are written into it as the shortest decimal text that reads back as the float.

Fill model (docs/backtest.md, "How orders fill"): every order of the core's plan fills in full at the
row's price, for its planned amount (whole steps); the fee (the market's `fee_rate`) is charged in the
quote, on top of a buy's cost and out of a sell's proceeds — exactly the planner's estimate. Orders run
in the plan's order (sells, transfers, buys); a buy never spends more quote than its account holds at
that moment (it is cut to what is there, as the executor sizes buys from the quote really held). An
order worth less than the policy's `min_trade_value` is not sent.

What an (account, asset) pair ends up holding is spread over its wallets as the diff asked: each wallet
gets its desired free amount, scaled so that the wallets together hold what the account holds; locked
parts stay where they are (a lock given as a share is pinned to the amount it locks at the start, as the
tracker pins it). An asset an account did not hold before (a routed order's intermediate, a
transfer in another quote) gets a wallet under the account named after the asset in lower case, as the
tracker names what a venue reports outside the layout.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, overload

import numpy as np

from rebal.core.diff import SELL, DiffTree
from rebal.core.market import Market
from rebal.core.numbers import dec_str, parse_decimal, parse_fraction
from rebal.core.plan import Plan
from rebal.core.tree import PATH_SEP, BoolArray, FloatArray, IntArray, Tree, assembled, parse_tree

Doc = dict[str, Any]
Key = tuple[str, str]  # (account path, asset)
# A buy asking this much more quote than its account holds (relative) is float noise, not a shortfall.
CASH_SLACK = 1e-12
# Market tables a layout keeps (one per set of routes planned); then it starts again.
FACT_TABLES = 64
# Parsed documents a registry shared by books keeps (`Book.of`'s `parses`); then it starts again.
PARSES_KEPT = 16
# A plan of one account of at most this many direct orders fills order by order in Python floats
# (`_fill_one_account`): on arrays this small numpy's cost per call is what a fill pays.
SMALL_FILL = 48


def amount_text(value: float) -> str:
    """The decimal text of a wallet amount: the shortest that reads back as the float; never negative."""
    return repr(value) if value > 0 else "0"


class FloatTexts(Sequence[str | None]):
    """A tree's `amount_text` whose wallets hold float amounts: each wallet's text (`amount_text`) is
    written when it is read. The planner reads a few (its exact sells); writing every wallet's text after
    every fill cost a sixth of a replay at 500 assets."""

    def __init__(self, parsed: Sequence[str | None], amount: FloatArray, wallet: BoolArray) -> None:
        self._parsed, self._amount, self._wallet = parsed, amount, wallet

    def __len__(self) -> int:
        return len(self._parsed)

    @overload
    def __getitem__(self, index: int) -> str | None: ...
    @overload
    def __getitem__(self, index: slice) -> list[str | None]: ...
    def __getitem__(self, index: int | slice) -> str | list[str | None] | None:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._wallet[index]:
            return amount_text(float(self._amount[index]))
        return self._parsed[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def _walk(doc: Doc, path: str = "") -> list[tuple[str, Doc]]:
    """Every node of a tree document in pre-order (children in their order), with its path."""
    found: list[tuple[str, Doc]] = []
    stack: list[tuple[str, Doc]] = [(str(doc.get("name", "")), doc)]
    while stack:
        here, node = stack.pop()
        found.append((here, node))
        children = node.get("children") or []
        stack.extend((f"{here}{PATH_SEP}{child.get('name')}", child) for child in reversed(children))
    return found


def _pinned(doc: Doc) -> Doc:
    """Share locks become the amounts they lock now, as the tracker pins a share to the layout's amount
    (`rebal.core.assemble`): a bot's part does not shrink when the rebalancer sells its own part."""
    for _, node in _walk(doc):
        amount = parse_decimal(node.get("amount", "0"))
        for lock in node.get("locks") or []:
            share = parse_fraction(lock.get("share")) if isinstance(lock, dict) and "share" in lock else None
            if share is not None and amount is not None:
                del lock["share"]
                lock["amount"] = dec_str(share * amount)
    return doc


@dataclass
class Book:
    """A portfolio's holdings during a replay (see the module's docstring)."""

    doc: Doc
    wallets: list[Doc] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    amount: FloatArray = field(default_factory=lambda: np.zeros(0))
    version: int = 0  # the tree's shape: bumps when a wallet is added
    _parsed: Tree | None = None  # parsed once per shape
    _tree: Tree | None = None  # the current amounts
    _locked: FloatArray | None = None  # per wallet, once per shape
    # Documents parsed, by their text (`repr`): books replayed side by side from one start parse a
    # document they have in common once, and share its parsed tree (see `parsed`).
    parses: dict[str, Tree] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, doc: Doc, parses: dict[str, Tree] | None = None) -> Book:
        """A book over a copy of `doc` (a real tree document the core accepts), its share locks pinned;
        `parses` a registry of parsed documents shared with other books (None: its own)."""
        book = cls(_pinned(copy.deepcopy(doc)), parses=parses)
        book._collect()
        return book

    def _collect(self) -> None:
        nodes = [(path, node) for path, node in _walk(self.doc) if "asset" in node]
        self.paths = [path for path, _ in nodes]
        self.wallets = [node for _, node in nodes]
        amounts = [float(str(node.get("amount", "0"))) for node in self.wallets]
        self.amount = np.array(amounts, dtype=np.float64)
        self._parsed = self._tree = self._locked = None

    def copy(self) -> Book:
        self._write()
        book = Book.of(self.doc)
        book.version = self.version
        return book

    def _write(self) -> None:
        for node, value in zip(self.wallets, self.amount.tolist(), strict=True):
            node["amount"] = amount_text(value)

    def changed(self) -> None:
        """The amounts changed: the next `tree()` has them."""
        self._tree = None

    def tree(self) -> Tree:
        """The real tree of the current amounts. The document is parsed (`parse_tree`) once per shape;
        new amounts then replace the parsed ones: the locks are fixed amounts (pinned), so nothing else
        the parse derived changes, and every amount is finite and >= 0."""
        if self._tree is not None:
            return self._tree
        if self._parsed is None:
            self._write()
            self._parsed = self._tree = self._parse()
            return self._tree
        self._tree = self.tree_of(self.amount)
        return self._tree

    def _parse(self) -> Tree:
        """`parse_tree` of the document, or the tree another book parsed from a document with the same
        text (amounts included): the same tree, which the core only reads."""
        if self.parses is None:
            return parse_tree(self.doc, "real")
        text = repr(self.doc)
        known = self.parses.get(text)
        if known is None:
            if len(self.parses) >= PARSES_KEPT:
                del self.parses[next(iter(self.parses))]
            known = self.parses[text] = parse_tree(self.doc, "real")
        return known

    @property
    def parsed(self) -> Tree:
        """The tree parsed from the document (once per shape): what every `tree()` of this shape is
        made from, the same object for books sharing their parses with the same document."""
        if self._parsed is None:
            self.tree()
        assert self._parsed is not None, "tree() parses the document"
        return self._parsed

    def fresh(self) -> bool:
        """`tree()` is the parsed tree itself (its amounts as the document wrote them)."""
        return self._tree is not None and self._tree is self._parsed

    def tree_of(self, wallet_amount: FloatArray) -> Tree:
        """The real tree of this shape with `wallet_amount` (one per wallet, finite) as its amounts."""
        if self._parsed is None:
            self.tree()
        parsed = self._parsed
        assert parsed is not None, "tree() parses the document"
        amount = parsed.amount.copy()
        amount[parsed.wallet] = np.maximum(wallet_amount, 0.0)
        # The parsed tree's fields (and what is cached of its shape) with the new amounts: a plain copy,
        # as `dataclasses.replace` would check and pass every field again after every fill.
        tree = object.__new__(Tree)
        tree.__dict__.update(parsed.__dict__)
        tree.__dict__.update(amount=amount, amount_text=FloatTexts(parsed.amount_text, amount, parsed.wallet))
        return tree

    def locked(self) -> FloatArray:
        """What locks hold of each wallet: fixed amounts (share locks are pinned), read once per shape."""
        if self._locked is None:
            self.tree()
            parsed = self._parsed
            assert parsed is not None, "tree() parses the document"
            self._locked = parsed.locked[np.flatnonzero(parsed.wallet)].astype(np.float64)
        return self._locked

    def add_wallets(self, wallets: list[tuple[str, str, float]]) -> None:
        """New wallets (path, asset, amount), with the portfolio nodes on their paths that are missing."""
        self._write()
        for path, asset, value in wallets:
            node = self.doc
            *parents, name = path.split(PATH_SEP)[1:]
            for part in parents:
                children = node.setdefault("children", [])
                found = next((child for child in children if child.get("name") == part), None)
                if found is None:
                    found = {"name": part, "children": []}
                    children.append(found)
                node = found
            node.setdefault("children", []).append(
                {"name": name, "asset": asset, "amount": amount_text(value)}
            )
        self._collect()
        self.version += 1

    def free_name(self, account_path: str, asset: str) -> str:
        """A wallet path under the account for `asset`: its name in lower case (made unique)."""
        taken = set(self.paths)
        name, suffix = asset.lower(), 2
        while f"{account_path}{PATH_SEP}{name}" in taken or any(
            p.startswith(f"{account_path}{PATH_SEP}{name}{PATH_SEP}") for p in taken
        ):
            name, suffix = f"{asset.lower()}-{suffix}", suffix + 1
        return f"{account_path}{PATH_SEP}{name}"


@dataclass(frozen=True, eq=False)
class Layout:
    """Where a book's wallets sit in a diff's union tree: their nodes, (account, asset) groups, the cash
    wallets (their account's quote), each account's exchange and quote, and the target's wallets that
    the book does not hold yet (where a new position goes)."""

    node: IntArray  # the union node of each wallet of the book
    groups: dict[Key, list[int]]
    keys: list[Key]  # the groups in order; group g is keys[g]
    group_of: IntArray  # per wallet: its group
    single: IntArray  # per group: its one wallet, or -1 when it has several
    codes: IntArray  # sorted (account node x assets + asset id) of the groups
    code_group: IntArray  # the group of each sorted code
    assets: int  # how many asset ids the diff has
    cash: list[int]  # wallets holding their account's quote, in tree order
    quote_of: dict[str, str]  # account path -> its quote
    exchange_of: dict[str, str]
    account_path: dict[int, str]  # account node -> path
    target_only: dict[Key, list[tuple[int, str]]]  # (account, asset) -> the target's wallets (node, path)
    position: dict[Key, int]  # the group of each key
    _facts: dict[int, tuple[tuple[Market, ...], FloatArray]] = field(default_factory=dict)
    _orders: dict[tuple[int, bytes, bytes], tuple[tuple[Market, ...], Orders]] = field(default_factory=dict)
    _order_lists: dict[int, tuple[Orders, OrderLists]] = field(default_factory=dict)

    @cached_property
    def wallet_groups(self) -> list[int] | None:
        """Per wallet its group where every group is one wallet (None otherwise): `_fill_small`'s."""
        return self.group_of.tolist() if bool((self.single >= 0).all()) else None

    @cached_property
    def wallet_of(self) -> list[int]:
        """Per group its one wallet (-1 where it has several)."""
        wallets: list[int] = self.single.tolist()
        return wallets

    def order_lists(self, orders: Orders) -> OrderLists:
        """`orders` (of one account, `_fill_one_account`'s) as lists, kept with them."""
        known = self._order_lists.get(id(orders))
        if known is not None and known[0] is orders:
            return known[1]
        lists = OrderLists(
            orders.step.tolist(),
            orders.rate.tolist(),
            orders.base.tolist(),
            orders.held.tolist(),
            int(orders.cash[0]),
            int(orders.quote[0]),
        )
        if len(self._order_lists) >= FACT_TABLES:
            self._order_lists.clear()
        self._order_lists[id(orders)] = (orders, lists)  # the orders kept: their id stays their own
        return lists

    @classmethod
    def of(cls, diff: DiffTree, book: Book) -> Layout:
        tree = diff.tree
        n_real = len(tree.real)
        node = np.flatnonzero(tree.real.wallet)
        if node.size != len(book.wallets):
            raise ValueError("the diff was not made from this book")
        accounts = {account: tree.path(account) for account in tree.accounts}
        groups: dict[Key, list[int]] = defaultdict(list)
        codes: dict[Key, int] = {}
        cash: list[int] = []
        count = max(len(diff.asset_names), 1)
        for index, union_node in enumerate(node.tolist()):
            account = int(tree.account_of[union_node])
            key = (accounts[account], str(tree.asset(union_node)))
            groups[key].append(index)
            codes[key] = account * count + int(diff.asset_id[union_node])
            if diff.cash[union_node]:
                cash.append(index)
        keys = list(groups)
        position = {key: g for g, key in enumerate(keys)}
        group_of = np.zeros(node.size, dtype=np.int64)
        for key, wallets in groups.items():
            group_of[wallets] = position[key]
        single = np.array([w[0] if len(w) == 1 else -1 for w in groups.values()], dtype=np.int64)
        code = np.array([codes[key] for key in keys], dtype=np.int64)
        order = np.argsort(code, kind="stable")
        target_only: dict[Key, list[tuple[int, str]]] = defaultdict(list)
        for union_node in np.flatnonzero(tree.wallet).tolist():
            if union_node >= n_real:
                key = (accounts[int(tree.account_of[union_node])], str(tree.asset(union_node)))
                target_only[key].append((union_node, tree.path(union_node)))
        return cls(
            node=node,
            groups=dict(groups),
            keys=keys,
            group_of=group_of,
            single=single,
            codes=code[order],
            code_group=order.astype(np.int64),
            assets=count,
            cash=cash,
            quote_of={accounts[a]: quote for a, (_, quote) in tree.accounts.items()},
            exchange_of={accounts[a]: exchange for a, (exchange, _) in tree.accounts.items()},
            account_path=accounts,
            target_only=dict(target_only),
            position=position,
        )

    @cached_property
    def spread(self) -> tuple[IntArray, list[int]] | tuple[BoolArray, IntArray, list[int]]:
        """How `Balances.write` spreads the groups over the wallets: (wallets, []) when each group is one
        wallet, in group order; else (groups of one wallet, their wallets, the other groups)."""
        one = self.single >= 0
        if np.count_nonzero(one) == one.size:
            return self.single, []
        return one, self.single[one], (~one).nonzero()[0].tolist()

    def group(self, account: IntArray, asset: IntArray) -> IntArray:
        """The group of each (account node, asset id); -1 where the book has no such wallet."""
        code = account * self.assets + asset
        if not self.codes.size:
            return np.full(code.size, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.codes, code), self.codes.size - 1)
        found: IntArray = np.where((self.codes[at] == code) & (asset >= 0), self.code_group[at], -1)
        return found

    def facts(self, markets: tuple[Market, ...], diff: DiffTree) -> FloatArray:
        """Per market: step, fee rate, base id and quote id (kept per tuple of markets: the planner hands
        the same tuple for the same routes, and a replay plans with the same `Markets` throughout)."""
        known = self._facts.get(id(markets))
        if known is not None and known[0] is markets:
            return known[1]
        ids = {name: i for i, name in enumerate(diff.asset_names)}
        rows = [(m.floats[0], m.floats[3], ids.get(m.base, -1), ids.get(m.quote, -1)) for m in markets]
        facts = np.array(rows, dtype=np.float64).reshape(-1, 4)
        if len(self._facts) >= FACT_TABLES:
            self._facts.clear()
        self._facts[id(markets)] = (markets, facts)  # the tuple kept: its id stays its own
        return facts

    def orders(
        self, markets: tuple[Market, ...], diff: DiffTree, account: IntArray, market: IntArray
    ) -> Orders:
        """What a plan's direct orders (`account` and `market` per order, in the plan's columns) trade:
        kept per set of orders (a replay's plans of one shape mostly trade every group)."""
        key = (id(markets), account.tobytes(), market.tobytes())
        known = self._orders.get(key)
        if known is not None and known[0] is markets:
            return known[1]
        facts = self.facts(markets, diff)
        base, quote = facts[market, 2].astype(np.int64), facts[market, 3].astype(np.int64)
        held, cash = self.group(account, base), self.group(account, quote)
        if np.any(cash < 0):
            raise ValueError("an account trades without a wallet of its quote")
        known_held = held[held >= 0]
        orders = Orders(
            step=facts[market, 0],
            rate=facts[market, 1],
            base=base,
            quote=quote,
            held=held,
            cash=cash,
            one_cash=bool((cash == cash[0]).all()),
            distinct=np.unique(known_held).size == known_held.size,
            all_held=known_held.size == held.size,
        )
        if len(self._orders) >= FACT_TABLES:
            self._orders.clear()
        self._orders[key] = (markets, orders)  # the tuple kept: its id stays its own
        return orders


class Orders(NamedTuple):
    """Per direct order of a plan (in its columns, `Plan.direct_account`): its market's step and fee
    rate, its base and quote (asset ids), and the book's groups it takes from and pays with."""

    step: FloatArray
    rate: FloatArray
    base: IntArray
    quote: IntArray
    held: IntArray
    cash: IntArray
    one_cash: bool  # every order pays from the same cash group (one account)
    distinct: bool  # no two orders trade the same held group
    all_held: bool  # the book holds every order's asset in its account


class OrderLists(NamedTuple):
    """`Orders` of one account as Python lists (`_fill_one_account`): its one cash group and quote."""

    step: list[float]
    rate: list[float]
    base: list[int]
    held: list[int]
    cash: int
    quote: int


@dataclass(frozen=True)
class Filled:
    """What one plan cost: orders sent, traded value and fees (valuation currency)."""

    orders: int = 0
    traded: float = 0.0
    fees: float = 0.0

    def __add__(self, other: Filled) -> Filled:
        return Filled(self.orders + other.orders, self.traded + other.traded, self.fees + other.fees)


class Balances:
    """Free amounts per (account, asset) while a plan fills; written back to the wallets at the end."""

    def __init__(self, book: Book, layout: Layout) -> None:
        self.locked = locked_of(book, layout)
        self.book = book
        self.layout = layout
        held = np.maximum(book.amount - self.locked, 0.0)
        self.free: FloatArray = np.bincount(layout.group_of, weights=held, minlength=len(layout.keys)).astype(
            np.float64, copy=False
        )
        self.extra: dict[Key, float] = defaultdict(float)  # what the book has no wallet for yet

    def get(self, key: Key) -> float:
        g = self.layout.position.get(key)
        return float(self.free[g]) if g is not None else self.extra.get(key, 0.0)

    def add(self, key: Key, delta: float) -> None:
        g = self.layout.position.get(key)
        if g is not None:
            self.free[g] += delta
        else:
            self.extra[key] += delta

    def write(self, desired_free: FloatArray) -> None:
        """Each group's free amount spread over its wallets by their desired free amounts (`desired_free`
        per union node of the layout's diff); what the book has no wallet for goes to the target's
        wallets of that asset in that account (by their desired amounts), else to a wallet of its own."""
        book, layout, locked = self.book, self.layout, self.locked
        total = np.maximum(self.free, 0.0)
        spread = layout.spread
        if len(spread) == 2:  # every group one wallet
            wallets, several = spread
            book.amount[wallets] = locked[wallets] + total
        else:
            one, wallets, several = spread
            book.amount[wallets] = locked[wallets] + total[one]
        for g in several:
            members = layout.groups[layout.keys[g]]
            wanted = np.maximum(desired_free[layout.node[members]], 0.0)
            if wanted.sum() <= 0:
                wanted = np.maximum(book.amount[members] - locked[members], 0.0)
            share = wanted / wanted.sum() if wanted.sum() > 0 else np.full(len(members), 1 / len(members))
            book.amount[members] = locked[members] + total[g] * share
        new: list[tuple[str, str, float]] = []
        for (account, asset), amount in self.extra.items():
            if amount <= 0:
                continue
            targets = layout.target_only.get((account, asset))
            if targets:
                wanted = np.maximum(desired_free[[node for node, _ in targets]], 0.0)
                share = wanted / wanted.sum() if wanted.sum() > 0 else np.full(len(targets), 1 / len(targets))
                new += [
                    (path, asset, amount * part)
                    for (_, path), part in zip(targets, share.tolist(), strict=True)
                ]
            else:
                new.append((book.free_name(account, asset), asset, amount))
        if new:
            book.add_wallets(new)
        book.changed()


def fill_plan(
    book: Book, layout: Layout, plan: Plan, price_of: Mapping[str, float], min_trade_value: float | None
) -> Filled:
    """Fill the core's plan at the row's prices (`price_of`: valuation price per asset); see the module's
    docstring. Returns what it cost."""
    if not plan.legs and not plan.transfers:
        small = _fill_small(book, layout, plan, min_trade_value or 0.0)
        if small is not None:
            return small
    balances = Balances(book, layout)
    if not plan.legs and not plan.transfers:
        filled = _fill_direct(balances, plan, min_trade_value or 0.0)
    else:
        filled = _fill_in_order(balances, plan, price_of, min_trade_value or 0.0)
    balances.write(plan.diff.desired_free_amount)
    return filled


def _fill_direct(balances: Balances, plan: Plan, minimum: float) -> Filled:
    """A plan of direct orders only, in bulk (the plan's order columns): sells, then buys, each buy cut to
    the quote its account still holds, in the plan's order."""
    diff, layout = plan.diff, balances.layout
    order = plan.direct_order
    if not order.size:
        return Filled()
    orders = layout.orders(plan.direct_markets, diff, plan.direct_account, plan.direct_market)
    if orders.one_cash and orders.distinct and orders.all_held and order.size <= SMALL_FILL:
        return _fill_one_account(balances, plan, orders, minimum)
    rate, base, held = orders.rate[order], orders.base[order], orders.held[order]
    if orders.one_cash:  # every order's cash and quote the same: in any order (the quote's broadcasts)
        quote, cash = orders.quote[:1], orders.cash
    else:
        quote, cash = orders.quote[order], orders.cash[order]
    amount = plan.direct_steps[order] * orders.step[order]
    worth = diff.asset_price[quote]  # valuation price of the quote
    price = diff.asset_price[base] / worth
    sent = amount * price * worth >= minimum
    sell = sent & (plan.direct_side[order] == SELL)
    buy = sent & ~sell
    free = balances.free
    held_free = free[held] if orders.all_held else np.where(held >= 0, free[np.maximum(held, 0)], 0.0)
    sold = np.where(sell, np.minimum(amount, held_free), 0.0)
    proceeds = sold * price
    if orders.distinct:  # one subtraction per group, as `subtract.at` makes them
        free[held[sell]] -= sold[sell]
    else:
        np.subtract.at(free, held[sell], sold[sell])
    np.add.at(free, cash[sell], proceeds[sell] * (1 - rate[sell]))
    need = np.where(buy, amount * price * (1 + rate), 0.0)
    # A buy's part of its amount that its cash still pays, in [0, 1]: `room` is never -0.0 (np.maximum
    # with 0.0), so clipping as minimum(maximum()) is `np.clip`, and `part` needs no clip to 1 again.
    if orders.one_cash:  # one cash group (one account): what the buys before each spent, in order
        before = np.add.accumulate(need) - need  # (`np.cumsum` without its Python wrapper)
        room = np.maximum(free[cash[0]] * (1 + CASH_SLACK) - before, 0.0)
        # room / need where need > 0, else 0.0 (which the clips keep): no division by 0 to silence.
        ratio = np.divide(room, need, out=np.zeros(need.size), where=need > 0)
        part = np.minimum(np.maximum(ratio, 0.0), 1.0)
    else:
        ranked = np.lexsort((np.arange(order.size), cash))  # by cash group, in the plan's order
        spent = np.cumsum(need[ranked])
        by_cash = cash[ranked]
        starts = np.flatnonzero(np.concatenate(([True], by_cash[1:] != by_cash[:-1])))
        sizes = np.diff(np.append(starts, ranked.size))
        before = spent - need[ranked] - np.repeat(np.concatenate(([0.0], spent))[starts], sizes)
        room = np.maximum(free[cash[ranked]] * (1 + CASH_SLACK) - before, 0.0)
        part = np.ones(order.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            part[ranked] = np.where(
                need[ranked] > 0, np.minimum(np.maximum(room / need[ranked], 0.0), 1.0), 0.0
            )
    bought = np.where(buy, amount * part, 0.0)
    cost = bought * price
    np.subtract.at(free, cash[buy], (cost * (1 + rate))[buy])
    known = buy if orders.all_held else buy & (held >= 0)
    if orders.distinct:
        free[held[known]] += bought[known]
    else:
        np.add.at(free, held[known], bought[known])
    if not orders.all_held:
        account = plan.direct_account[order]
        for k in (buy & (held < 0) & (bought > 0)).nonzero()[0].tolist():  # a position the book lacks
            key = (layout.account_path[int(account[k])], diff.asset_names[int(base[k])])
            balances.extra[key] += float(bought[k])
    total = np.add.reduce  # (`ndarray.sum` without its Python wrapper: the same pairwise sums)
    traded = float(total(proceeds * worth) + total(cost * worth))
    fees = float(total(proceeds * rate * worth) + total(cost * rate * worth))
    return Filled(int(np.count_nonzero(sell) + np.count_nonzero(bought > 0)), traded, fees)


def _fill_small(book: Book, layout: Layout, plan: Plan, minimum: float) -> Filled | None:
    """`fill_plan` of a plan of direct orders that `_fill_one_account` fills, in a book whose every
    (account, asset) group is one wallet, on Python floats: the free amounts (`Balances`), the fill
    and the amounts written back (`Balances.write`), the same operations in the same order. None: the
    plan or the book needs the general path."""
    wallet_groups = layout.wallet_groups
    if wallet_groups is None or plan.direct_order.size > SMALL_FILL:
        return None
    orders = None
    if plan.direct_order.size:
        orders = layout.orders(plan.direct_markets, plan.diff, plan.direct_account, plan.direct_market)
        if not (orders.one_cash and orders.distinct and orders.all_held):
            return None
    amount, locked = book.amount.tolist(), book.locked().tolist()
    free = [0.0] * len(layout.keys)
    for wallet, group in enumerate(wallet_groups):  # `np.bincount` of the free amounts
        held = amount[wallet] - locked[wallet]
        free[group] += held if held > 0.0 or math.isnan(held) else 0.0  # np.maximum(held, 0.0)
    filled = Filled() if orders is None else _fill_free(free, plan, layout.order_lists(orders), minimum)
    for group, wallet in enumerate(layout.wallet_of):
        left = free[group]
        amount[wallet] = locked[wallet] + (left if left > 0.0 or math.isnan(left) else 0.0)
    book.amount[:] = amount
    book.changed()
    return filled


def _fill_one_account(balances: Balances, plan: Plan, orders: Orders, minimum: float) -> Filled:
    """`_fill_direct` of a plan of one account whose orders each trade a group the book holds (no two
    the same), order by order in Python floats: the same operations in the same order (the buys' room
    as `np.cumsum` makes it, the totals as numpy sums them), so the same fill."""
    free = balances.free.tolist()
    filled = _fill_free(free, plan, balances.layout.order_lists(orders), minimum)
    balances.free = np.array(free, dtype=np.float64)
    return filled


def _fill_free(free: list[float], plan: Plan, orders: OrderLists, minimum: float) -> Filled:
    """`_fill_one_account` on `free` (per group of the book, changed in place)."""
    order = plan.direct_order.tolist()
    asset_price = plan.diff.asset_price.tolist()
    rate_of, step_of, base_of, held_of = orders.rate, orders.step, orders.base, orders.held
    side_of, steps_of = plan.direct_side.tolist(), plan.direct_steps.tolist()
    cash = orders.cash
    worth = asset_price[orders.quote]  # valuation price of the quote
    count = len(order)
    rate, proceeds, cost, bought = [0.0] * count, [0.0] * count, [0.0] * count, [0.0] * count
    # Sells in order (each takes from its own group; the proceeds go to the cash group, which no order
    # holds: base is never quote), then the buys sent, in order.
    sells, have = 0, free[cash]
    buys: list[tuple[int, float, float, float, int]] = []
    for i, k in enumerate(order):
        rate[i] = fee = rate_of[k]
        amount = steps_of[k] * step_of[k]
        price = asset_price[base_of[k]] / worth
        if not amount * price * worth >= minimum:  # not sent (`min_trade_value`)
            continue
        if side_of[k] == SELL:
            held = held_of[k]
            sold = min(amount, free[held])
            free[held] -= sold
            proceeds[i] = sold * price
            have += proceeds[i] * (1 - fee)
            sells += 1
        else:
            buys.append((i, amount, price, fee, held_of[k]))
    # Each buy cut to the room its account's cash leaves after the buys before it (`np.cumsum` of what
    # they need: the orders not bought add 0.0, which changes no sum of these).
    room, spent = have * (1 + CASH_SLACK), 0.0
    for i, amount, price, fee, held in buys:
        need = amount * price * (1 + fee)
        total = spent + need
        if need > 0:
            left = room - (total - need)
            left = left if left > 0.0 or math.isnan(left) else 0.0  # np.maximum(left, 0.0)
            part = min(max(left / need, 0.0), 1.0)
            bought[i] = amount * (1.0 if part >= 1.0 else part)
        spent = total
        cost[i] = bought[i] * price
        have -= cost[i] * (1 + fee)
        free[held] += bought[i]
    free[cash] = have
    traded = numpy_sum([p * worth for p in proceeds]) + numpy_sum([c * worth for c in cost])
    fees = numpy_sum([p * r * worth for p, r in zip(proceeds, rate, strict=True)]) + numpy_sum(
        [c * r * worth for c, r in zip(cost, rate, strict=True)]
    )
    return assembled(Filled, orders=sells + sum(1 for b in bought if b > 0), traded=traded, fees=fees)


def numpy_sum(values: list[float]) -> float:
    """`np.sum` of `values` as numpy adds them (pairwise, eight running sums in blocks of up to 128): the
    same float, for code that sums a few Python floats where numpy would sum an array."""
    count = len(values)
    if count < 8:  # (`_pairwise`'s first two cases inline: a fill's few orders)
        total = 0.0
        for value in values:
            total += value
        return total
    if count < 16:
        v = values
        total = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
        for k in range(8, count):
            total += v[k]
        return total
    return _pairwise(values, 0, count)


def _pairwise(values: list[float], start: int, count: int) -> float:
    if count < 8:
        total = 0.0
        for i in range(start, start + count):
            total += values[i]
        return total
    if count <= 128:
        sums = values[start : start + 8]
        i = 8
        while i < count - count % 8:
            for j in range(8):
                sums[j] += values[start + i + j]
            i += 8
        total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))
        for k in range(start + i, start + count):
            total += values[k]
        return total
    half = count // 2
    half -= half % 8
    return _pairwise(values, start, half) + _pairwise(values, start + half, count - half)


def _fill_in_order(balances: Balances, plan: Plan, price_of: Mapping[str, float], minimum: float) -> Filled:
    """Any plan (routed legs, transfers), order by order as the plan lists them."""
    orders, traded, fees = 0, 0.0, 0.0
    ordered = plan.orders()
    for order in [o for o in ordered if o.side == "sell"]:
        base, quote = order.symbol.split("/")
        if float(order.est_cost) * price_of[quote] < minimum:
            continue
        amount = min(float(order.amount), max(balances.get((order.account, base)), 0.0))
        cost = amount * float(order.est_price)
        rate = float(order.est_fee) / float(order.est_cost) if order.est_cost else 0.0
        balances.add((order.account, base), -amount)
        balances.add((order.account, quote), cost * (1 - rate))
        orders, traded, fees = (
            orders + 1,
            traded + cost * price_of[quote],
            fees + cost * rate * price_of[quote],
        )
    for transfer in plan.transfers:
        amount = min(float(transfer.amount), max(balances.get((transfer.source, transfer.asset)), 0.0))
        balances.add((transfer.source, transfer.asset), -amount)
        balances.add((transfer.destination, transfer.asset), amount)
    for order in [o for o in ordered if o.side == "buy"]:
        base, quote = order.symbol.split("/")
        if float(order.est_cost) * price_of[quote] < minimum:
            continue
        price = float(order.est_price)
        rate = float(order.est_fee) / float(order.est_cost) if order.est_cost else 0.0
        amount = float(order.amount)
        held = max(balances.get((order.account, quote)), 0.0)
        if amount * price * (1 + rate) > held * (1 + CASH_SLACK):
            amount = held / (price * (1 + rate))
        if amount <= 0:
            continue
        cost = amount * price
        balances.add((order.account, base), amount)
        balances.add((order.account, quote), -cost * (1 + rate))
        orders, traded = orders + 1, traded + cost * price_of[quote]
        fees += cost * rate * price_of[quote]
    return Filled(orders, traded, fees)


def locked_of(book: Book, layout: Layout) -> FloatArray:
    """What locks hold of each wallet of the book (fixed amounts: share locks are pinned)."""
    return book.locked()


def deposit(book: Book, layout: Layout, value: float, price_of: Mapping[str, float]) -> None:
    """Cash arriving: `value` (valuation currency) lands in the first cash wallet in tree order."""
    if not layout.cash:
        raise ValueError("no cash wallet to receive the flow")
    index = layout.cash[0]
    asset = book.wallets[index]["asset"]
    book.amount[index] += value / price_of[asset]
    book.changed()


def withdraw_cash(book: Book, layout: Layout, value: float, price_of: Mapping[str, float]) -> float:
    """Take `value` from the cash wallets' free parts, in tree order; returns what they could not give."""
    left = value
    locked = locked_of(book, layout)
    for index in layout.cash:
        if left <= 0:
            break
        price = price_of[book.wallets[index]["asset"]]
        free = max(book.amount[index] - locked[index], 0.0) * price
        taken = min(free, left)
        book.amount[index] -= taken / price
        left -= taken
    book.changed()
    return max(left, 0.0)
