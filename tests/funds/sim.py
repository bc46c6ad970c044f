"""An in-memory account that fills net orders as the paper exchange does, to drive whole fund cycles.

The fee is charged in the quote: a buy costs ``amount·price`` rounded to 1e-8 plus the fee rounded up, a
sell yields the cost less the fee (as `rebal_venues.paper`). Only the pure core is exercised here; the
tests in `tests/funds/test_flow.py` run the same cycles against the real paper exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from rebal.core.funds import (
    CyclePlan,
    Due,
    Execution,
    NeedsAdjustment,
    NetOrder,
    Payout,
    Quote,
    pay_out,
    plan_cycle,
    resize_buys,
    settle,
)
from rebal.core.ledger import Fund, Ledger

QUANTUM = Decimal("1e-8")


def execution(order: NetOrder, price: Decimal, fee_rate: Decimal, fee_in_base: bool = False) -> Execution:
    cost = (order.amount * price).quantize(QUANTUM)
    if fee_in_base and order.side == "buy":  # the fee taken from the units bought
        return Execution(order.amount, cost, Decimal(0), order.amount * fee_rate)
    fee = (cost * fee_rate).quantize(QUANTUM, rounding=ROUND_CEILING)
    return Execution(order.amount, cost, fee)


@dataclass
class Account:
    """The venue account's balances; `fill_price` gives each order's fill price (default: its estimate)."""

    balances: dict[str, Decimal]
    quotes: Mapping[str, Quote]
    fill_price: Callable[[NetOrder], Decimal] = lambda order: order.est_price
    sent: list[NetOrder] = field(default_factory=list)
    fee_in_base: bool = False  # buys pay their fee in the asset bought (exchanges without a fee token)

    def execute(self, orders: tuple[NetOrder, ...], quote: str) -> dict[str, Execution]:
        done: dict[str, Execution] = {}
        for order in orders:
            market = self.quotes[order.asset].market
            result = execution(order, self.fill_price(order), market.fee_rate, self.fee_in_base)
            sign = 1 if order.side == "buy" else -1
            received = sign * result.amount - result.fee_base
            self.balances[order.asset] = self.balances.get(order.asset, Decimal(0)) + received
            cash = -(result.cost + result.fee) if order.side == "buy" else result.cost - result.fee
            self.balances[quote] = self.balances.get(quote, Decimal(0)) + cash
            assert all(v >= 0 for v in self.balances.values()), (order, self.balances)
            self.sent.append(order)
            done[order.asset] = result
        return done


@dataclass(frozen=True)
class Cycle:
    plan: CyclePlan
    phase2: CyclePlan
    payout: Payout
    fees: dict[str, Decimal]


def run_cycle(fund: Fund, ledger: Ledger, due: Due, account: Account) -> Cycle | NeedsAdjustment:
    """Plan, phase 1, resize, phase 2, pay out; the account pays the withdrawals out of the venue."""
    plan = plan_cycle(fund, ledger, due, account.quotes, free=dict(account.balances))
    if isinstance(plan, NeedsAdjustment):
        return plan
    first = settle(plan, plan.ledger, 1, account.execute(plan.phase_orders(1), fund.quote))
    resized = resize_buys(plan, first.ledger, free=dict(account.balances))
    second = settle(resized, first.ledger, 2, account.execute(resized.phase_orders(2), fund.quote))
    paid = pay_out(resized, second.ledger)
    account.balances[fund.quote] -= sum(paid.paid.values(), Decimal(0))
    users = plan.ledger.users
    fees = {
        user: (first.fees[i] + second.fees[i]) * QUANTUM
        for i, user in enumerate(users)
        if first.fees[i] + second.fees[i]
    }
    return Cycle(plan, resized, paid, fees)
