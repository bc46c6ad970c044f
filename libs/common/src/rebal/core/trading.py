"""Where a trade happens and at what price: the venue's side of the book, the cheapest route, and moves.

A plan made with per-venue prices, a network file or pools (`rebal.core.where`) trades through these:

- `VenuePrices`: a sell on exchange X is estimated at X's bid, a buy at X's ask (`rebal.core.venues`),
  else at the reference price; a market ``BASE/QUOTE`` sells at bid(BASE)/ask(QUOTE) and buys at
  ask(BASE)/bid(QUOTE);
- `cheapest_route`: the route from an asset to an account's quote through at most two intermediate
  assets (three markets, ``ABC/ETH``, ``ETH/BTC``, ``BTC/USDT``) with the best effective rate, fees and
  spreads included; ties are broken by name: a route's name is the tuple of its markets' symbols in
  order (``("ABC/BNB", "BNB/BTC", "BTC/USDT")`` before ``("ABC/ETH", "ETH/USDT")``), compared item by
  item; a direct market is no route (nothing to route through) and keeps a tie;
  a sell with no such route takes the inverse market (``QUOTE/ASSET``, e.g. ``USDT/USD`` for USD held
  in an account trading against USDT) when listed;
- `Move`: an asset sent from one account to another instead of being sold in one and bought in the
  other, or sent to be sold where the bid is better (decided by `rebal.core.where`, applied by the plan).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Literal, NamedTuple

from rebal.core.market import Market, Markets, Prices, Route
from rebal.core.networks import Networks

# Effective rates this close (relative) are a tie: decided by the routes' names (`cheapest_route`).
RATE_TIE = 1e-12
# Derived decimals (estimated prices) keep this many significant digits, as the plan's.
DERIVED = Context(prec=18)
# A price derived from a venue's two quotes (bid(BASE)/ask(QUOTE)) keeps the significant digits of the more
# precise of them, and at least this many: 60390 / 1.001 is 60329.670, not 60329.6703296703297 (digits no
# venue quoted, which then ran into the estimated cost and fee).
VENUE_PRICE_DIGITS = 8
MoveKind = Literal["round_trip", "relocation"]


@dataclass(frozen=True)
class VenuePrices:
    """Side-aware prices: a venue's bid and ask where the prices file gives them, else the reference."""

    prices: Prices
    # Each (exchange, base, quote, side)'s float price, found once: a plan asks thousands of times for a
    # few hundred (routes, groups, costs).
    _price: dict[tuple[str, str, str, bool], float] = field(default_factory=dict, compare=False, repr=False)
    _shown: dict[tuple[str, str, str, bool], float] = field(default_factory=dict, compare=False, repr=False)

    def value(self, exchange: str, asset: str, sell: bool) -> Decimal | None:
        """What one unit of `asset` fetches (`sell`) or costs on `exchange`, in the valuation currency."""
        quote = self.prices.venues.get(exchange, {}).get(asset)
        side = None if quote is None else (quote.bid if sell else quote.ask)
        return side if side is not None else self.prices.get(asset)

    def exact(self, exchange: str, market: Market, sell: bool) -> Decimal:
        """The estimated price of `market` (quote per base): bid(BASE)/ask(QUOTE) for a sell."""
        base, quote = self.value(exchange, market.base, sell), self.value(exchange, market.quote, not sell)
        assert base is not None and quote is not None, "prices are checked by diff_trees"
        digits = max(VENUE_PRICE_DIGITS, _digits(base), _digits(quote))
        return Context(prec=digits).divide(base, quote)

    def price(self, exchange: str, market: Market, sell: bool) -> float:
        key = (exchange, market.base, market.quote, sell)
        found = self._price.get(key)
        if found is None:
            base = self.value(exchange, market.base, sell)
            quote = self.value(exchange, market.quote, not sell)
            found = math.nan if base is None or quote is None else float(base) / float(quote)
            self._price[key] = found
        return found

    def shown(self, exchange: str, market: Market, sell: bool) -> float:
        """`exact` as a float (NaN where a price is missing): what orders are sized at, so that a buy's
        estimated cost and fee as the plan shows them (at `exact`) stay within its budget, and a route's
        next leg sells no more than the previous one shows it yields."""
        key = (exchange, market.base, market.quote, sell)
        found = self._shown.get(key)
        if found is None:
            base = self.value(exchange, market.base, sell)
            quote = self.value(exchange, market.quote, not sell)
            found = math.nan if base is None or quote is None else float(self.exact(exchange, market, sell))
            self._shown[key] = found
        return found

    def rate(self, exchange: str, market: Market, sell: bool) -> float:
        """Quote received per base sold, net of the fee; or quote paid per base bought, fee included."""
        fee = market.floats[3]  # the fee rate as a float, made once per market
        return self.price(exchange, market, sell) * (1 - fee if sell else 1 + fee)

    def route_rate(self, exchange: str, route: Route, sell: bool) -> float:
        """The route's effective rate: quote received per unit of the asset sold (net of every leg's fee
        and spread), or quote paid per unit bought. An inverse route (``QUOTE/ASSET``) buys the quote
        with the asset (a sell) or sells the quote for it (a buy): the market's rate on the other side,
        turned over."""
        if route.inverse:
            return 1.0 / self.rate(exchange, route.legs[0], not sell)
        total = 1.0
        for market in route.legs:
            total *= self.rate(exchange, market, sell)
        return total


