"""The orders that bring futures accounts' positions to the desired ones, and the pre-trade risk check.

For each account of kind ``futures`` whose desired tree lists ``positions`` (`rebal.core.positions`), per
symbol: the wanted amount is the desired notional at the contract's mark price, truncated toward zero to
the amount step; a difference within ``band x`` the account's value holds. The way from the amount held
``c`` to the amount wanted ``t`` (signed, one-way mode):

- reduce (``|t| < |c|``, same side) or close (``t = 0``): one ``reduceOnly`` order of ``|c| - |t|`` (or
  ``|c|``) against the position: phase 1, before anything opens, as sells come before buys on spot;
- open (``c = 0``) or increase (``|t| > |c|``, same side): one order of ``|t| - |c|`` (or ``|t|``): phase 2;
- flip (opposite sides): a ``reduceOnly`` close of ``|c|`` (phase 1) then an order opening ``|t|`` the
  other way (phase 2): if the opening fails, the account is flat rather than half-flipped.

An opening order is preceded by the symbol's settings (`PositionSetting`): the desired leverage and margin
mode; the margin mode of a position that stays open cannot change (Binance: "Margin type cannot be
changed if there exists position"), so it is then left as it is and noted. Orders under the contract's
minimum amount, or opening orders under its minimum notional (reduce-only orders are exempt from
Binance's MIN_NOTIONAL filter), are skipped with a reason, as on spot.

`risk_refusal` is the executor's pre-trade check on the positions a plan leads to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Context, Decimal
from typing import Literal, NamedTuple

import numpy as np

from rebal.core.contracts import Contract, Contracts
from rebal.core.errors import InputError
from rebal.core.margin import Held, liquidation_distance, liquidation_price
from rebal.core.numbers import dec_str
from rebal.core.positions import FUTURES, MarginMode, Position, TargetPosition
from rebal.core.union import UnionTree

Side = Literal["buy", "sell"]
REDUCE_PHASE, OPEN_PHASE = 1, 2
# Reasons a position order is not emitted (besides the spot planner's BELOW_MIN_AMOUNT/BELOW_MIN_COST).
NO_CONTRACT = "no_contract"
NO_MARK_PRICE = "no_mark_price"
BELOW_STEP = "below_step"
BELOW_MIN_AMOUNT = "below_min_amount"
BELOW_MIN_COST = "below_min_cost"
MARGIN_MODE_LOCKED = "margin_mode_locked"
# Estimates keep this many significant digits.
DERIVED = Context(prec=18)


class PositionOrder(NamedTuple):
    account: str
    exchange: str
    symbol: str
    side: Side
    amount: Decimal
    reduce_only: bool
    est_price: Decimal
    est_notional: Decimal
    est_fee: Decimal
    phase: int


class PositionSetting(NamedTuple):
    """What to set on a symbol before its opening order (None: leave it as it is)."""

    account: str
    exchange: str
    symbol: str
    leverage: int | None
    margin_mode: MarginMode | None


class PositionSkip(NamedTuple):
    path: str
    symbol: str
    side: Side
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class PositionPlan:
    orders: tuple[PositionOrder, ...] = ()
    settings: tuple[PositionSetting, ...] = ()
    skips: tuple[PositionSkip, ...] = ()


@dataclass(frozen=True)
class _Account:
    path: str
    exchange: str
    quote: str
    value: Decimal
    held: Mapping[str, Position]
    wanted: Mapping[str, TargetPosition]


def futures_accounts(tree: UnionTree) -> list[_Account]:
    """The futures accounts whose desired tree lists positions, with what they hold and want. A futures
    account's wallets must hold its collateral (its quote) only, and its contracts settle in its quote."""
    real, target = tree.real, tree.target
    accounts = [node for node in sorted(tree.accounts) if tree.kinds[node] == FUTURES]
    if not accounts:
        return []
    wallets = np.flatnonzero(tree.wallet & np.isin(tree.account_of, accounts)).tolist()
    values = dict.fromkeys(accounts, Decimal(0))
    for node in wallets:
        account = int(tree.account_of[node])
        quote, asset = tree.accounts[account][1], tree.asset(node)
        if asset != quote:
            source = "real" if tree.real_index[node] >= 0 else "target"
            raise InputError(
                tree.path(node),
                f"a futures account's wallets hold its collateral ({quote}) only, not {asset}",
                source,
            )
        if tree.real_index[node] >= 0:
            values[account] += real.exact_amount(int(tree.real_index[node]))
    found: list[_Account] = []
    for node in accounts:
        exchange, quote = tree.accounts[node]
        path = tree.path(node)
        r, t = int(tree.real_index[node]), int(tree.target_index[node])
        held = {p.symbol: p for p in real.positions.get(r, ()) if isinstance(p, Position)} if r >= 0 else {}
        listed = target.positions.get(t) if t >= 0 else None
        for symbol in [*held, *(p.symbol for p in listed or ())]:
            if not symbol.endswith(f"/{quote}:{quote}"):
                raise InputError(path, f"{symbol} does not settle in the account's quote {quote}")
        if listed is None:
            continue  # the desired tree does not manage this account's positions
        wanted = {p.symbol: p for p in listed if isinstance(p, TargetPosition)}
        if not target.keep_unlisted[t]:
            for symbol in held.keys() - wanted.keys():
                wanted[symbol] = TargetPosition(symbol, Decimal(0))
        found.append(_Account(path, exchange, quote, values[node], held, wanted))
    return found


