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
- `free_markets`: an exchange no markets file names is unconstrained and free, its amounts cut to a step
  that scales with the price (`FREE_STEP_SHARE`), so that no order of a cheap coin is more steps than a
  float counts (2**53 steps of 1e-8 is 9e7 of a coin) and no dust is worth more than float noise.
- `quiet_added_cash`: the cash wallets the backtest adds (`added_wallets`: the user's trees do not have
  them) get no relative band. Desired at 0, a relative band on one fires on any amount (docs/formats.md,
  "The autopilot policy"), so the dust the replay's own fills leave there would trigger rebalances the
  user's portfolio, whose trees have no such wallet, never asked for.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np

from rebal.core.backtest.book import Book
from rebal.core.backtest.history import History
from rebal.core.diff import diff_trees
from rebal.core.market import Market, Markets, Prices
from rebal.core.numbers import LARGEST, SMALLEST
from rebal.core.policy import Band, Policy
from rebal.core.tree import ACCOUNT, PATH_SEP, FloatArray, Tree

Doc = dict[str, Any]
DEFAULT_QUOTE = "USD"
TARGET_ONLY_KEYS = ("weight", "keep_unlisted")
# A free market's step is the power of ten worth at most this share of the starting value at the asset's
# lowest price in the history: an order of the whole portfolio is 1e10 steps at that price, far below
# 2**53 even after the portfolio grows ten-thousandfold, and a step's dust is noise beside the value.
FREE_STEP_SHARE = 1e-10


def _nodes(doc: Doc) -> Iterator[Doc]:
    stack = [doc]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.get("children") or []))


def accounts_of(doc: Doc) -> list[Doc]:
    """The account nodes of a tree document, in tree order."""
    return [node for node in _nodes(doc) if node.get("kind") == ACCOUNT]


def valuation_currency(docs: Collection[Doc], columns: Collection[str]) -> str:
    """See the module's docstring."""
    quotes = {str(node["quote"]) for doc in docs for node in accounts_of(doc) if "quote" in node}
    if len(quotes) == 1 and not quotes & set(columns):
        return quotes.pop()
    return DEFAULT_QUOTE


def with_cash_wallets(doc: Doc, default_quote: str) -> Doc:
    """A copy of a real tree document whose every account holds a wallet of its quote."""
    out = copy.deepcopy(doc)
    for account in accounts_of(out):
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
    if not accounts_of(real):
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


def free_markets(markets: Markets, start: Doc, history: History, value: float) -> Markets:
    """`markets` with every exchange of `start`'s accounts that it does not name made explicit: each asset
    of the history (and the valuation currency) against each quote of its accounts, no fee, no minimum,
    a step of `FREE_STEP_SHARE` of `value` (the starting value) at the pair's lowest price."""
    quotes: dict[str, set[str]] = {}
    for account in accounts_of(start):
        exchange = str(account.get("exchange", ""))
        if exchange not in markets.exchanges:
            quotes.setdefault(exchange, set()).add(str(account.get("quote", history.quote)))
    if not quotes:
        return markets
    ones = np.ones(len(history))

    def column(asset: str) -> FloatArray:
        found = history.column(asset)
        return ones if found is None else history.prices[:, found]

    exchanges = dict(markets.exchanges)
    for exchange, names in sorted(quotes.items()):
        symbols: dict[str, Market] = {}
        for quote in sorted(names):
            for base in (*history.assets, history.quote):
                if base != quote and history.has(quote):
                    lowest = float(np.min(column(base) / column(quote)))
                    symbols[f"{base}/{quote}"] = Market(base, quote, amount_step=_step(value, lowest))
        exchanges[exchange] = symbols
    return Markets(exchanges)


def _step(value: float, price: float) -> Decimal:
    worth = FREE_STEP_SHARE * (value if value > 0 else 1.0) / price
    step = Decimal(1).scaleb(math.floor(math.log10(worth)))
    return min(max(step, SMALLEST), LARGEST)


def added_wallets(start: Doc, given: Doc) -> list[str]:
    """The wallets of `start` (paths) that the user's document `given` does not have."""
    have = {path for path, node in _paths(given) if "asset" in node}
    return [path for path, node in _paths(start) if "asset" in node and path not in have]


def quiet_added_cash(policy: Policy, paths: Collection[str]) -> Policy:
    """`policy` without a relative band on the wallets at `paths` (see the module's docstring); the same
    policy when it has no relative band, and a path the policy names itself keeps the policy's word."""
    relative = policy.bands.relative is not None or any(
        bands.get("relative") is not None for bands in policy.overrides.values()
    )
    quiet: dict[str, dict[Band, float | None]] = {
        path: {"relative": None} for path in paths if path not in policy.overrides
    }
    if not relative or not quiet:
        return policy
    return replace(policy, overrides={**quiet, **policy.overrides})


def _paths(doc: Doc) -> Iterator[tuple[str, Doc]]:
    stack = [(str(doc.get("name", "")), doc)]
    while stack:
        path, node = stack.pop()
        yield path, node
        stack.extend((f"{path}{PATH_SEP}{child.get('name')}", child) for child in node.get("children") or [])
