"""Funds' cycles: many users' flows on one venue account netted into few orders.

A fund is a target composition (asset → weight, the quote asset is cash) traded on one account. Each
user's part is a row of the `Ledger` (`rebal.core.ledger`: whole units, every sum exact); the ledger is
held against the venue (dust, drift, splits, reconciliation) by `rebal.core.fund_checks`.

A cycle takes what is due at one time (deposits to invest, withdrawals, a rebalance) and nets it:

1. `plan_cycle` turns every user's flow into legs: units of an asset the user gives up (`sells`) and quote
   the user spends on an asset (`budgets`). Per asset the legs are crossed internally at the cycle's
   reference price (a seller and a buyer of the same asset trade with each other, no fee); only the net
   goes to the venue, at most one order per asset: net sells in phase 1, net buys in phase 2.
2. `settle` allocates an asset's venue execution and the internal cross back to the users, pro rata to
   their legs (largest-remainder apportionment, so the parts add up exactly): what the net side's users
   receive and pay, including the venue's fee.
3. `resize_buys` sizes phase 2 from the cash the users really hold after phase 1 ("buy with the actual
   proceeds"), then `pay_out` pays withdrawals from the users' cash.

Policies (stated, and reported in the plan):

- A deposit is split by the fund's target weights. Small buys (the portfolio planner's policy too,
  `rebal.core.plan`): assets whose net buy (bought only, nothing sold) is under the market's minimum are
  taken by descending target weight (then name), each raised to the minimum order while what the buyers
  put into those assets lasts; the budgets of those that no longer fit pay for it, pro rata, and what
  is left of them stays the buyers' cash (`Skipped`), invested by a later cycle. Five assets at 20%, a
  45 USDT deposit, a minimum cost of 10: four buys of 10 and 5 left in cash, where each 9 alone would
  have bought nothing. One deposit alone (`split_deposit`) follows the same rule.
- A withdrawal sells the user's holdings in proportion, grossed up for the fee rates and a
  `WITHDRAWAL_MARGIN` against price moves; the user is paid exactly what was asked, and what the margin
  (or a fee saved by netting) leaves over stays the user's cash. A full withdrawal sells everything and
  pays out all the cash: exactly what the holdings fetched. Net sells never exceed the venue's free
  balance; when our own open orders lock the rest, the plan lists them to release (`Release`) first.
- Crossing happens at the reference price, so every budget is kept: a net buy is sized at the reference
  price raised by `BUY_PRICE_MARGIN` and the fee.
- An inactive or delisted market, or an asset without a positive price, puts the fund in
  `NeedsAdjustment`: no order at all. An asset frozen by a suspected split is left out of the cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt

from rebal.core.errors import InputError
from rebal.core.ledger import (
    LEDGER_QUANTUM,
    Fund,
    Ledger,
    Units,
    apportion,
    ceil_units,
    floor_units,
    from_units,
    give,
    to_units,
)
from rebal.core.market import Market, Markets, Prices

Floats = npt.NDArray[np.float64]
Side = Literal["buy", "sell"]

# A partial withdrawal sells this much more than the fee-grossed amount, against the price moving down
# before the sell fills; what is left over stays the user's cash.
WITHDRAWAL_MARGIN = Decimal("0.002")
# Net buys are sized at the reference price raised by this, so a fill up to that price stays in budget.
BUY_PRICE_MARGIN = Decimal("0.005")
# What a net sell sent to the venue will yield is counted this much below the reference price when a user's
# buys are paid from it: a buy crossed in phase 1 is final, and the sell paying for it may fill lower (the
# executor ends a run whose prices moved more than its `max_price_move`, 2% by default).
SELL_PRICE_MARGIN = Decimal("0.02")
# Units kept back per asset when resizing buys to the cash held: each apportionment may be off by one.
RESIZE_SLACK_UNITS = 1
# Rounds of shrinking budgets to the proceeds a netted plan really produces before dropping the budgets
# of users who still do not fit.
FIT_ROUNDS = 8

BELOW_MIN_AMOUNT = "below_min_amount"
BELOW_MIN_COST = "below_min_cost"
BELOW_STEP = "below_step"
FROZEN = "frozen"
NOT_FREE = "exceeds_free_balance"


# What is due, and the market.


@dataclass(frozen=True)
class Due:
    """What a cycle is asked to do: deposits to invest (already credited as cash), withdrawals (the net
    cash a user wants; None for everything) and whether the whole fund rebalances."""

    deposits: Mapping[str, Decimal] = field(default_factory=dict)
    withdrawals: Mapping[str, Decimal | None] = field(default_factory=dict)
    rebalance: bool = False


@dataclass(frozen=True)
class Quote:
    """One non-quote asset's market at the time of the cycle."""

    market: Market
    price: Decimal
    active: bool = True


