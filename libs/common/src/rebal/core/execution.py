"""The executor's pure rules: run and order state machines, guardrails, and sizing legs from facts.

A run and each of its orders are explicit state machines (transition tables below). Asking for a
transition the table does not allow gives an `IllegalTransition` value, never a silent change; the
executor records every allowed transition in its journal (append-only) before acting on it.

Run:   queued → sells_in_progress → buys_in_progress → completed | completed_with_adjustments
       any unfinished state → cancelled (before any order) | cancelled_mid_run | replan_needed | error
       | timed_out (replan_needed: prices moved beyond the tolerance between the sells and the buys)
Order: created → submitted → accepted → partially_filled → filled | cancelled | rejected | expired,
       and outcome_unknown (a submit without an answer) → whatever a look-up by client id shows, or
       lost (look-ups over a whole window proved the venue never saw it, and it will not be sent again).

No I/O, no clock: values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

from rebal.core.numbers import floor_steps, steps_to_decimal

RunState = Literal[
    "queued",
    "sells_in_progress",
    "buys_in_progress",
    "completed",
    "completed_with_adjustments",
    "cancelled",
    "cancelled_mid_run",
    "replan_needed",
    "error",
    "timed_out",
]
OrderStage = Literal[
    "created",
    "submitted",
    "outcome_unknown",
    "accepted",
    "partially_filled",
    "filled",
    "cancelled",
    "rejected",
    "expired",
    "lost",
]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)
ORDER_STAGES: tuple[OrderStage, ...] = get_args(OrderStage)

RUN_FINAL: frozenset[RunState] = frozenset(
    {
        "completed",
        "completed_with_adjustments",
        "cancelled",
        "cancelled_mid_run",
        "replan_needed",
        "error",
        "timed_out",
    }
)
ORDER_FINAL: frozenset[OrderStage] = frozenset({"filled", "cancelled", "rejected", "expired", "lost"})
_RUN_ENDS: frozenset[RunState] = frozenset({"cancelled_mid_run", "replan_needed", "error", "timed_out"})

RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    # A queued run that never started may be cancelled (superseded, halted, refused) or fail.
    "queued": frozenset({"sells_in_progress", "cancelled", "error"}),
    "sells_in_progress": _RUN_ENDS | {"buys_in_progress"},
    "buys_in_progress": _RUN_ENDS | {"completed", "completed_with_adjustments"},
    **{state: frozenset() for state in RUN_FINAL},
}

# Where an order may go from each stage. A venue may report any later stage at once (a market order is
# often filled by the time we look), so forward jumps are allowed; nothing ever goes back.
_AFTER_ACCEPT: frozenset[OrderStage] = frozenset({"partially_filled", "filled", "cancelled", "expired"})
ORDER_TRANSITIONS: Mapping[OrderStage, frozenset[OrderStage]] = {
    "created": frozenset({"submitted", "rejected"}),
    "submitted": _AFTER_ACCEPT | {"accepted", "outcome_unknown", "rejected", "lost"},
    "outcome_unknown": _AFTER_ACCEPT | {"submitted", "accepted", "rejected", "lost"},
    "accepted": _AFTER_ACCEPT,
    "partially_filled": frozenset({"filled", "cancelled", "expired"}),
    **{stage: frozenset() for stage in ORDER_FINAL},
}


@dataclass(frozen=True)
class IllegalTransition:
    """A transition the table does not allow: `what` is "run" or "order"."""

    what: str
    current: str
    wanted: str

    @property
    def reason(self) -> str:
        return f"illegal {self.what} transition {self.current} -> {self.wanted}"


def run_transition(current: RunState, wanted: RunState) -> RunState | IllegalTransition:
    """`wanted` when the run may go there from `current`; staying where it is is allowed (idempotent)."""
    if wanted == current or wanted in RUN_TRANSITIONS[current]:
        return wanted
    return IllegalTransition("run", current, wanted)


def order_transition(current: OrderStage, wanted: OrderStage) -> OrderStage | IllegalTransition:
    """`wanted` when the order may go there from `current`; staying where it is is allowed."""
    if wanted == current or wanted in ORDER_TRANSITIONS[current]:
        return wanted
    return IllegalTransition("order", current, wanted)


def stage_of(venue_status: str, filled: Decimal) -> OrderStage:
    """Our stage for a venue status; an open order with fills is partially filled."""
    if venue_status == "open":
        return "partially_filled" if filled > 0 else "accepted"
    if venue_status in ("filled", "partially_filled", "cancelled", "rejected", "expired"):
        return venue_status  # type: ignore[return-value]
    raise ValueError(f"unknown venue order status {venue_status!r}")


# -- guardrails -----------------------------------------------------------------------------------------

ABOVE_ORDER_NOTIONAL = "above_max_order_notional"
ABOVE_RUN_NOTIONAL = "above_max_run_notional"


def notional_refusal(
    notional: Decimal, run_so_far: Decimal, max_order: Decimal | None, max_run: Decimal | None
) -> str:
    """Why an order worth `notional` may not be sent when the run already sent `run_so_far` ("" if it may).

    Both limits are in the market's quote; None means no limit."""
    if max_order is not None and notional > max_order:
        return ABOVE_ORDER_NOTIONAL
    if max_run is not None and run_so_far + notional > max_run:
        return ABOVE_RUN_NOTIONAL
    return ""


