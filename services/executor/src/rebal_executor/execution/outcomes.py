"""How a step of a run can end, as values (expected outcomes are never exceptions), and the ids the
executor gives its orders at the venues."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from rebal.core.market import Market
from rebal.events import PlannedOrder, RunStatus, derive_id
from rebal.venue import MarketInfo

# Every client order id of ours starts with this (an unknown order with it is suspicious, still external).
OUR_PREFIX = "rb-"


def client_order_id(plan_id: uuid.UUID, leg: int, attempt: int = 0) -> str:
    """The order's id at the venue: the same plan, leg and attempt always give the same id (<= 36 chars)."""
    return f"{OUR_PREFIX}{derive_id(plan_id, leg, attempt).hex[:12]}-{leg}-{attempt}"


@dataclass(frozen=True)
class Stop:
    """The run cannot go on: how it ends and why (halted, authentication refused, prices moved)."""

    status: RunStatus
    reason: str


@dataclass(frozen=True)
class Rejected:
    """The venue refused the order (it holds no order under its id); `insufficient_funds` when for want of
    balance (the leg is resized once)."""

    reason: str
    insufficient_funds: bool


@dataclass(frozen=True)
class Unknown:
    """Still no answer after every attempt: the order stays outcome_unknown, reconciled later."""

    reason: str


@dataclass(frozen=True)
class Absent:
    """Every look-up over the window answered "not found": the venue never saw the order."""

    queries: int
    seconds: float


@dataclass(frozen=True)
class Unanswered:
    """No proof either way after the look-ups (they failed): the outcome stays unknown."""

    reason: str


@dataclass(frozen=True)
class BuyPlan:
    """Phase-2 amounts after sizing: leg → amount to place, or why it is skipped; `costs`: leg → the quote
    the sizing allotted it (at the prices it was sized at, with the buffer and the fee), the most it may
    spend over all its orders."""

    amounts: Mapping[int, Decimal]
    skipped: Mapping[int, str]
    costs: Mapping[int, Decimal] = field(default_factory=dict)


def market_of(info: MarketInfo) -> Market:
    """The core's market (steps, minimums, fee) of a venue's market."""
    return Market(info.base, info.quote, info.amount_step, info.min_amount, info.min_cost, info.fee_rate)


def spend_group(order: PlannedOrder) -> tuple[str, str, str]:
    """(exchange, account, the asset the order spends when it buys): buys are sized per group."""
    return order.exchange, order.account, order.symbol.partition("/")[2]


def describe(leg: int, order: PlannedOrder) -> str:
    """How the run report names a leg: ``leg 2 ETH/USDT buy``."""
    return f"leg {leg} {order.symbol} {order.side}"