@dataclass(frozen=True)
class NetOrder:
    """One order for the venue: the fund's net of every user's legs in one asset."""

    asset: str
    symbol: str
    side: Side
    amount: Decimal
    est_price: Decimal
    est_fee: Decimal
    phase: int


@dataclass(frozen=True)
class Skipped:
    """A net order not sent (below a minimum, frozen, capped by the free balance), and its size."""

    asset: str
    side: Side
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class Release:
    """Funds of ours locked in open orders on the account, to release (cancel those orders) before the
    cycle's net sell of `asset`, because the free balance alone does not cover it."""

    asset: str
    amount: Decimal


@dataclass(frozen=True)
class Netting:
    """What netting saved: orders and estimated fees one user at a time versus the net orders."""

    user_orders: int
    user_fees: Decimal
    user_below_minimum: int
    net_orders: int
    net_fees: Decimal

    @property
    def orders_saved(self) -> int:
        return self.user_orders - self.net_orders

    @property
    def fees_saved(self) -> Decimal:
        return self.user_fees - self.net_fees


@dataclass(frozen=True)
class NeedsAdjustment:
    """The fund cannot trade until an operator adjusts it (delisted or inactive market, no price)."""

    fund_id: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Rejected:
    """A withdrawal asking for more than the user's holdings fetch (after fees)."""

    user: str
    asked: Decimal
    worth: Decimal


@dataclass(frozen=True)
class CyclePlan:
    """Every user's legs of one cycle and the net orders; `phase_of[j]` is asset j's phase (1 or 2)."""

    fund: Fund
    ledger: Ledger
    prices: tuple[Decimal, ...]
    markets: tuple[Market | None, ...]
    sells: Units
    budgets: Units
    wants: Units
    full: npt.NDArray[np.bool_]
    phase_of: tuple[int, ...]
    orders: tuple[NetOrder, ...]
    skipped: tuple[Skipped, ...]
    rejected: tuple[Rejected, ...]
    netting: Netting
    releases: tuple[Release, ...] = ()

    def phase_orders(self, phase: int) -> tuple[NetOrder, ...]:
        return tuple(order for order in self.orders if order.phase == phase)

    @property
    def partial(self) -> npt.NDArray[np.bool_]:
        """The rows withdrawing part of their holdings (their sells are served first)."""
        return (self.wants > 0) & ~self.full


@dataclass(frozen=True)
class Execution:
    """What the venue did for one net order: base amount filled, its gross cost, the fee in the quote and
    the fee the venue took in the traded asset itself (a buy's fee deducted from the units it received,
    as exchanges do when the fee is not paid in the quote or a third asset)."""

    amount: Decimal
    cost: Decimal
    fee: Decimal
    fee_base: Decimal = Decimal(0)


@dataclass(frozen=True)
class Settlement:
    """The ledger after a phase and each user's share of the venue fees in it (quote units)."""

    ledger: Ledger
    fees: Units


@dataclass(frozen=True)
class Payout:
    ledger: Ledger
    paid: Mapping[str, Decimal]
    short: Mapping[str, Decimal]


def _reference(
    fund: Fund, assets: Sequence[str], quotes: Mapping[str, Quote]
) -> tuple[list[Decimal], list[Market | None], list[str]]:
    prices: list[Decimal] = [Decimal(1)]
    markets: list[Market | None] = [None]
    reasons: list[str] = []
    for asset in assets[1:]:
        quote = quotes.get(asset)
        if quote is None or quote.price <= 0:
            reasons.append(f"{asset}: no positive price")
        elif not quote.active:
            reasons.append(f"{asset}: market {quote.market.symbol} is inactive")
        elif (quote.market.amount_step / LEDGER_QUANTUM) % 1 != 0:
            reasons.append(f"{asset}: amount step {quote.market.amount_step} is finer than {LEDGER_QUANTUM}")
        prices.append(quote.price if quote is not None else Decimal(0))
        markets.append(quote.market if quote is not None else None)
    return prices, markets, reasons


