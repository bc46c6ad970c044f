"""The paper exchange's perpetual futures accounts: `PaperFuturesVenue` is a `PaperVenue` that is also a
`rebal.futures.FuturesVenue`, its positions, settings, funding and liquidations in Postgres (migration 0080).

It models Binance's USDⓈ-M futures in one-way mode (the documentation it follows: the REST API's "New
Order", "Change Initial Leverage", "Change Margin Type" and error codes,
https://developers.binance.com/docs/derivatives/usds-margined-futures; the support pages on the
liquidation price, funding rates and the insurance fund), the unpleasant parts included:

- a futures account's collateral is its quote in ``paper.balances``: the wallet balance, moved by realized
  profit, trading fees (the taker fee on the notional, in the quote) and funding; `margin` adds the
  unrealized PnL of its positions at the mark price (the margin balance) and what is free for new ones;
- market orders fill at once at the mark price (the moving price of ``BASE/QUOTE``: no spread), in one
  transaction, under the spot orders' client-id rules (an id is unique among OPEN orders only, a new
  order is shown late, new orders are rate-limited: `PaperVenue`);
- a ``reduceOnly`` order that would not reduce the position (none held, the same side, or more than it) is
  rejected, -2022 "ReduceOnly Order is rejected." (`REDUCE_ONLY_REJECTED`); an order increasing a
  position needs its initial margin (notional / leverage, with the fee) free, else -2019 "Margin is
  insufficient." (`InsufficientFunds`); one opening less than the contract's minimum notional is refused
  (reduce-only orders are exempt, as from Binance's MIN_NOTIONAL filter);
- a symbol trades at `DEFAULT_LEVERAGE` in cross margin until set otherwise; a leverage above the
  contract's maximum is refused (-4028, `LeverageRefused`), and so is one too low for the position held
  ("-2027 Exceeded the maximum allowable position at current leverage"); the margin mode cannot change
  while a position is open (-4048 "Margin type cannot be changed if there exists position.",
  `MarginModeRefused`);
- funding: at every funding time (every `funding_interval`, 00:00, 08:00 and 16:00 UTC at 8 hours) each
  position open then pays ``amount x mark x rate`` (longs pay shorts when the rate is positive; Binance's
  baseline is the interest rate, 0.01% per interval), settled once per funding time, the first time the
  account is read or traded after it;
- liquidation at the mark price: whenever the account is read or traded, cross positions whose margin
  balance is at or below their maintenance margin are closed at the mark price, all of them (Binance
  liquidates step by step; the paper exchange at once), and a clearance fee of `liquidation_fee_rate` of
  the notional is charged; an isolated position is liquidated on its own margin. A wallet that would go
  below zero is brought back to zero (the insurance fund's role: "If an account becomes bankrupt ...
  the Insurance Fund will balance the account back to 0"). Liquidation is checked when the account is
  touched (the tracker reads it at every snapshot), not continuously between.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from rebal.core.contracts import Contract, Contracts, perpetual
from rebal.core.margin import (
    Held,
    cross_in_liquidation,
    funding_payment,
    isolated_in_liquidation,
    liquidation_price,
    realized_pnl,
)
from rebal.core.positions import MarginMode, Position
from rebal.events import derive_id
from rebal.futures import REDUCE_ONLY_REJECTED, LeverageRefused, Margin, MarginModeRefused
from rebal.venue import (
    BELOW_MIN_AMOUNT,
    BELOW_MIN_COST,
    INSUFFICIENT_FUNDS,
    NOT_POSITIVE,
    NOT_STEP_MULTIPLE,
    UNKNOWN_SYMBOL,
    Fill,
    InsufficientFunds,
    OrderRejected,
    OrderState,
    Side,
    VenueError,
)
from rebal_venues.paper import QUOTE_QUANTUM, Connection, PaperVenue, _Outcome

# Binance opens a symbol at 20x cross until its leverage is changed.
DEFAULT_LEVERAGE = 20
DEFAULT_MARGIN_MODE: MarginMode = "cross"
# Binance's funding interval for its perpetuals (some contracts differ): 00:00, 08:00 and 16:00 UTC.
FUNDING_INTERVAL = timedelta(hours=8)
# Binance's baseline funding rate: the interest rate, 0.03% a day, 0.01% per 8-hour interval.
BASELINE_FUNDING_RATE = Decimal("0.0001")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Row:
    symbol: str
    amount: Decimal
    entry_price: Decimal
    isolated_margin: Decimal | None
    funded_at: datetime


@dataclass
class PaperFuturesVenue(PaperVenue):
    """A paper exchange with perpetual futures accounts (see the module doc)."""

    contract_info: Mapping[str, Contract] = field(default_factory=dict)
    funding_rate: Decimal = BASELINE_FUNDING_RATE
    funding_interval: timedelta = FUNDING_INTERVAL
    liquidation_fee_rate: Decimal = Decimal("0.01")

    @classmethod
    def of(
        cls,
        spot: PaperVenue,
        contracts: object,
        *,
        funding_rate: Decimal = BASELINE_FUNDING_RATE,
        funding_interval: timedelta = FUNDING_INTERVAL,
        liquidation_fee_rate: Decimal = Decimal("0.01"),
    ) -> PaperFuturesVenue:
        """The paper venue `spot` with the exchange's contracts of a contracts document (docs/formats.md)."""
        listed = Contracts.parse(contracts).exchanges.get(spot.exchange, {})
        return cls(
            **{f.name: getattr(spot, f.name) for f in fields(PaperVenue)},
            contract_info=dict(sorted(listed.items())),
            funding_rate=funding_rate,
            funding_interval=funding_interval,
            liquidation_fee_rate=liquidation_fee_rate,
        )

    # -- prices ----------------------------------------------------------------------------------------

    def _mark(self, symbol: str, at: datetime) -> Decimal | None:
        names = perpetual(symbol)
        return None if names is None else self.price_model.symbol_price(f"{names[0]}/{names[1]}", at)

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        """Spot symbols as the paper exchange prices them; a perpetual at its mark price."""
        spot = [s for s in symbols if ":" not in s]
        found = dict(await super().prices(spot)) if spot else {}
        found.update(await self.mark_prices([s for s in symbols if ":" in s]))
        return {symbol: found[symbol] for symbol in symbols}

    async def mark_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        now = self.clock()
        found: dict[str, Decimal] = {}
        for symbol in symbols:
            mark = self._mark(symbol, now)
            if mark is None:
                raise VenueError(f"{self.exchange}: no mark price for {symbol}")
            found[symbol] = mark
        return found

    async def contracts(self) -> Mapping[str, Contract]:
        return self.contract_info

    # -- reads -----------------------------------------------------------------------------------------

    async def positions(self, account: str) -> Sequence[Position]:
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            await self._settle(connection, account, now)
            return self._positions(
                await self._rows(connection, account),
                await self._settings(connection, account),
                await self._wallet(connection, account),
                now,
            )

    async def margin(self, account: str) -> Margin:
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            await self._settle(connection, account, now)
            return await self._margin(connection, account, now)

    async def _margin(self, connection: Connection, account: str, now: datetime) -> Margin:
        rows = await self._rows(connection, account)
        settings = await self._settings(connection, account)
        wallet = await self._wallet(connection, account)
        held = [self._held(row, settings, now) for row in rows]
        pnl = sum((h.unrealized_pnl for h in held), Decimal(0))
        isolated = sum((h.isolated_margin or Decimal(0) for h in held), Decimal(0))
        cross = [h for h in held if h.cross]
        used = sum((h.initial_margin for h in cross), Decimal(0))
        cross_pnl = sum((h.unrealized_pnl for h in cross), Decimal(0))
        available = max(wallet - isolated + cross_pnl - used, Decimal(0))
        return Margin(self._quote(), wallet, pnl, available)

    def _quote(self) -> str:
        quotes = {c.quote for c in self.contract_info.values()} or {self.valuation_quote}
        return sorted(quotes)[0]

    def _positions(
        self,
        rows: Sequence[_Row],
        settings: Mapping[str, tuple[int, MarginMode]],
        wallet: Decimal,
        now: datetime,
    ) -> list[Position]:
        held = [self._held(row, settings, now) for row in rows]
        isolated = sum((h.isolated_margin or Decimal(0) for h in held), Decimal(0))
        found = []
        for h in held:
            leverage, mode = settings.get(h.symbol, (DEFAULT_LEVERAGE, DEFAULT_MARGIN_MODE))
            price = liquidation_price(h, wallet - isolated, held)
            found.append(
                Position(
                    h.symbol,
                    h.amount,
                    h.entry_price,
                    h.mark_price,
                    leverage,
                    mode,
                    price.quantize(QUOTE_QUANTUM) if price is not None else None,
                    h.unrealized_pnl.quantize(QUOTE_QUANTUM),
                )
            )
        return found

    def _held(self, row: _Row, settings: Mapping[str, tuple[int, MarginMode]], now: datetime) -> Held:
        leverage, _ = settings.get(row.symbol, (DEFAULT_LEVERAGE, DEFAULT_MARGIN_MODE))
        contract = self.contract_info.get(row.symbol)
        mark = self._mark(row.symbol, now)
        if mark is None:
            raise VenueError(f"{self.exchange}: no mark price for {row.symbol}")
        rate = contract.maintenance_margin_rate if contract is not None else Decimal(0)
        return Held(row.symbol, row.amount, row.entry_price, mark, leverage, rate, row.isolated_margin)

    async def _rows(self, connection: Connection, account: str) -> list[_Row]:
        rows = await connection.fetch(
            "SELECT symbol, amount, entry_price, isolated_margin, funded_at FROM paper.positions"
            " WHERE exchange = $1 AND account = $2 ORDER BY symbol",
            self.exchange,
            account,
        )
        return [
            _Row(r["symbol"], r["amount"], r["entry_price"], r["isolated_margin"], r["funded_at"])
            for r in rows
        ]

    async def _settings(self, connection: Connection, account: str) -> dict[str, tuple[int, MarginMode]]:
        rows = await connection.fetch(
            "SELECT symbol, leverage, margin_mode FROM paper.symbol_settings"
            " WHERE exchange = $1 AND account = $2",
            self.exchange,
            account,
        )
        return {r["symbol"]: (r["leverage"], r["margin_mode"]) for r in rows}

    async def _wallet(self, connection: Connection, account: str) -> Decimal:
        held = await connection.fetchval(
            "SELECT amount FROM paper.balances WHERE exchange = $1 AND account = $2 AND asset = $3",
            self.exchange,
            account,
            self._quote(),
        )
        return held if held is not None else Decimal(0)

    async def _move_wallet(self, connection: Connection, account: str, delta: Decimal) -> None:
        """Add `delta` to the wallet, never below zero (the insurance fund covers the rest)."""
        await connection.execute(
            "INSERT INTO paper.balances (exchange, account, asset, amount)"
            " VALUES ($1, $2, $3, greatest($4::numeric, 0))"
            " ON CONFLICT (exchange, account, asset)"
            " DO UPDATE SET amount = greatest(paper.balances.amount + $4::numeric, 0)",
            self.exchange,
            account,
            self._quote(),
            delta,
        )

    # -- funding and liquidation ------------------------------------------------------------------------

    async def _settle(self, connection: Connection, account: str, now: datetime) -> None:
        """Lock the account, then pay the funding due and liquidate what the mark price says must be."""
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"paper-futures|{self.exchange}|{account}"
        )
        await self._fund(connection, account, now)
        await self._liquidate(connection, account, now)

    def _funding_times(self, after: datetime, until: datetime) -> list[datetime]:
        step = self.funding_interval.total_seconds()
        first = math.floor((after - EPOCH).total_seconds() / step) + 1
        last = math.floor((until - EPOCH).total_seconds() / step)
        return [EPOCH + timedelta(seconds=k * step) for k in range(first, last + 1)]

    async def _fund(self, connection: Connection, account: str, now: datetime) -> None:
        for row in await self._rows(connection, account):
            times = self._funding_times(row.funded_at, now)
            for at in times:
                mark = self._mark(row.symbol, at)
                if mark is None:
                    continue
                payment = funding_payment(row.amount, mark, self.funding_rate).quantize(QUOTE_QUANTUM)
                new = await connection.fetchval(
                    "INSERT INTO paper.funding (exchange, account, symbol, funding_time, amount, mark_price,"
                    " rate, payment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
                    " RETURNING true",
                    self.exchange,
                    account,
                    row.symbol,
                    at,
                    row.amount,
                    mark,
                    self.funding_rate,
                    payment,
                )
                if new:
                    await self._move_wallet(connection, account, -payment)
            if times:
                await connection.execute(
                    "UPDATE paper.positions SET funded_at = $4"
                    " WHERE exchange = $1 AND account = $2 AND symbol = $3",
                    self.exchange,
                    account,
                    row.symbol,
                    times[-1],
                )

    async def _liquidate(self, connection: Connection, account: str, now: datetime) -> None:
        rows = await self._rows(connection, account)
        if not rows:
            return
        settings = await self._settings(connection, account)
        wallet = await self._wallet(connection, account)
        held = [self._held(row, settings, now) for row in rows]
        isolated = sum((h.isolated_margin or Decimal(0) for h in held), Decimal(0))
        doomed = [h for h in held if isolated_in_liquidation(h)]
        if cross_in_liquidation(wallet - isolated, held):
            doomed += [h for h in held if h.cross]
        for position in doomed:
            pnl = position.unrealized_pnl.quantize(QUOTE_QUANTUM)
            fee = (position.notional * self.liquidation_fee_rate).quantize(
                QUOTE_QUANTUM, rounding=ROUND_CEILING
            )
            if position.isolated_margin is not None:  # the loss and the fee stop at the position's margin
                lost = min(-pnl + fee, position.isolated_margin)
                fee = max(min(fee, position.isolated_margin + pnl), Decimal(0))
                change = -lost
            else:
                change = pnl - fee
            await connection.execute(
                "INSERT INTO paper.liquidations"
                " (exchange, account, symbol, at, amount, mark_price, realized_pnl, fee)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                self.exchange,
                account,
                position.symbol,
                now,
                position.amount,
                position.mark_price,
                pnl,
                fee,
            )
            await connection.execute(
                "DELETE FROM paper.positions WHERE exchange = $1 AND account = $2 AND symbol = $3",
                self.exchange,
                account,
                position.symbol,
            )
            await self._move_wallet(connection, account, change)

    async def liquidations(self, account: str) -> list[dict[str, Any]]:
        """The account's liquidations, oldest first (what a venue's liquidation history shows)."""
        rows = await self.pool.fetch(
            "SELECT symbol, at, amount, mark_price, realized_pnl, fee FROM paper.liquidations"
            " WHERE exchange = $1 AND account = $2 ORDER BY at, symbol",
            self.exchange,
            account,
        )
        return [dict(row) for row in rows]

    # -- settings --------------------------------------------------------------------------------------

    async def set_leverage(self, account: str, symbol: str, leverage: int) -> None:
        contract = self.contract_info.get(symbol)
        if contract is None:
            raise LeverageRefused(f"{self.exchange}: unknown symbol {symbol}")
        if not 1 <= leverage <= contract.max_leverage:
            raise LeverageRefused(
                f"{self.exchange} {symbol}: leverage {leverage} is not valid"
                f" (at most {contract.max_leverage})"
            )
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            await self._settle(connection, account, now)
            settings = await self._settings(connection, account)
            _, mode = settings.get(symbol, (DEFAULT_LEVERAGE, DEFAULT_MARGIN_MODE))
            row = next((r for r in await self._rows(connection, account) if r.symbol == symbol), None)
            if row is not None and mode == "cross":
                # The position's initial margin at the new leverage must fit what the account has free.
                margin = await self._margin(connection, account, now)
                held = self._held(row, settings, now)
                extra = held.notional / leverage - held.initial_margin
                if extra > margin.available:
                    raise LeverageRefused(
                        f"{self.exchange} {symbol}: leverage {leverage} is too low for the position held"
                        " (Exceeded the maximum allowable position at current leverage)"
                    )
            await self._store_settings(connection, account, symbol, leverage, mode)

    async def set_margin_mode(self, account: str, symbol: str, mode: MarginMode) -> None:
        if symbol not in self.contract_info:
            raise MarginModeRefused(f"{self.exchange}: unknown symbol {symbol}")
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            await self._settle(connection, account, now)
            settings = await self._settings(connection, account)
            leverage, current = settings.get(symbol, (DEFAULT_LEVERAGE, DEFAULT_MARGIN_MODE))
            if current == mode:
                return  # Binance: -4046 "No need to change margin type.", not an error here
            if any(r.symbol == symbol for r in await self._rows(connection, account)):
                raise MarginModeRefused(
                    f"{self.exchange} {symbol}: Margin type cannot be changed if there exists position."
                )
            await self._store_settings(connection, account, symbol, leverage, mode)

    async def _store_settings(
        self, connection: Connection, account: str, symbol: str, leverage: int, mode: MarginMode
    ) -> None:
        await connection.execute(
            "INSERT INTO paper.symbol_settings (exchange, account, symbol, leverage, margin_mode)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (exchange, account, symbol)"
            " DO UPDATE SET leverage = $4, margin_mode = $5",
            self.exchange,
            account,
            symbol,
            leverage,
            mode,
        )

    # -- orders ----------------------------------------------------------------------------------------

    async def place_position_order(
        self, account: str, client_order_id: str, symbol: str, side: Side, amount: Decimal, reduce_only: bool
    ) -> OrderState:
        now = self.clock()
        async with self.pool.acquire() as connection, connection.transaction():
            await self._admit(connection, account, now)
            order_id = await self._open(connection, account, client_order_id, symbol, side, amount, now)
            await self._settle(connection, account, now)
            outcome = await self._trade(
                connection, account, symbol, side, amount, reduce_only, client_order_id, now
            )
            await self._record(connection, order_id, client_order_id, amount, outcome, now)
            state = await self._load(connection, client_order_id)
        if state is None:  # inserted above, in the same transaction
            raise RuntimeError(f"{client_order_id}: order vanished after placement")
        if state.status == "rejected":
            if state.reason == INSUFFICIENT_FUNDS:
                raise InsufficientFunds(client_order_id, "Margin is insufficient.")
            raise OrderRejected(client_order_id, state.reason)
        return state

    async def _trade(
        self,
        connection: Connection,
        account: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        reduce_only: bool,
        client_order_id: str,
        now: datetime,
    ) -> _Outcome:
        contract = self.contract_info.get(symbol)
        reason = _rejection(contract, amount)
        if contract is None or reason:
            return _Outcome("rejected", reason)
        price = self._mark(symbol, now)
        if price is None:
            raise VenueError(f"{self.exchange}: no mark price for {symbol}")
        rows = {r.symbol: r for r in await self._rows(connection, account)}
        row = rows.get(symbol)
        held = row.amount if row is not None else Decimal(0)
        delta = amount if side == "buy" else -amount
        if reduce_only and (held == 0 or (held > 0) == (delta > 0) or amount > abs(held)):
            return _Outcome("rejected", REDUCE_ONLY_REJECTED)
        closed = min(amount, abs(held)) if held != 0 and (held > 0) != (delta > 0) else Decimal(0)
        opened = amount - closed
        notional = (amount * price).quantize(QUOTE_QUANTUM)
        if opened > 0 and opened * price < contract.min_cost and not reduce_only:
            return _Outcome("rejected", BELOW_MIN_COST)
        fee = (notional * contract.fee_rate).quantize(QUOTE_QUANTUM, rounding=ROUND_CEILING)
        settings = await self._settings(connection, account)
        leverage, mode = settings.get(symbol, (DEFAULT_LEVERAGE, DEFAULT_MARGIN_MODE))
        margin = await self._margin(connection, account, now)
        needed = opened * price / leverage
        # What closing part of the position releases is free for the part that opens (a flip).
        if needed + fee > margin.available + closed * price / leverage:
            return _Outcome("rejected", INSUFFICIENT_FUNDS)
        pnl = Decimal(0)
        if row is not None and closed:
            pnl = realized_pnl(held, row.entry_price, closed, price).quantize(QUOTE_QUANTUM)
        after = held + delta
        if after == 0:
            await connection.execute(
                "DELETE FROM paper.positions WHERE exchange = $1 AND account = $2 AND symbol = $3",
                self.exchange,
                account,
                symbol,
            )
        else:
            flipped = row is None or (after > 0) != (held > 0)
            if flipped or row is None:
                entry, isolated = price, needed if mode == "isolated" else None
            elif opened == 0:  # reduced: the entry stays, an isolated margin shrinks with the position
                entry = row.entry_price
                isolated = (
                    None if row.isolated_margin is None else row.isolated_margin * abs(after) / abs(held)
                )
            else:  # increased: the entries averaged, the new margin added
                entry = (abs(held) * row.entry_price + opened * price) / abs(after)
                isolated = None if row.isolated_margin is None else row.isolated_margin + needed
            await connection.execute(
                "INSERT INTO paper.positions"
                " (exchange, account, symbol, amount, entry_price, isolated_margin, funded_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (exchange, account, symbol)"
                " DO UPDATE SET amount = $4, entry_price = $5, isolated_margin = $6,"
                " funded_at = CASE WHEN $8 THEN $7 ELSE paper.positions.funded_at END",
                self.exchange,
                account,
                symbol,
                after,
                entry,
                None if isolated is None else isolated.quantize(QUOTE_QUANTUM),
                now,
                flipped,
            )
        await self._move_wallet(connection, account, pnl - fee)
        earlier = await connection.fetchval(
            "SELECT count(*) - 1 FROM paper.orders WHERE exchange = $1 AND client_order_id = $2",
            self.exchange,
            client_order_id,
        )
        cause = (client_order_id,) if not earlier else (client_order_id, earlier)
        trade_id = "paper-" + derive_id("paper-fill", self.exchange, *cause).hex
        return _Outcome("filled", fill=Fill(trade_id, amount, price, fee, contract.quote))


def _rejection(contract: Contract | None, amount: Decimal) -> str:
    """Why an order of `amount` on `contract` is invalid whatever the account holds ("" if it is not)."""
    if contract is None:
        return UNKNOWN_SYMBOL
    if amount <= 0:
        return NOT_POSITIVE
    if amount % contract.amount_step != 0:
        return NOT_STEP_MULTIPLE
    if amount < contract.min_amount:
        return BELOW_MIN_AMOUNT
    return ""


def futures_of(venue: PaperVenue, contracts: object, **rules: Any) -> PaperVenue:
    """The paper venue with perpetual futures when the contracts document lists its exchange."""
    if isinstance(contracts, dict) and venue.exchange in contracts:
        return PaperFuturesVenue.of(venue, contracts, **rules)
    return venue


__all__ = [
    "BASELINE_FUNDING_RATE",
    "DEFAULT_LEVERAGE",
    "FUNDING_INTERVAL",
    "PaperFuturesVenue",
    "futures_of",
]