# -- sizing legs from facts -----------------------------------------------------------------------------


def sell_amount(planned: Decimal, free: Decimal, step: Decimal) -> Decimal:
    """What a sell may really sell: the planned amount, or all that is free (whole steps) when less is held
    than planned (a "sell all" planned on a snapshot that fees or an earlier fill have since reduced)."""
    if planned <= free:
        return planned
    return steps_to_decimal(floor_steps(free, step), step) if free > 0 else Decimal(0)


@dataclass(frozen=True)
class OpenLock:
    """What one of our own open orders locks on an account: `amount` of `asset` (a sell locks its unfilled
    base, a buy the quote its unfilled part would cost)."""

    client_order_id: str
    asset: str
    amount: Decimal


def locked_by(
    side: str, symbol: str, amount: Decimal, filled: Decimal, price: Decimal
) -> tuple[str, Decimal]:
    """The asset and amount an open order of `amount` (of which `filled` is done) locks: the unfilled base of
    a sell, the unfilled part x `price` of the quote for a buy."""
    base, _, quote = symbol.partition("/")
    left = max(amount - filled, Decimal(0))
    return (base, left) if side == "sell" else (quote, left * price)


@dataclass(frozen=True)
class Release:
    """Which of our open orders to cancel so a leg needing `needed` of an asset can have it, and what stays
    short even then (locked by orders that are not ours, or simply not held)."""

    cancel: tuple[OpenLock, ...]
    releases: Decimal
    short: Decimal


def to_release(needed: Decimal, free: Decimal, ours: Iterable[OpenLock]) -> Release:
    """The fewest of OUR open orders to cancel so `free` reaches `needed`: none when enough is free, else the
    largest locks first (ties by client id) until enough is released, or all of them when even that is not
    enough. Only the orders given are ever chosen: an external order is never in `ours`."""
    if free >= needed:
        return Release((), Decimal(0), Decimal(0))
    chosen: list[OpenLock] = []
    released = Decimal(0)
    for lock in sorted((o for o in ours if o.amount > 0), key=lambda o: (-o.amount, o.client_order_id)):
        if free + released >= needed:
            break
        chosen.append(lock)
        released += lock.amount
    return Release(tuple(chosen), released, max(needed - free - released, Decimal(0)))


def received(
    side: str, amount: Decimal, price: Decimal, fee: Decimal, fee_asset: str, base: str, quote: str
) -> Decimal:
    """What a fill delivers of the asset it trades into (the base for a buy, the quote for a sell), net of
    the fee when the venue charges it in that asset (many deduct a buy's fee from the coins received)."""
    if side == "buy":
        return amount - fee if fee_asset == base else amount
    proceeds = amount * price
    return proceeds - fee if fee_asset == quote else proceeds


# A sell's second leg is taken for a routed one when it spends no more than the first leg's expected
# proceeds raised by this much (the planner sizes it from them, truncated to its step).
ROUTE_TOLERANCE = Decimal("0.01")