def _below_minimum(market: Market, amount: Decimal, price: Decimal) -> str:
    if amount <= 0:
        return BELOW_STEP
    if amount < market.min_amount:
        return BELOW_MIN_AMOUNT
    if amount * price < market.min_cost:
        return BELOW_MIN_COST
    return ""


def plan_cycle(
    fund: Fund,
    ledger: Ledger,
    due: Due,
    quotes: Mapping[str, Quote],
    *,
    free: Mapping[str, Decimal] | None = None,
    frozen: frozenset[str] = frozenset(),
    locked: Mapping[str, Decimal] | None = None,
) -> CyclePlan | NeedsAdjustment:
    """Net everything `due` into at most one order per asset (see the module's policies)."""
    assets = fund.assets(ledger.assets)
    if ledger.assets != assets:
        ledger = ledger.with_assets(assets)
    price_list, market_list, reasons = _reference(fund, assets, quotes)
    if reasons:
        return NeedsAdjustment(fund.fund_id, tuple(reasons))
    n_users, n_assets = ledger.units.shape
    prices = np.array([float(p) for p in price_list])
    fee = np.array([0.0] + [float(m.fee_rate) if m is not None else 0.0 for m in market_list[1:]])
    weights = np.array([float(fund.weights.get(asset, Decimal(0))) for asset in assets])
    tradable = np.array([j > 0 and asset not in frozen for j, asset in enumerate(assets)])
    held = ledger.units.astype(np.float64)  # units; value in quote units = units × price
    values = held * prices
    sells = np.zeros((n_users, n_assets), dtype=np.int64)
    budgets = np.zeros((n_users, n_assets), dtype=np.float64)
    wants = np.zeros(n_users, dtype=np.int64)
    full = np.zeros(n_users, dtype=np.bool_)
    rejected: list[Rejected] = []

    # Withdrawals: the fraction of every holding to sell (cash counts, proceeds after fees).
    fraction = np.zeros(n_users)
    for user, amount in sorted(due.withdrawals.items()):
        i = ledger.row(user)
        if i is None:
            rejected.append(Rejected(user, amount or Decimal(0), Decimal(0)))
            continue
        worth = float(values[i, 0] + (values[i, 1:] * (1 - fee[1:]) * tradable[1:]).sum())
        if amount is None:
            full[i], fraction[i] = True, 1.0
            continue
        asked = to_units(amount, f"withdrawals.{user}")
        phi = asked / worth if worth > 0 else float("inf")
        if phi > 1:
            rejected.append(Rejected(user, amount, from_units(int(worth)).quantize(LEDGER_QUANTUM)))
            continue
        wants[i] = asked
        fraction[i] = min(1.0, phi * (1 + float(WITHDRAWAL_MARGIN)))
    sell_fraction = fraction[:, None] * tradable[None, :]

    # Rebalance: every user towards the weights on what the withdrawal leaves.
    if due.rebalance:
        kept = values * (1 - fraction[:, None])
        total_kept = kept.sum(axis=1)
        # Weights of frozen assets stay where they are: the rest is spread over the tradable weights.
        fixed = kept[:, ~tradable[:]].copy()
        fixed[:, 0] = 0.0  # cash is tradable against the weights
        movable = total_kept - fixed.sum(axis=1)
        mask = tradable.copy()
        mask[0] = True
        norm = weights[mask].sum()
        target = np.zeros_like(values)
        if norm > 0:
            target[:, mask] = movable[:, None] * (weights[mask] / norm)[None, :]
        delta = (target - kept) * tradable[None, :]
        over = np.where(delta < 0, -delta, 0.0)
        sell_fraction = sell_fraction + np.divide(over, values, out=np.zeros_like(values), where=values > 0)
        budgets += np.where(delta > 0, delta, 0.0)
        full_users = full | (fraction >= 1)
        budgets[full_users] = 0.0
    # Deposits: the amount split by the weights (the quote's weight stays cash; frozen assets too).
    for user, amount in sorted(due.deposits.items()):
        i = ledger.row(user)
        if i is None:
            raise InputError(f"deposits.{user}", "credit the deposit to the ledger before the cycle")
        if due.rebalance or full[i]:
            continue  # a rebalance already brings the user's cash to the weights
        budgets[i] += float(to_units(amount, f"deposits.{user}")) * weights * tradable
    # A partial withdrawal's legs round up (a floored unit can be worth more than a small ask's margin).
    wanted_sells = held * np.minimum(sell_fraction, 1.0)
    rounded = np.where((wants > 0)[:, None], np.ceil(wanted_sells), np.floor(wanted_sells))
    sells = np.minimum(rounded.astype(np.int64), ledger.units)
    sells[:, ~tradable] = 0
    sells[full] = ledger.units[full] * tradable[None, :]

    # A user never spends more than the cash held plus the estimated proceeds, less what is paid out.
    proceeds = (sells * prices * (1 - fee)).sum(axis=1)  # `_fit` counts what netting really yields
    reserve = np.where(full, held[:, 0], wants.astype(np.float64))
    cash = held[:, 0] - reserve - RESIZE_SLACK_UNITS * (n_assets - 1)
    room = np.maximum(cash + proceeds, 0.0)
    spend = budgets.sum(axis=1)
    scale = np.divide(room, spend, out=np.ones_like(room), where=spend > room)
    budget_units = np.floor(budgets * scale[:, None]).astype(np.int64)
    budget_units[:, 0] = 0

    draft = CyclePlan(
        fund=fund,
        ledger=ledger,
        prices=tuple(price_list),
        markets=tuple(market_list),
        sells=sells,
        budgets=budget_units,
        wants=wants,
        full=full,
        phase_of=(0,) * n_assets,
        orders=(),
        skipped=(),
        rejected=tuple(rejected),
        netting=Netting(0, Decimal(0), 0, 0, Decimal(0)),
    )
    return _fit(draft, cash, tradable, free, frozen, locked)


