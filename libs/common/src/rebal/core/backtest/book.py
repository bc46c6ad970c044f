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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rebal.core.diff import DiffTree
from rebal.core.numbers import dec_str, parse_decimal, parse_fraction
from rebal.core.plan import Plan
from rebal.core.tree import PATH_SEP, FloatArray, IntArray, Tree, parse_tree

Doc = dict[str, Any]
Key = tuple[str, str]  # (account path, asset)
# A buy asking this much more quote than its account holds (relative) is float noise, not a shortfall.
CASH_SLACK = 1e-12


def amount_text(value: float) -> str:
    """The decimal text of a wallet amount: the shortest that reads back as the float; never negative."""
    return repr(value) if value > 0 else "0"


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
    _tree: Tree | None = None

    @classmethod
    def of(cls, doc: Doc) -> Book:
        """A book over a copy of `doc` (a real tree document the core accepts), its share locks pinned."""
        book = cls(_pinned(copy.deepcopy(doc)))
        book._collect()
        return book

    def _collect(self) -> None:
        nodes = [(path, node) for path, node in _walk(self.doc) if "asset" in node]
        self.paths = [path for path, _ in nodes]
        self.wallets = [node for _, node in nodes]
        amounts = [float(str(node.get("amount", "0"))) for node in self.wallets]
        self.amount = np.array(amounts, dtype=np.float64)

    def copy(self) -> Book:
        self._write()
        book = Book.of(self.doc)
        book.version = self.version
        return book

    def _write(self) -> None:
        for node, value in zip(self.wallets, self.amount.tolist(), strict=True):
            node["amount"] = amount_text(value)

    def changed(self) -> None:
        """The amounts changed: the next `tree()` parses them."""
        self._tree = None

    def tree(self) -> Tree:
        """The real tree of the current amounts (parsed once per change)."""
        if self._tree is None:
            self._write()
            self._tree = parse_tree(self.doc, "real")
        return self._tree

    def add_wallet(self, account_path: str, asset: str) -> int:
        """A new empty wallet of `asset` under the account; its index among the wallets."""
        self._write()
        account = next(node for path, node in _walk(self.doc) if path == account_path)
        names = {child.get("name") for child in account.setdefault("children", [])}
        name = asset.lower()
        suffix = 2
        while name in names:
            name, suffix = f"{asset.lower()}-{suffix}", suffix + 1
        account["children"].append({"name": name, "asset": asset, "amount": "0"})
        self._collect()
        self.version += 1
        self._tree = None
        return self.paths.index(f"{account_path}{PATH_SEP}{name}")


@dataclass(frozen=True, eq=False)
class Layout:
    """Where a book's wallets sit in a diff's union tree: their nodes, (account, asset) groups, the cash
    wallets (their account's quote), and each account's exchange and quote."""

    node: IntArray  # the union node of each wallet of the book
    groups: dict[Key, list[int]]
    cash: list[int]  # wallets holding their account's quote, in tree order
    quote_of: dict[str, str]  # account path -> its quote
    exchange_of: dict[str, str]
    account_node: dict[str, int]

    @classmethod
    def of(cls, diff: DiffTree, book: Book) -> Layout:
        tree = diff.tree
        node = np.flatnonzero(tree.real.wallet)
        if node.size != len(book.wallets):
            raise ValueError("the diff was not made from this book")
        groups: dict[Key, list[int]] = defaultdict(list)
        accounts = {account: tree.path(account) for account in tree.accounts}
        cash_nodes = diff.cash
        cash: list[int] = []
        for index, union_node in enumerate(node.tolist()):
            account = accounts[int(tree.account_of[union_node])]
            asset = tree.asset(union_node)
            assert asset is not None, "a wallet has an asset"
            groups[(account, asset)].append(index)
            if cash_nodes[union_node]:
                cash.append(index)
        return cls(
            node=node,
            groups=dict(groups),
            cash=cash,
            quote_of={accounts[a]: quote for a, (_, quote) in tree.accounts.items()},
            exchange_of={accounts[a]: exchange for a, (exchange, _) in tree.accounts.items()},
            account_node={path: a for a, path in accounts.items()},
        )


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
        free = book.amount - self.locked
        self.book = book
        self.layout = layout
        self.free: dict[Key, float] = {
            key: float(np.maximum(free[wallets], 0.0).sum()) for key, wallets in layout.groups.items()
        }

    def write(self, desired_free: FloatArray) -> None:
        """Each group's free amount spread over its wallets by their desired free amounts (`desired_free`
        per union node of the layout's diff)."""
        book, layout, locked = self.book, self.layout, self.locked
        new = {key: total for key, total in self.free.items() if key not in layout.groups and total > 0}
        for key, total in self.free.items():
            wallets = layout.groups.get(key)
            if wallets is None:
                continue
            if len(wallets) == 1:
                book.amount[wallets[0]] = locked[wallets[0]] + max(total, 0.0)
                continue
            wanted = np.maximum(desired_free[layout.node[wallets]], 0.0)
            if wanted.sum() <= 0:
                wanted = np.maximum(book.amount[wallets] - locked[wallets], 0.0)
            share = wanted / wanted.sum() if wanted.sum() > 0 else np.full(len(wallets), 1 / len(wallets))
            book.amount[wallets] = locked[wallets] + max(total, 0.0) * share
        for (account, asset), total in new.items():  # an asset the account did not hold: its own wallet
            index = book.add_wallet(account, asset)  # (wallets after it move: the known ones are done)
            book.amount[index] = total
        book.changed()


