"""The margin arithmetic of linear (USDⓈ-M) perpetual positions in one-way mode, as Binance documents it.

Amounts are signed (a short is negative); prices, margins and profits are in the quote. For a position
of amount ``q`` entered at ``EP`` and marked at ``MP``:

- notional ``|q|·MP``; unrealized PnL ``q·(MP − EP)``;
- initial margin ``notional / leverage``; maintenance margin ``notional·MMR − cum`` (one bracket is
  modelled: its maintenance amount ``cum`` is 0) — Binance, "Leverage and Margin of USDⓈ-M Futures";
- margin balance: wallet balance + the unrealized PnL of every position; a cross account is liquidated
  when its margin balance falls to its maintenance margin ("Liquidation occurs when the Mark Price hits
  the liquidation price"; "collateral < maintenance margin" is the trader in liquidation);
- liquidation price in one-way mode (Binance, "How to Calculate Liquidation Price of USDⓈ-M Futures
  Contracts"), with ``s`` = 1 long, −1 short::

      LP = (WB − TMM1 + UPNL1 + cumB − s·|q|·EP) / (|q|·MMR − s·|q|)

  where, in cross margin, WB is the cross wallet balance and TMM1/UPNL1 the maintenance margin and
  unrealized PnL of the account's OTHER cross positions; in isolated margin WB is the position's isolated
  margin and TMM1 = UPNL1 = 0. A long whose LP is not positive cannot be liquidated (None);
- a funding payment at a funding time ``q·MP·rate``, paid by longs and received by shorts when the rate
  is positive ("Funding Amount = Nominal Value of Positions × Funding Rate", Binance, "Introduction to
  Binance Futures Funding Rates").

No I/O: values in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class Held:
    """A position for the arithmetic: `isolated_margin` is None in cross margin."""

    symbol: str
    amount: Decimal
    entry_price: Decimal
    mark_price: Decimal
    leverage: int
    maintenance_margin_rate: Decimal
    isolated_margin: Decimal | None = None

    @property
    def notional(self) -> Decimal:
        return abs(self.amount) * self.mark_price

    @property
    def unrealized_pnl(self) -> Decimal:
        return self.amount * (self.mark_price - self.entry_price)

    @property
    def initial_margin(self) -> Decimal:
        return self.notional / self.leverage

    @property
    def maintenance_margin(self) -> Decimal:
        return self.notional * self.maintenance_margin_rate

    @property
    def cross(self) -> bool:
        return self.isolated_margin is None


def margin_balance(wallet_balance: Decimal, positions: Sequence[Held]) -> Decimal:
    """The wallet balance (isolated margins included) plus every position's unrealized PnL: what the
    account is worth in its quote."""
    return wallet_balance + sum((p.unrealized_pnl for p in positions), ZERO)


def cross_in_liquidation(cross_wallet_balance: Decimal, positions: Sequence[Held]) -> bool:
    """Whether the cross positions are liquidated: the cross wallet balance with their unrealized PnL is at
    or below their maintenance margin (an account with no cross position never is)."""
    cross = [p for p in positions if p.cross and p.amount != 0]
    if not cross:
        return False
    equity = cross_wallet_balance + sum((p.unrealized_pnl for p in cross), ZERO)
    return equity <= sum((p.maintenance_margin for p in cross), ZERO)


def isolated_in_liquidation(position: Held) -> bool:
    """Whether an isolated position is liquidated: its margin with its unrealized PnL at or below its
    maintenance margin."""
    if position.isolated_margin is None or position.amount == 0:
        return False
    return position.isolated_margin + position.unrealized_pnl <= position.maintenance_margin


def liquidation_price(
    position: Held, cross_wallet_balance: Decimal, others: Sequence[Held]
) -> Decimal | None:
    """The mark price at which the position is liquidated (the module doc's formula); None when it cannot
    be (no position, or a long whose liquidation price is not positive)."""
    if position.amount == 0:
        return None
    side = Decimal(1) if position.amount > 0 else Decimal(-1)
    size = abs(position.amount)
    if position.isolated_margin is not None:
        wallet, other_mm, other_pnl = position.isolated_margin, ZERO, ZERO
    else:
        cross = [p for p in others if p.cross and p.symbol != position.symbol and p.amount != 0]
        wallet = cross_wallet_balance
        other_mm = sum((p.maintenance_margin for p in cross), ZERO)
        other_pnl = sum((p.unrealized_pnl for p in cross), ZERO)
    numerator = wallet - other_mm + other_pnl - side * size * position.entry_price
    denominator = size * position.maintenance_margin_rate - side * size
    if denominator == 0:
        return None
    price = numerator / denominator
    return price if price > 0 else None


def liquidation_distance(mark_price: Decimal, price: Decimal | None) -> Decimal | None:
    """How far the mark price is from the liquidation price, as a fraction of the mark (None: none)."""
    if price is None or mark_price <= 0:
        return None
    return abs(mark_price - price) / mark_price


def funding_payment(amount: Decimal, mark_price: Decimal, rate: Decimal) -> Decimal:
    """What the wallet pays at a funding time (negative: receives): ``amount·mark·rate``."""
    return amount * mark_price * rate


def realized_pnl(held: Decimal, entry_price: Decimal, closed: Decimal, price: Decimal) -> Decimal:
    """The profit of closing `closed` (a positive amount, at most ``|held|``) of a position of `held` entered
    at `entry_price`, at `price`."""
    side = Decimal(1) if held > 0 else Decimal(-1)
    return side * closed * (price - entry_price)