def _proceeds(
    plan: CyclePlan, columns: npt.NDArray[np.bool_], phase: int | None = None, margin: float = 0.0
) -> Floats:
    """Each user's cash from the sells in `columns` (of phase `phase`, or any) that the netted plan really
    turns into cash: a net buy crosses every sell at the reference price; a net sell crosses what the
    buyers want and sends the net order (less the fee, and less `margin` of its price). A net sell under a
    market minimum (or capped by the free balance) leaves the rest unsold: that part yields no cash."""
    proceeds = np.zeros(len(plan.ledger.users))
    sent = {order.asset: to_units(order.amount) for order in plan.orders if order.side == "sell"}
    for j, asset in enumerate(plan.ledger.assets[1:], start=1):
        sold = int(plan.sells[:, j].sum())
        if not columns[j] or sold == 0 or (phase is not None and plan.phase_of[j] != phase):
            continue
        market, price = plan.markets[j], float(plan.prices[j])
        fee = float(market.fee_rate) if market is not None else 0.0
        wanted = int(Decimal(int(plan.budgets[:, j].sum())) / plan.prices[j])
        if wanted >= sold:
            proceeds += np.floor(plan.sells[:, j] * price)
            continue
        total = wanted + sent.get(asset, 0)
        given = give(total, plan.sells[:, j], plan.partial)
        venue = sent.get(asset, 0) * (1 - fee) * (1 - margin)
        average = (wanted + venue) / total if total else 0.0
        proceeds += np.floor(given * price * average)
    return proceeds


