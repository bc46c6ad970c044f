"""Sizing an account's buys from facts: the quote it really holds after the sells, at current prices.

The planner sized the buys from a snapshot and estimated prices; by the time they are placed the sells
have filled at their own prices and the market has moved. `size_buys` keeps the planned amounts when the
account's free quote pays for them (fees and a price buffer included); otherwise it scales every buy down
by one factor and truncates to the market's step, so the buys never cost more than the budget. A buy that
then falls under one step or a market minimum is skipped with the planner's reason names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from rebal.core.market import Market
from rebal.core.numbers import floor_steps, steps_to_decimal

# The scale factor is truncated to this quantum, so scaled costs stay below the budget.
FACTOR_QUANTUM = Decimal("1e-12")
BELOW_STEP = "below_step"
BELOW_MIN_AMOUNT = "below_min_amount"
BELOW_MIN_COST = "below_min_cost"


@dataclass(frozen=True)
class BuyRequest:
    """A planned buy: `leg` (its index in the plan), base `amount`, current `price` (quote per base)."""

    leg: int
    amount: Decimal
    price: Decimal
    market: Market

    def cost(self, amount: Decimal, price_buffer: Decimal) -> Decimal:
        """What `amount` costs in the quote with the fee, at the price raised by `price_buffer`."""
        return amount * self.price * (1 + price_buffer) * (1 + self.market.fee_rate)


@dataclass(frozen=True)
class SizedBuy:
    leg: int
    planned: Decimal
    amount: Decimal


@dataclass(frozen=True)
class SkippedBuy:
    leg: int
    planned: Decimal
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class Sizing:
    """The buys to place, the ones skipped, and the factor applied (1 when the budget covered all)."""

    factor: Decimal
    buys: tuple[SizedBuy, ...]
    skipped: tuple[SkippedBuy, ...]

    @property
    def adjusted(self) -> bool:
        return bool(self.skipped) or any(buy.amount != buy.planned for buy in self.buys)


def size_buys(requests: Sequence[BuyRequest], budget: Decimal, price_buffer: Decimal = Decimal(0)) -> Sizing:
    """Fit `requests` (buys of one account against one quote) into `budget` (its free quote)."""
    total = sum((request.cost(request.amount, price_buffer) for request in requests), Decimal(0))
    if total <= budget:
        factor = Decimal(1)
    elif budget <= 0:
        factor = Decimal(0)
    else:
        factor = (budget / total).quantize(FACTOR_QUANTUM, rounding=ROUND_DOWN)
    buys: list[SizedBuy] = []
    skipped: list[SkippedBuy] = []
    for request in requests:
        market = request.market
        wanted = request.amount * factor
        amount = steps_to_decimal(floor_steps(wanted, market.amount_step), market.amount_step)
        reason = _below_minimum(request, amount)
        if reason:
            skipped.append(SkippedBuy(request.leg, request.amount, wanted, reason))
        else:
            buys.append(SizedBuy(request.leg, request.amount, amount))
    return Sizing(factor, tuple(buys), tuple(skipped))


def _below_minimum(request: BuyRequest, amount: Decimal) -> str:
    if amount <= 0:
        return BELOW_STEP
    if amount < request.market.min_amount:
        return BELOW_MIN_AMOUNT
    if amount * request.price < request.market.min_cost:
        return BELOW_MIN_COST
    return ""