def routed_sell(
    first_symbol: str, first_amount: Decimal, first_price: Decimal, second_symbol: str, second_amount: Decimal
) -> bool:
    """Whether the sell `second` spends what the sell `first` delivers: ``A/X`` then ``X/Q``, and the second
    amount is within the first's expected proceeds (a routed order, e.g. XYZ → BTC → USDT). A false match
    only ever lowers the second amount, never raises it."""
    delivered_asset = first_symbol.partition("/")[2]
    spent_asset = second_symbol.partition("/")[0]
    if not delivered_asset or delivered_asset != spent_asset or first_price <= 0:
        return False
    return second_amount <= first_amount * first_price * (1 + ROUTE_TOLERANCE)


def routed_buy(first_side: str, first_symbol: str, second_side: str, second_symbol: str) -> bool:
    """Whether the buy `second` spends what the buy `first` delivers: ``X/Q`` then ``A/X`` (a routed buy,
    e.g. USDT → BTC → XYZ): the intermediate X is stranded when the second leg does not fill."""
    if first_side != "buy" or second_side != "buy":
        return False
    return first_symbol.partition("/")[0] == second_symbol.partition("/")[2] != ""


def spendable(budget: Decimal, run_change: Decimal, free: Decimal) -> Decimal:
    """What a run may spend of an asset on an account now: its plan's budget (the free, unlocked amount at
    the snapshot, with the planned transfers) moved by what the run's own fills did to it (sells' proceeds
    in, earlier buys out), and never more than the venue shows free. A deposit that lands mid-run, or a
    bot's locked quote, raises `free` but never `budget`."""
    return max(min(budget + run_change, free), Decimal(0))


def price_moved(planned: Decimal, current: Decimal, tolerance: Decimal) -> bool:
    """True when `current` is further than `tolerance` (a fraction) from the `planned` price."""
    if planned <= 0:
        return False
    return abs(current - planned) > planned * tolerance


# -- coalescing triggers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """A plan waiting to run: its run id, its portfolio and when it was planned (an ISO time or any
    sortable key), in arrival order."""

    run_id: str
    portfolio: str
    planned_at: str


def coalesce(queued: tuple[Queued, ...]) -> tuple[tuple[Queued, ...], Mapping[str, str]]:
    """(the runs to keep, in arrival order; superseded run → the run that supersedes it).

    The rule: per portfolio only the newest plan (latest `planned_at`, then the latest to arrive) waits;
    every older queued plan of that portfolio is superseded by it (a plan is computed from the whole
    portfolio, so the newest one already includes what the older ones wanted)."""
    newest: dict[str, Queued] = {}
    for item in queued:
        best = newest.get(item.portfolio)
        if best is None or item.planned_at >= best.planned_at:
            newest[item.portfolio] = item
    keep = tuple(item for item in queued if newest[item.portfolio] is item)
    superseded = {
        item.run_id: newest[item.portfolio].run_id for item in queued if newest[item.portfolio] is not item
    }
    return keep, superseded


# -- balances against fills ------------------------------------------------------------------------------

# The tolerance of an asset no market trades as its base (a quote: USDT): venues round each fill's cost to
# their quote precision (1e-8 on the paper exchange and Binance), so a run's fills may explain its quote
# balance to within a few of those; more than this is someone else's doing.
BALANCE_QUOTE_TOLERANCE = Decimal("0.000001")


@dataclass(frozen=True)
class TradedFill:
    """A journaled fill with what its order traded: enough to say how it moved the balances."""

    symbol: str
    side: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: str


def expected_change(fills: Iterable[TradedFill]) -> dict[str, Decimal]:
    """How the fills move an account's balances, per asset: a buy adds its amount of the base and spends
    ``amount·price`` of the quote, a sell the reverse, and every fee is taken from its own asset (the base
    received on Binance, the quote on the paper exchange). Assets left unchanged are omitted."""
    change: dict[str, Decimal] = {}

    def add(asset: str, delta: Decimal) -> None:
        change[asset] = change.get(asset, Decimal(0)) + delta

    for fill in fills:
        base, _, quote = fill.symbol.partition("/")
        sign = 1 if fill.side == "buy" else -1
        add(base, sign * fill.amount)
        add(quote, -sign * fill.amount * fill.price)
        if fill.fee:
            add(fill.fee_asset, -fill.fee)
    return {asset: delta for asset, delta in sorted(change.items()) if delta != 0}


def balance_tolerances(markets: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Per asset, the difference between a balance's move and its fills that is still rounding: the
    smallest amount step of the markets trading it as their base (from ``(base, amount_step)`` pairs);
    an asset not listed gets `BALANCE_QUOTE_TOLERANCE`."""
    steps: dict[str, Decimal] = {}
    for base, step in markets:
        steps[base] = min(step, steps.get(base, step))
    return steps