def _fit(
    draft: CyclePlan,
    cash: Floats,
    columns: npt.NDArray[np.bool_],
    free: Mapping[str, Decimal] | None,
    frozen: frozenset[str],
    locked: Mapping[str, Decimal] | None = None,
    phase: int | None = None,
) -> CyclePlan:
    """Net `draft`, shrinking each user's budgets in `columns` until they fit `cash` (what the user may
    spend of the cash held) plus the proceeds of the sells in `columns` (settled in `phase`, or any) the
    netted plan really produces.

    A sell leg only yields cash when it is crossed or goes out in the net order: counting a sell that the
    netting leaves unsold (under a minimum) would let a user's crossed buy be paid with cash that never
    comes, and the user's cash go negative. Budgets only shrink, so crossing less can make more sells
    unsold: repeat until every user fits; a user who still does not fit after `FIT_ROUNDS` spends
    nothing in `columns`.
    """
    budgets = draft.budgets.copy()
    for attempt in range(FIT_ROUNDS + len(draft.ledger.users) + 1):
        plan = _net(replace(draft, budgets=budgets), free, frozen, locked)
        # Everything the user buys fits the cash plus the sells' proceeds at the reference price (phase 2
        # is sized again from the cash really held); what is crossed in phase 1 is final, so it must also
        # fit with the venue sells paying for it filled `SELL_PRICE_MARGIN` lower.
        limits = [(columns, np.maximum(np.floor(cash + _proceeds(plan, columns, phase)), 0.0))]
        if phase is None:
            first_phase = columns & (np.array(plan.phase_of) == 1)
            margin = float(SELL_PRICE_MARGIN)
            room = np.maximum(np.floor(cash + _proceeds(plan, columns, phase, margin)), 0.0)
            limits.append((first_phase, room))
        over = np.zeros(len(cash), dtype=np.bool_)
        for cols, room in limits:
            spend = budgets[:, cols].sum(axis=1).astype(np.float64)
            exceeded = spend > room
            over |= exceeded
            if exceeded.any() and attempt < FIT_ROUNDS:
                scale = np.divide(room, spend, out=np.ones_like(room), where=exceeded)
                scaled = np.floor(budgets[:, cols] * scale[:, None]).astype(np.int64)
                budgets[:, cols] = np.minimum(budgets[:, cols], scaled)
        if not over.any():
            return plan
        if attempt >= FIT_ROUNDS:  # one user at a time, so every round drops at least one user's budgets
            first = int(np.flatnonzero(over)[0])
            budgets[first, columns] = 0
    raise AssertionError("unreachable: every round fits or drops a user's budgets")


def _net(
    plan: CyclePlan,
    free: Mapping[str, Decimal] | None,
    frozen: frozenset[str],
    locked: Mapping[str, Decimal] | None = None,
) -> CyclePlan:
    """The net order per asset from the users' legs, the phase of each asset, and the netting figures."""
    assets = plan.ledger.assets
    plan = replace(plan, budgets=_raise_small_buys(plan, frozen))
    phase_of = [0]
    orders: list[NetOrder] = []
    skipped: list[Skipped] = []
    user_orders = user_below = 0
    user_fees = net_fees = Decimal(0)
    sells = plan.sells.copy()
    releases: list[Release] = []
    for j, asset in enumerate(assets[1:], start=1):
        market, price = plan.markets[j], plan.prices[j]
        assert market is not None
        step = to_units(market.amount_step)
        sold = int(sells[:, j].sum())
        budget = int(plan.budgets[:, j].sum())
        wanted = int(budget / price)  # units the buyers' budgets buy at the reference price
        # One user at a time: every leg its own order, if it meets the minimums.
        user_orders_j, user_fees_j, user_below_j = _standalone(
            plan.sells[:, j], plan.budgets[:, j], market, price
        )
        user_orders += user_orders_j
        user_fees += user_fees_j
        user_below += user_below_j
        if asset in frozen:  # left out of the cycle: its legs were never made, its share stays cash
            phase_of.append(1)
            skipped.append(Skipped(asset, "buy", Decimal(0), FROZEN))
            continue
        if sold >= wanted:
            side: Side = "sell"
            net = sold - wanted
            cap = floor_units(free.get(asset, Decimal(0))) if free is not None else None
            if cap is not None and net > cap and locked:
                # Our own open orders hold some of it: they are cancelled first, then the sell goes out.
                released = min(net - cap, floor_units(locked.get(asset, Decimal(0))))
                if released > 0:
                    releases.append(Release(asset, from_units(released)))
                    cap += released
            short = -net % step
            if net and short:
                # Truncating the net sell to the step would leave withdrawals short: the sellers sell up
                # to the next step instead, from what they still hold, pro rata (the rest is their cash).
                room = np.where(sells[:, j] > 0, plan.ledger.units[:, j] - sells[:, j], 0)
                if int(room.sum()) >= short and (cap is None or net + short <= cap):
                    sells[:, j] += apportion(short, room)
                    net += short
                    sold += short
            if cap is not None and net > cap:
                skipped.append(Skipped(asset, side, from_units(net - cap), NOT_FREE))
                net = cap
            phase = 1
        else:
            side = "buy"
            remaining = Decimal(budget) - Decimal(sold) * price
            per_unit = price * (1 + market.fee_rate) * (1 + BUY_PRICE_MARGIN)
            net = int(remaining / per_unit)
            phase = 2
        residue = net
        net -= net % step
        phase_of.append(phase)
        if net == 0 and sold == 0 and budget == 0:
            continue
        amount = from_units(net)
        reason = _below_minimum(market, amount, price)
        if reason:
            if residue > 0:
                skipped.append(Skipped(asset, side, from_units(residue), reason))
            continue
        if side == "sell" and residue > net:  # under a step stays unsold: the sellers keep it (reported)
            skipped.append(Skipped(asset, side, from_units(residue - net), BELOW_STEP))
        est_fee = (amount * price * market.fee_rate).quantize(LEDGER_QUANTUM, rounding=ROUND_CEILING)
        net_fees += est_fee
        orders.append(NetOrder(asset, market.symbol, side, amount, price, est_fee, phase))
    orders.sort(key=lambda o: (o.phase, o.asset))
    return replace(
        plan,
        sells=sells,
        phase_of=tuple(phase_of),
        orders=tuple(orders),
        skipped=tuple(skipped),
        netting=Netting(user_orders, user_fees, user_below, len(orders), net_fees),
        releases=tuple(releases),
    )