def plan_positions(tree: UnionTree, contracts: Contracts, band: Decimal = Decimal(0)) -> PositionPlan:
    """The position orders, settings and skips of every futures account (see the module doc)."""
    orders: list[PositionOrder] = []
    settings: list[PositionSetting] = []
    skips: list[PositionSkip] = []
    for account in futures_accounts(tree):
        for symbol in sorted(account.held.keys() | account.wanted.keys()):
            wanted = account.wanted.get(symbol)
            if wanted is None:
                continue  # kept as it is (keep_unlisted)
            held = account.held.get(symbol)
            _plan_symbol(account, symbol, held, wanted, contracts, band, orders, settings, skips)
    orders.sort(key=lambda o: (o.phase, o.account, o.symbol))
    return PositionPlan(tuple(orders), tuple(settings), tuple(skips))


def _plan_symbol(
    account: _Account,
    symbol: str,
    held: Position | None,
    wanted: TargetPosition,
    contracts: Contracts,
    band: Decimal,
    orders: list[PositionOrder],
    settings: list[PositionSetting],
    skips: list[PositionSkip],
) -> None:
    current = held.amount if held is not None else Decimal(0)
    contract = contracts.get(account.exchange, symbol)
    side: Side = "buy" if wanted.notional > current * (held.mark_price if held else 0) else "sell"
    if contract is None:
        skips.append(PositionSkip(account.path, symbol, side, Decimal(0), NO_CONTRACT))
        return
    mark = contract.mark_price or (held.mark_price if held is not None else None)
    if mark is None:
        skips.append(PositionSkip(account.path, symbol, side, Decimal(0), NO_MARK_PRICE))
        return
    target = _amount_of(wanted.notional, mark, contract.amount_step)
    if target == current or abs(wanted.notional - current * mark) <= band * account.value:
        if target == 0 and current == 0 and wanted.notional != 0:  # wanted, but less than one step
            skips.append(PositionSkip(account.path, symbol, side, Decimal(0), BELOW_STEP))
        return
    reduce, opening = _legs(current, target)

    def order(side: Side, amount: Decimal, reduce_only: bool) -> PositionOrder:
        notional = DERIVED.multiply(amount, mark)
        return PositionOrder(
            account.path,
            account.exchange,
            symbol,
            side,
            amount,
            reduce_only,
            mark,
            _plain(notional),
            _plain(DERIVED.multiply(notional, contract.fee_rate)),
            REDUCE_PHASE if reduce_only else OPEN_PHASE,
        )

    if reduce > 0:
        close_side: Side = "sell" if current > 0 else "buy"
        if reduce < contract.min_amount:
            skips.append(PositionSkip(account.path, symbol, close_side, reduce, BELOW_MIN_AMOUNT))
        else:
            orders.append(order(close_side, reduce, True))
    if opening > 0:
        open_side: Side = "buy" if target > 0 else "sell"
        reason = (
            BELOW_MIN_AMOUNT
            if opening < contract.min_amount
            else BELOW_MIN_COST
            if opening * mark < contract.min_cost
            else ""
        )
        if reason:
            skips.append(PositionSkip(account.path, symbol, open_side, opening, reason))
            return
        mode = wanted.margin_mode
        if mode is not None and held is not None and current * target > 0 and held.margin_mode != mode:
            # The position stays open: its margin mode cannot change; it is increased as it is.
            skips.append(PositionSkip(account.path, symbol, open_side, Decimal(0), MARGIN_MODE_LOCKED))
            mode = None
        if wanted.leverage is not None or mode is not None:
            settings.append(PositionSetting(account.path, account.exchange, symbol, wanted.leverage, mode))
        orders.append(order(open_side, opening, False))