@dataclass(frozen=True)
class BalanceDiscrepancy:
    """An asset whose balance moved by `moved` while the run's fills explain `explained`."""

    asset: str
    moved: Decimal
    explained: Decimal

    @property
    def difference(self) -> Decimal:
        return self.moved - self.explained


def balance_discrepancies(
    before: Mapping[str, Decimal],
    after: Mapping[str, Decimal],
    explained: Mapping[str, Decimal],
    tolerances: Mapping[str, Decimal],
) -> tuple[BalanceDiscrepancy, ...]:
    """The assets (sorted) whose total balance moved from `before` to `after` by more than the fills
    explain, beyond the asset's tolerance (`balance_tolerances`; `BALANCE_QUOTE_TOLERANCE` if absent): a
    deposit, a withdrawal or a trade that is not the run's."""
    found = []
    for asset in sorted(set(before) | set(after) | set(explained)):
        moved = after.get(asset, Decimal(0)) - before.get(asset, Decimal(0))
        discrepancy = BalanceDiscrepancy(asset, moved, explained.get(asset, Decimal(0)))
        if abs(discrepancy.difference) > tolerances.get(asset, BALANCE_QUOTE_TOLERANCE):
            found.append(discrepancy)
    return tuple(found)


# -- working a leg: limit prices and slices --------------------------------------------------------------

BPS = Decimal(10_000)


def limit_price(side: str, bid: Decimal, ask: Decimal, offset_bps: Decimal, tick: Decimal) -> Decimal:
    """A limit order's price: a buy at the best bid, a sell at the best ask, moved `offset_bps` towards
    the other side (positive: inside the spread, it fills sooner; negative: further back in the book),
    then to the price tick — a buy down, a sell up, so the rounding never makes it more aggressive than
    asked. `tick` 0: no tick known, the price as computed."""
    if side == "buy":
        raw = bid * (1 + offset_bps / BPS)
        return steps_to_decimal(floor_steps(raw, tick), tick) if tick > 0 else raw
    raw = ask * (1 - offset_bps / BPS)
    if tick <= 0:
        return raw
    steps = floor_steps(raw, tick)
    return steps_to_decimal(steps if steps_to_decimal(steps, tick) == raw else steps + 1, tick)


def slice_amount(
    left: Decimal,
    max_value: Decimal | None,
    price: Decimal,
    step: Decimal,
    min_amount: Decimal,
    min_cost: Decimal,
) -> Decimal:
    """The next slice of a large order: what is left, at most `max_value` (in the market's quote) at
    `price`, in whole steps (at least one, so a slice always makes progress). A rest the market would
    refuse (under its minimum amount or cost) goes with this slice rather than stay behind as dust."""
    if max_value is None or left * price <= max_value or price <= 0:
        return left
    cap = min(left, max(steps_to_decimal(floor_steps(max_value / price, step), step), step))
    rest = left - cap
    return left if rest < min_amount or rest * price < min_cost else cap


def affordable(
    wanted: Decimal, spend_cap: Decimal, spent: Decimal, price: Decimal, fee_rate: Decimal, step: Decimal
) -> Decimal:
    """What a buy's next order may ask for so that the leg never spends more than `spend_cap` of the quote
    (what it was sized to spend) over all its orders: what is left of the cap after `spent`, at the most
    the order can cost per unit (`price`: a limit order's own, a market order's raised by the buffer),
    with the fee, in whole steps, at most `wanted`."""
    room = spend_cap - spent
    if room <= 0 or price <= 0:
        return Decimal(0)
    return min(wanted, steps_to_decimal(floor_steps(room / (price * (1 + fee_rate)), step), step))