def _least_units(market: Market, price: Decimal) -> int:
    """The smallest order (in ledger units, whole steps) that meets the market's minimum amount and cost."""
    step = market.amount_step
    need = max(market.min_amount, market.min_cost / price if price > 0 else Decimal(0), step)
    steps = (need / step).to_integral_value(rounding=ROUND_CEILING)
    return to_units(steps * step)


def _raise_small_buys(plan: CyclePlan, frozen: frozenset[str]) -> Units:
    """The small-buy policy on the users' budgets (see the module's policies): the budgets of the pure
    buys under their market's minimum, largest target weight first, are raised to what buys the minimum
    order while those budgets together last; the ones that no longer fit give, pro rata per user, what
    the raised ones need. Each user's total budget is unchanged."""
    budgets = plan.budgets.astype(np.int64).copy()
    assets = plan.ledger.assets
    small: list[tuple[int, int, int]] = []  # (column, its budget, the budget that buys the minimum)
    for j, asset in enumerate(assets[1:], start=1):
        market, price = plan.markets[j], plan.prices[j]
        budget = int(budgets[:, j].sum())
        if market is None or asset in frozen or budget <= 0 or int(plan.sells[:, j].sum()) > 0:
            continue
        per_unit = price * (1 + market.fee_rate) * (1 + BUY_PRICE_MARGIN)
        net = int(Decimal(budget) / per_unit)
        net -= net % to_units(market.amount_step)
        if not _below_minimum(market, from_units(net), price):
            continue
        needed = int((Decimal(_least_units(market, price)) * per_unit).to_integral_value(ROUND_CEILING)) + 1
        small.append((j, budget, needed))
    weights = plan.fund.weights
    pool = sum(budget for _, budget, _ in small)
    raised: list[tuple[int, int]] = []
    for j, budget, needed in sorted(
        small, key=lambda t: (-weights.get(assets[t[0]], Decimal(0)), assets[t[0]])
    ):
        if needed > pool:
            break  # while the budget lasts: the rest stays cash
        pool -= needed
        raised.append((j, needed - budget))
    donors = [j for j, _, _ in small if j not in {k for k, _ in raised}]
    extra = sum(more for _, more in raised)
    if not raised or extra <= 0:
        return budgets
    given = apportion(extra, budgets[:, donors].ravel()).reshape(len(budgets), len(donors))
    budgets[:, donors] -= given
    left = given.sum(axis=1)
    for j, more in raised:
        share = apportion(more, left)
        budgets[:, j] += share
        left -= share
    return budgets


def _standalone(sells: Units, budgets: Units, market: Market, price: Decimal) -> tuple[int, Decimal, int]:
    """Orders, estimated fees and legs under the minimums if each user's legs went to the venue alone."""
    step = float(market.amount_step)
    p = float(price)
    sell_amounts = np.floor(sells * float(LEDGER_QUANTUM) / step) * step
    buy_amounts = np.floor(budgets * float(LEDGER_QUANTUM) / (p * (1 + float(market.fee_rate))) / step) * step
    amounts = np.concatenate([sell_amounts[sells > 0], buy_amounts[budgets > 0]])
    ok = (amounts > 0) & (amounts >= float(market.min_amount)) & (amounts * p >= float(market.min_cost))
    fees = float((amounts[ok] * p).sum()) * float(market.fee_rate)
    return int(ok.sum()), Decimal(repr(fees)).quantize(LEDGER_QUANTUM), int((~ok).sum())