def _digits(value: Decimal) -> int:
    """A decimal's significant digits (60000 has one, 1.001 four)."""
    return len(value.normalize().as_tuple().digits)


def markets_by_base(known: Mapping[str, Market]) -> dict[str, list[Market]]:
    """An exchange's markets by their base asset."""
    found: dict[str, list[Market]] = {}
    for market in known.values():
        found.setdefault(market.base, []).append(market)
    return found


def _paths(
    known: Mapping[str, Market], by_base: Mapping[str, list[Market]], asset: str, quote: str
) -> Iterator[tuple[Market, ...]]:
    """Every chain ``asset/X1 … Xn/quote`` of at most three markets, distinct assets along it (`by_base`:
    the markets `known` by their base)."""
    direct = known.get(f"{asset}/{quote}")
    if direct is not None:
        yield (direct,)
    for first in by_base.get(asset, ()):
        middle = first.quote
        if middle in (asset, quote):
            continue
        second = known.get(f"{middle}/{quote}")
        if second is not None:
            yield (first, second)
        for hop in by_base.get(middle, ()):
            other = hop.quote
            if other in (asset, quote, middle):
                continue
            last = known.get(f"{other}/{quote}")
            if last is not None:
                yield (first, hop, last)


def cheapest_route(
    markets: Markets,
    prices: VenuePrices,
    exchange: str,
    asset: str,
    quote: str,
    sell: bool,
    bases: dict[str, dict[str, list[Market]]] | None = None,
) -> Route | None:
    """The best route from `asset` to `quote` on `exchange` for a sell (highest rate) or a buy (lowest
    cost), at most three markets; ties by name (the tuple of the markets' symbols in order), a direct
    market before any route through an intermediate. None: no route. An
    exchange the markets file does not list trades every direct pair (`Markets.route`). `bases`: each
    exchange's markets by base (`markets_by_base`), kept there once found (a plan asks for hundreds of
    routes)."""
    known = markets.exchanges.get(exchange)
    if known is None:
        return Route((Market(base=asset, quote=quote),))
    bases = {} if bases is None else bases
    if exchange not in bases:
        bases[exchange] = markets_by_base(known)
    best: tuple[float, tuple[bool | str, ...], Route] | None = None
    for route in _routes(known, bases[exchange], asset, quote, sell):
        rate = prices.route_rate(exchange, route, sell)
        if not math.isfinite(rate) or rate <= 0:
            continue
        score = -rate if sell else rate
        names: tuple[bool | str, ...] = (len(route.legs) > 1, *(market.symbol for market in route.legs))
        if best is None or _better(score, names, best[0], best[1]):
            best = (score, names, route)
    return best[2] if best is not None else None


def _routes(
    known: Mapping[str, Market], by_base: Mapping[str, list[Market]], asset: str, quote: str, sell: bool
) -> Iterator[Route]:
    """`_paths` as routes; for a sell that has none, the inverse market ``QUOTE/ASSET`` (as
    `Markets.route`: a last resort, so a plan that had a route keeps it, also where the inverse market's
    minimums would refuse what the route clears)."""
    found = False
    for legs in _paths(known, by_base, asset, quote):
        found = True
        yield Route(legs)
    inverse = known.get(f"{quote}/{asset}")
    if sell and not found and inverse is not None:
        yield Route((inverse,), inverse=True)


def _better(
    score: float, names: tuple[bool | str, ...], best: float, best_names: tuple[bool | str, ...]
) -> bool:
    if abs(score - best) > RATE_TIE * max(abs(score), abs(best)):
        return score < best
    return names < best_names


class Move(NamedTuple):
    """`amount` of `asset` withdrawn from account node `source` and credited, less `fee`, to `destination`.

    A round trip avoided (`round_trip`): the source sells that much less and the destination buys that
    much less (the fee is lost). A relocated sell (`relocation`): the destination sells what arrives.
    (A named tuple: a plan makes thousands, and a frozen dataclass takes five times longer to make.)"""

    asset: str
    source: int
    destination: int
    amount: Decimal
    fee: Decimal
    network: str
    kind: MoveKind
    # Estimated saving against the plain choice (valuation currency) and the reason shown.
    saving: float = 0.0

    @property
    def received(self) -> Decimal:
        return self.amount - self.fee


@dataclass(frozen=True)
class Trading:
    """How a where-mode plan trades: side-aware prices, cheapest routes, networks and moves."""

    prices: VenuePrices
    markets: Markets
    networks: Networks | None = None
    moves: tuple[Move, ...] = ()
    banks: frozenset[int] = frozenset()  # account nodes of kind bank: nothing trades there
    min_trade_value: float = 0.0  # orders worth less are skipped (`rebal.core.plan.plan_rebalance`)
    _routes: dict[tuple[str, str, str, bool], Route | None] = field(default_factory=dict, compare=False)
    _bases: dict[str, dict[str, list[Market]]] = field(default_factory=dict, compare=False)

    def route(self, exchange: str, asset: str, quote: str, sell: bool) -> Route | None:
        key = (exchange, asset, quote, sell)
        if key not in self._routes:
            self._routes[key] = cheapest_route(
                self.markets, self.prices, exchange, asset, quote, sell, self._bases
            )
        return self._routes[key]