def fill_plan(
    book: Book, layout: Layout, plan: Plan, price_of: dict[str, float], min_trade_value: float | None
) -> Filled:
    """Fill the core's plan at the row's prices (`price_of`: valuation price per asset); see the module's
    docstring. Returns what it cost."""
    balances = Balances(book, layout)
    free = defaultdict(float, balances.free)
    orders, traded, fees = 0, 0.0, 0.0
    minimum = min_trade_value or 0.0
    ordered = plan.orders()
    sells = [order for order in ordered if order.side == "sell"]
    buys = [order for order in ordered if order.side == "buy"]
    for order in sells:
        base, quote = order.symbol.split("/")
        value = float(order.est_cost) * price_of[quote]
        if value < minimum:
            continue
        amount = min(float(order.amount), free[(order.account, base)])
        cost = amount * float(order.est_price)
        fee = cost * float(order.est_fee) / float(order.est_cost) if order.est_cost else 0.0
        free[(order.account, base)] -= amount
        free[(order.account, quote)] += cost - fee
        orders, traded, fees = orders + 1, traded + cost * price_of[quote], fees + fee * price_of[quote]
    for transfer in plan.transfers:
        amount = min(float(transfer.amount), max(free[(transfer.source, transfer.asset)], 0.0))
        free[(transfer.source, transfer.asset)] -= amount
        free[(transfer.destination, transfer.asset)] += amount
    for order in buys:
        base, quote = order.symbol.split("/")
        value = float(order.est_cost) * price_of[quote]
        if value < minimum:
            continue
        price = float(order.est_price)
        rate = float(order.est_fee) / float(order.est_cost) if order.est_cost else 0.0
        amount = float(order.amount)
        held = max(free[(order.account, quote)], 0.0)
        if amount * price * (1 + rate) > held * (1 + CASH_SLACK):
            amount = held / (price * (1 + rate))
        if amount <= 0:
            continue
        cost = amount * price
        free[(order.account, base)] += amount
        free[(order.account, quote)] -= cost * (1 + rate)
        orders, traded = orders + 1, traded + cost * price_of[quote]
        fees += cost * rate * price_of[quote]
    balances.free = dict(free)
    balances.write(plan.diff.desired_free_amount)
    return Filled(orders, traded, fees)


def locked_of(book: Book, layout: Layout) -> FloatArray:
    """What locks hold of each wallet of the book (from its parsed tree: a share lock follows the amount)."""
    locked: FloatArray = book.tree().locked[layout.node].astype(np.float64)
    return locked


def deposit(book: Book, layout: Layout, value: float, price_of: dict[str, float]) -> None:
    """Cash arriving: `value` (valuation currency) lands in the first cash wallet in tree order."""
    if not layout.cash:
        raise ValueError("no cash wallet to receive the flow")
    index = layout.cash[0]
    asset = book.wallets[index]["asset"]
    book.amount[index] += value / price_of[asset]
    book.changed()


def withdraw_cash(book: Book, layout: Layout, value: float, price_of: dict[str, float]) -> float:
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