def settle(plan: CyclePlan, ledger: Ledger, phase: int, executions: Mapping[str, Execution]) -> Settlement:
    """Allocate phase `phase`: each asset's internal cross at the reference price and its venue
    execution (missing: nothing filled) to the users, pro rata to their legs, exactly.

    Buyers receive the crossed units plus the units the venue bought and pay the cross value plus the
    venue's cost and fee; sellers give the crossed units plus the units the venue sold and receive the
    cross value plus the venue's proceeds. Debits round up and credits down, so the venue always holds at
    least the ledgers' sum.
    """
    rows = _rows(plan, ledger)
    units = ledger.units.copy()
    fees = np.zeros(len(ledger.users), dtype=np.int64)
    for j, asset in enumerate(plan.ledger.assets[1:], start=1):
        if plan.phase_of[j] != phase:
            continue
        order = next((o for o in plan.orders if o.asset == asset), None)
        execution = executions.get(asset, Execution(Decimal(0), Decimal(0), Decimal(0)))
        if order is None and execution.amount:
            raise ValueError(f"{asset}: an execution for an asset without a net order")
        price = plan.prices[j]
        sells, budgets = plan.sells[:, j], plan.budgets[:, j]
        sold, budget = int(sells.sum()), int(budgets.sum())
        filled = floor_units(execution.amount)
        wanted = int(Decimal(budget) / price)
        side = order.side if order is not None else ("sell" if sold >= wanted else "buy")
        if side == "sell":
            crossed = min(wanted, sold - filled)
            cross_value = int(Decimal(crossed) * price)
            given = give(crossed + filled, sells, plan.partial)
            proceeds = floor_units(execution.cost - execution.fee)
            units[rows, j] -= given
            units[rows, 0] += apportion(cross_value + proceeds, given) if crossed + filled else 0
            units[rows, j] += apportion(crossed, budgets) if budget else 0
            units[rows, 0] -= apportion(cross_value, budgets) if budget else 0
            if filled:
                fees[rows] += apportion(ceil_units(execution.fee), given)
        else:
            cross_value = int(Decimal(sold) * price)
            paid = ceil_units(execution.cost + execution.fee)
            fee_units = ceil_units(execution.fee_base)  # taken from the units bought: received less
            units[rows, j] -= sells
            units[rows, 0] += apportion(cross_value, sells) if sold else 0
            units[rows, j] += apportion(sold + filled - fee_units, budgets) if budget else 0
            units[rows, 0] -= apportion(cross_value + paid, budgets) if budget else 0
            if filled:
                fee_value = ceil_units(execution.fee + execution.fee_base * price)
                fees[rows] += apportion(fee_value, budgets)
    # Phase 1 may leave cash owed (a buy crossed now, paid by a sell crossed in phase 2 at the reference
    # price, known exactly); after phase 2 nothing may be negative.
    if (units[:, 1:] < 0).any() or (phase == 2 and (units[:, 0] < 0).any()):
        i, j = map(int, np.argwhere(units < 0)[0])
        raise ValueError(
            f"settling phase {phase} would overdraw {ledger.users[i]}'s {ledger.assets[j]}:"
            " the execution does not fit the plan"
        )
    return Settlement(Ledger(ledger.assets, ledger.users, units), fees)


def _rows(plan: CyclePlan, ledger: Ledger) -> npt.NDArray[np.intp]:
    """Where each of the plan's users is in `ledger` (users credited since the plan get rows of their own)."""
    if ledger.assets != plan.ledger.assets:
        raise ValueError(f"the ledger's assets {ledger.assets} are not the plan's {plan.ledger.assets}")
    if ledger.users == plan.ledger.users:
        return np.arange(len(ledger.users))
    index = ledger._index
    missing = [user for user in plan.ledger.users if user not in index]
    if missing:
        raise ValueError(f"users of the plan missing from the ledger: {missing[:5]}")
    return np.array([index[user] for user in plan.ledger.users], dtype=np.intp)


