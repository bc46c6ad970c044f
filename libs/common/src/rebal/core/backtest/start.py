"""Where a replay starts: the real tree document, from the user's own or at the target.

- `valuation_currency`: the currency the history's prices are in. When the accounts name one quote
  between them and the history has no column for it, that quote (a USDT account's history is in USDT);
  otherwise `DEFAULT_QUOTE` (and every account's quote needs a column).
- `with_cash_wallets`: every account gets a wallet of its quote if it has none (named after the quote in
  lower case, as the tracker names a balance outside the layout), so that what its trades pay and
  receive has somewhere to be.
- `at_target`: the target's own shape holding `amount` in the target's proportions at the first row's
  prices (no trade, no fee). A target without an account node becomes one account (its root) on
  `exchange`.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator
from typing import Any

from rebal.core.backtest.book import Book
from rebal.core.diff import diff_trees
from rebal.core.market import Prices
from rebal.core.tree import ACCOUNT, Tree

Doc = dict[str, Any]
DEFAULT_QUOTE = "USD"
TARGET_ONLY_KEYS = ("weight", "keep_unlisted")


def _nodes(doc: Doc) -> Iterator[Doc]:
    stack = [doc]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.get("children") or []))


def _accounts(doc: Doc) -> list[Doc]:
    return [node for node in _nodes(doc) if node.get("kind") == ACCOUNT]


def valuation_currency(docs: Collection[Doc], columns: Collection[str]) -> str:
    """See the module's docstring."""
    quotes = {str(node["quote"]) for doc in docs for node in _accounts(doc) if "quote" in node}
    if len(quotes) == 1 and not quotes & set(columns):
        return quotes.pop()
    return DEFAULT_QUOTE


def with_cash_wallets(doc: Doc, default_quote: str) -> Doc:
    """A copy of a real tree document whose every account holds a wallet of its quote."""
    out = copy.deepcopy(doc)
    for account in _accounts(out):
        quote = str(account.get("quote", default_quote))
        if any(node.get("asset") == quote for node in _nodes(account)):
            continue
        children = account.setdefault("children", [])
        names = {child.get("name") for child in children}
        name, suffix = quote.lower(), 2
        while name in names:
            name, suffix = f"{quote.lower()}-{suffix}", suffix + 1
        children.append({"name": name, "asset": quote, "amount": "0"})
    return out


def at_target(target_doc: Doc, target: Tree, amount: float, prices: Prices, exchange: str) -> Doc:
    """The target's shape holding `amount` (valuation currency) as the target divides it at `prices`."""
    real = copy.deepcopy(target_doc)
    for node in _nodes(real):
        for key in TARGET_ONLY_KEYS:
            node.pop(key, None)
        if "asset" in node:
            node["amount"] = "0"
    if not _accounts(real):
        real["kind"] = ACCOUNT
        real.setdefault("exchange", exchange)
    real = with_cash_wallets(real, prices.quote)
    book = Book.of(real)
    cash = next(
        index
        for index, node in enumerate(book.wallets)
        if node["asset"] == _quote_of(real, book.paths[index], prices.quote)
    )
    quote_price = float(prices.get(book.wallets[cash]["asset"]) or 1)
    book.amount[cash] = amount / quote_price
    book.changed()
    diff = diff_trees(book.tree(), target, prices)
    wallets = diff.tree.wallet[: len(diff.tree.real)]
    book.amount = diff.desired_amount[: len(diff.tree.real)][wallets].astype(float)
    book.changed()
    return book.copy().doc


def _quote_of(doc: Doc, path: str, default: str) -> str:
    """The quote of the account above the wallet at `path`."""
    node, quote = doc, default
    for name in path.split("/")[1:]:
        if node.get("kind") == ACCOUNT:
            quote = str(node.get("quote", default))
        node = next(child for child in node.get("children", []) if child.get("name") == name)
    return quote
