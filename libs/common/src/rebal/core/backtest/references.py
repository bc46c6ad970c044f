"""Two other backtesters' fill rules, to check the replay against them (bench/backtest.py).

The replay's own rule fills the core's plan (`rebal.core.backtest.book`). bt and vectorbt size their
orders differently around the fee, so their final values and fees differ from ours by what their rules
explain; with the replay switched to one of these rules the figures agree to rounding. Both apply to a
portfolio of one account whose quote is the valuation currency, with a direct market per asset; they
trade fractional amounts (no steps, no minimums), as those tools do by default.

- **bt** (`Security.allocate`): each asset, in tree order, is given the cash `desired - current value`;
  a buy spends exactly that, fee included (it buys ``delta / (price x (1 + fee))``); a sell raises
  exactly that after its fee (it sells ``|delta| / (price x (1 - fee))``); an asset whose target is 0 is
  closed (sold in full). The cash ends where the target puts it.
- **vectorbt** (`Portfolio.from_orders`, size type target percent, cash shared, ``call_seq="auto"``):
  each order is ``(desired - current value) / price`` before fees, the group's value taken once before
  the row's orders; orders run by ascending value (sells first); a sell yields its value less the fee, a
  buy costs its value plus the fee, and a buy the cash cannot pay is cut to what the cash buys (fee
  included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np

from rebal.core.backtest.book import Balances, Book, Filled, Layout
from rebal.core.diff import DiffTree
from rebal.core.market import Markets

FillRule = Literal["rebal", "bt", "vectorbt"]
FILL_RULES: tuple[FillRule, ...] = ("rebal", "bt", "vectorbt")
# vectorbt's own tolerance for "the cash covers the order" (vectorbt.utils.math_.rel_tol).
VECTORBT_REL_TOL = 1e-9


def _first_seen(assets: list[tuple[int, str | None]]) -> Callable[[str], int]:
    """Assets in tree order (the order bt's weights and vectorbt's columns follow)."""
    order = {name: k for k, (_, name) in reversed(list(enumerate(assets))) if name is not None}
    return order.__getitem__


def fill_like(
    rule: FillRule,
    book: Book,
    layout: Layout,
    diff: DiffTree,
    markets: Markets,
    price_of: Mapping[str, float],
) -> Filled:
    """Trade `diff` (current to desired values) as `rule` does; see the module's docstring."""
    accounts = {account for account, _ in layout.groups}
    if len(accounts) != 1:
        raise ValueError(f"the {rule} fill rule takes a portfolio of one account")
    account = accounts.pop()
    quote = layout.quote_of[account]
    if price_of[quote] != 1.0:
        raise ValueError(f"the {rule} fill rule needs the quote {quote} to be the valuation currency")
    exchange = layout.exchange_of[account]
    balances = Balances(book, layout)
    cash_key = (account, quote)
    cash = balances.get(cash_key)
    legs: list[tuple[float, float, float, str, float]] = []  # (delta value, price, fee, asset, current)
    tree = diff.tree
    assets = [(node, tree.asset(node)) for node in np.flatnonzero(tree.wallet & ~diff.cash).tolist()]
    for asset in sorted({name for _, name in assets if name is not None}, key=_first_seen(assets)):
        nodes = [node for node, name in assets if name == asset]
        current = float(diff.current_value[nodes].sum())
        desired = float(diff.desired_value[nodes].sum())
        route = markets.route(exchange, asset, quote)
        if route is None or len(route.legs) != 1 or route.inverse:
            raise ValueError(f"the {rule} fill rule needs a direct market {asset}/{quote}")
        delta = desired - current if desired > 0 else -current
        legs.append((delta, price_of[asset], float(route.legs[0].fee_rate), asset, current))
    orders, traded, fees = 0, 0.0, 0.0
    if rule == "vectorbt":
        legs.sort(key=lambda leg: leg[0])
    for delta, price, fee, asset, current in legs:
        key = (account, asset)
        if delta == 0:
            continue
        if rule == "bt":
            if delta == -current:  # a target of 0: the position is closed (sold in full)
                notional, spent = -current, -current * (1 - fee)
            elif delta > 0:
                notional, spent = delta / (1 + fee), delta
            else:
                notional, spent = delta / (1 - fee), delta
            balances.add(key, notional / price)
            cash -= spent
            paid = abs(notional) * fee
        else:
            notional = delta
            if (
                delta > 0
                and delta * (1 + fee) > cash
                and not np.isclose(delta * (1 + fee), cash, rtol=VECTORBT_REL_TOL, atol=0.0)
            ):
                notional = max(cash, 0.0) / (1 + fee)
            paid = abs(notional) * fee
            balances.add(key, notional / price)
            cash -= notional + paid
        orders, traded, fees = orders + 1, traded + abs(notional), fees + paid
    balances.add(cash_key, cash - balances.get(cash_key))
    balances.write(diff.desired_free_amount)
    return Filled(orders, traded, fees)