def _plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros nor exponent, so its text is plain (5220.000 is 5220, not 5.22E+3)."""
    return Decimal(dec_str(value))


def _amount_of(notional: Decimal, mark: Decimal, step: Decimal) -> Decimal:
    """The signed amount of a notional at a price, truncated toward zero to whole steps."""
    steps = (abs(notional) / mark / step).to_integral_value(rounding=ROUND_DOWN)
    amount = steps * step
    return -amount if notional < 0 else amount


def _legs(current: Decimal, target: Decimal) -> tuple[Decimal, Decimal]:
    """(what to close reduce-only, what to open) on the way from `current` to `target` (signed)."""
    if current == 0 or (target != 0 and (current > 0) == (target > 0)):
        grow = abs(target) - abs(current)
        return (max(-grow, Decimal(0)), max(grow, Decimal(0))) if current else (Decimal(0), abs(target))
    return abs(current), abs(target)  # close (t = 0) or flip


# -- the pre-trade check -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRisk:
    """One futures account as the venue shows it now: its margin balance and positions."""

    path: str
    margin_balance: Decimal
    positions: Sequence[Position]


def projected(
    account: AccountRisk,
    orders: Iterable[PositionOrder],
    settings: Iterable[PositionSetting],
    contracts: Mapping[str, Contract],
    marks: Mapping[str, Decimal],
) -> tuple[Decimal, list[Held]]:
    """The account's margin balance (less the orders' estimated fees) and positions after the orders, at
    the current mark prices."""
    amounts = {p.symbol: p.amount for p in account.positions}
    entries = {p.symbol: p.entry_price for p in account.positions}
    leverage = {p.symbol: p.leverage for p in account.positions}
    modes = {p.symbol: p.margin_mode for p in account.positions}
    balance = account.margin_balance
    for setting in settings:
        if setting.leverage is not None:
            leverage[setting.symbol] = setting.leverage
        if setting.margin_mode is not None:
            modes[setting.symbol] = setting.margin_mode
    for order in orders:
        mark = marks[order.symbol]
        before = amounts.get(order.symbol, Decimal(0))
        delta = order.amount if order.side == "buy" else -order.amount
        after = before + delta
        if before == 0 or (after != 0 and (after > 0) != (before > 0)):
            entries[order.symbol] = mark
        elif abs(after) > abs(before):
            entries[order.symbol] = (before * entries[order.symbol] + delta * mark) / after
        amounts[order.symbol] = after
        balance -= order.amount * mark * contracts[order.symbol].fee_rate
    held = []
    for symbol, amount in sorted(amounts.items()):
        if amount == 0:
            continue
        contract, mark = contracts[symbol], marks[symbol]
        lever = leverage.get(symbol, 1)
        isolated = abs(amount) * mark / lever if modes.get(symbol, "cross") == "isolated" else None
        held.append(
            Held(symbol, amount, entries[symbol], mark, lever, contract.maintenance_margin_rate, isolated)
        )
    return balance, held


def risk_refusal(
    account: AccountRisk,
    orders: Sequence[PositionOrder],
    settings: Sequence[PositionSetting],
    contracts: Mapping[str, Contract],
    marks: Mapping[str, Decimal],
    max_leverage: Decimal,
    min_liquidation_distance: Decimal,
) -> str:
    """Why the orders must not be sent on this account ("" when they may): a symbol's leverage set above
    `max_leverage`; the account's positions worth more than `max_leverage` times its margin balance after
    them; or a position after them whose liquidation price is nearer its mark than
    `min_liquidation_distance` (a fraction of the mark)."""
    for setting in settings:
        if setting.leverage is not None and setting.leverage > max_leverage:
            return (
                f"{account.path} {setting.symbol}: leverage {setting.leverage} is above the maximum "
                f"{dec_str(max_leverage)}"
            )
    balance, held = projected(account, orders, settings, contracts, marks)
    exposure = sum((p.notional for p in held), Decimal(0))
    if exposure > 0 and (balance <= 0 or exposure > max_leverage * balance):
        ratio = f"{exposure / balance:.2f}x" if balance > 0 else "no margin left"
        return (
            f"{account.path}: positions of {exposure:.2f} on a margin balance of {balance:.2f} ({ratio}) "
            f"would exceed the maximum leverage {dec_str(max_leverage)}"
        )
    wallet = balance - sum((p.unrealized_pnl for p in held), Decimal(0))
    cross_wallet = wallet - sum((p.isolated_margin or Decimal(0) for p in held), Decimal(0))
    for position in held:
        price = liquidation_price(position, cross_wallet, held)
        distance = liquidation_distance(position.mark_price, price)
        if price is not None and distance is not None and distance < min_liquidation_distance:
            return (
                f"{account.path} {position.symbol}: the position would be {distance * 100:.2f}% from "
                f"liquidation (at {price:.2f}, marked {dec_str(position.mark_price)}), nearer than the "
                f"{dec_str(min_liquidation_distance * 100)}% allowed"
            )
    return ""