def resize_buys(
    plan: CyclePlan,
    ledger: Ledger,
    free: Mapping[str, Decimal] | None = None,
    locked: Mapping[str, Decimal] | None = None,
) -> CyclePlan:
    """Phase 2 sized from the cash the users hold after phase 1: each user's phase-2 budgets shrink when
    the cash (plus the cross proceeds of the user's phase-2 sells that the re-netted plan still settles in
    phase 2, less what is paid out) does not cover them; the net orders are made again (`_fit`)."""
    phase2 = np.array([p == 2 for p in plan.phase_of])
    if not phase2.any():
        return plan
    cash = ledger.units[_rows(plan, ledger), 0].astype(np.float64)
    reserve = np.where(plan.full, cash, np.minimum(plan.wants, cash))
    spare = cash - reserve - RESIZE_SLACK_UNITS * int(phase2.sum())
    frozen = frozenset(s.asset for s in plan.skipped if s.reason == FROZEN)
    return _fit(plan, spare, phase2, free, frozen, locked, phase=2)


def pay_out(plan: CyclePlan, ledger: Ledger) -> Payout:
    """Pay each withdrawal from the user's cash: what was asked (or all the cash on a full withdrawal);
    a user whose cash falls short gets what there is and the shortfall is reported."""
    units = ledger.units.copy()
    paid: dict[str, Decimal] = {}
    short: dict[str, Decimal] = {}
    for i in np.flatnonzero(plan.full | (plan.wants > 0)):
        user = plan.ledger.users[i]
        row = ledger.row(user)
        assert row is not None
        cash = int(units[row, 0])
        amount = cash if plan.full[i] else min(int(plan.wants[i]), cash)
        if not plan.full[i] and amount < plan.wants[i]:
            short[user] = from_units(int(plan.wants[i]) - amount)
        units[row, 0] -= amount
        paid[user] = from_units(amount)
    return Payout(Ledger(ledger.assets, ledger.users, units), paid, short)


# Prices, and one deposit alone.


def fund_quotes(fund: Fund, prices: Prices, markets: Markets, assets: Sequence[str]) -> dict[str, Quote]:
    """Each non-quote asset's market and price in the fund's quote. A symbol the exchange's markets do not
    list (any more) is an inactive market; an asset without a price is left out (both make a cycle
    `NeedsAdjustment`). An exchange without markets is unconstrained (`Markets`)."""
    quotes: dict[str, Quote] = {}
    known = markets.exchanges.get(fund.exchange)
    quote_price = prices.get(fund.quote)
    for asset in assets[1:]:
        price = prices.get(asset)
        if price is None or quote_price is None or quote_price <= 0:
            continue
        market = Market(asset, fund.quote) if known is None else known.get(f"{asset}/{fund.quote}")
        quotes[asset] = Quote(market or Market(asset, fund.quote), price / quote_price, market is not None)
    return quotes


def split_deposit(
    amount: Decimal, weights: Mapping[str, Decimal], quotes: Mapping[str, Quote], quote: str
) -> tuple[dict[str, Decimal], Decimal]:
    """One deposit on its own: the quote to spend per asset and what stays cash, by the small-buy policy:
    an asset whose share buys at least the minimum spends its share; the others, largest weight first,
    spend what buys the minimum order while what they were given together lasts."""
    spend: dict[str, Decimal] = {}
    small: list[tuple[str, Decimal, Decimal]] = []
    for asset, weight in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])):
        if asset == quote or weight == 0:
            continue
        share = (amount * weight).quantize(LEDGER_QUANTUM, rounding=ROUND_FLOOR)
        market = quotes[asset].market
        price = quotes[asset].price
        base = share / (price * (1 + market.fee_rate))
        base -= base % market.amount_step
        if not _below_minimum(market, base, price):
            spend[asset] = share
        else:
            least = from_units(_least_units(market, price)) * price * (1 + market.fee_rate)
            small.append((asset, share, least.quantize(LEDGER_QUANTUM, rounding=ROUND_CEILING)))
    pool = sum((share for _, share, _ in small), Decimal(0))
    for asset, _, least in small:  # already by descending weight
        if least > pool:
            break
        spend[asset] = least
        pool -= least
    return spend, amount - sum(spend.values(), Decimal(0))
