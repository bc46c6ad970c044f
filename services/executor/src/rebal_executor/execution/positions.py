"""The futures accounts' part of a run (`RebalancePlanned.position_orders`, `rebal.core.position_plan`).

- Before the run starts (`precheck`), the positions the plan leads to, from what each futures venue shows
  now, are held to the executor's limits (`futures.max_leverage`, `futures.min_liquidation_distance`): a
  symbol's leverage set above the maximum, positions worth more than the maximum times the account's
  margin balance, or a position nearer its liquidation price than the distance allowed cancel the run
  before anything is sent (`rebal.core.position_plan.risk_refusal`).
- Phase 1, after the spot sells (`reduce`): the ``reduceOnly`` orders, each sized from the position the
  venue holds now (at most what it holds on the side it reduces; nothing left to reduce skips the leg).
- Phase 2, after the spot buys (`increase`): before a symbol's first opening order its margin mode and
  leverage are set (idempotent at the venue); a refusal fails that symbol's opening legs with the venue's
  reason. Then the opening orders, as planned (the venue refuses one its margin cannot carry).

A position order is a leg like any other (`legs.place`: written to the journal before it is sent, looked
up by its client id, its fills published, its outcome in the run report), numbered after every spot
leg: leg ``POSITION_LEGS + i`` is the plan's i-th position order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rebal.core.numbers import dec_str
from rebal.core.position_plan import AccountRisk, PositionOrder, PositionSetting, risk_refusal
from rebal.events import PlannedOrder, PlannedPositionOrder, PlannedPositionSetting, RebalancePlanned
from rebal.futures import FuturesVenue
from rebal.venue import INVALID_ORDER, OrderRejected, OrderState, Side, VenueAuthError, VenueError
from rebal_executor.execution import guards
from rebal_executor.execution.legs import fail, place, skip
from rebal_executor.execution.outcomes import Stop
from rebal_executor.execution.ports import Context, RunRecord

log = logging.getLogger("rebal.executor")
# Position legs are numbered from here, after any spot leg, transfer or unwind a run can have.
POSITION_LEGS = 1_000_000


def legs_of(plan: RebalancePlanned) -> list[int]:
    """The leg numbers of the plan's position orders."""
    return [POSITION_LEGS + i for i in range(len(plan.position_orders))]


def accounts_of(plan: RebalancePlanned) -> set[tuple[str, str]]:
    """The (exchange, account) pairs the plan's position orders trade."""
    return {(o.exchange, o.account) for o in plan.position_orders}


class PositionVenue:
    """A futures venue seen as the port's `Venue` for one kind of leg: `place_order` places a position
    order (reduce-only or not, a market order: it is not `Resting`, so a limit order type never applies
    to it); every other call goes to the venue (look-ups, prices: the same)."""

    def __init__(self, venue: FuturesVenue, reduce_only: bool) -> None:
        self._venue = venue
        self._reduce_only = reduce_only

    @property
    def name(self) -> str:
        return self._venue.name

    async def place_order(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        *,
        price: Decimal | None = None,
        post_only: bool = False,
    ) -> OrderState:
        if price is not None:
            raise OrderRejected(client_order_id, f"{INVALID_ORDER}: position orders are market orders")
        return await self._venue.place_position_order(
            account, client_order_id, symbol, side, amount, self._reduce_only
        )

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "book_top":  # not a resting venue: position legs stay market orders
            raise AttributeError(attribute)
        return getattr(self._venue, attribute)


def _futures(ctx: Context, exchange: str) -> FuturesVenue | None:
    venue = ctx.venues.get(exchange)
    return venue if isinstance(venue, FuturesVenue) else None


def _core_order(order: PlannedPositionOrder) -> PositionOrder:
    return PositionOrder(*(getattr(order, name) for name in PositionOrder._fields))


def _core_setting(setting: PlannedPositionSetting) -> PositionSetting:
    return PositionSetting(*(getattr(setting, name) for name in PositionSetting._fields))


def _as_leg(order: PlannedPositionOrder) -> PlannedOrder:
    """The position order as the spot legs' record of it (what `legs.place` publishes and reports)."""
    return PlannedOrder(
        account=order.account,
        exchange=order.exchange,
        symbol=order.symbol,
        side=order.side,
        amount=order.amount,
        est_price=order.est_price,
        est_cost=order.est_notional,
        est_fee=order.est_fee,
        phase=order.phase,
    )


# -- before the run -------------------------------------------------------------------------------------


async def precheck(ctx: Context, plan: RebalancePlanned) -> str:
    """Why the run must not start because of its futures accounts ("" when it may): a venue without
    futures accounts, one that cannot be read, or positions beyond the limits (module doc)."""
    limits = ctx.settings.futures
    for exchange, account in sorted(accounts_of(plan)):
        venue = _futures(ctx, exchange)
        if venue is None:
            return f"{account}: venue {exchange} has no perpetual futures accounts: not started"
        orders = [
            _core_order(o) for o in plan.position_orders if (o.exchange, o.account) == (exchange, account)
        ]
        settings = [
            _core_setting(s) for s in plan.position_settings if (s.exchange, s.account) == (exchange, account)
        ]
        try:
            margin = await venue.margin(account)
            held = await venue.positions(account)
            listed = await venue.contracts()
            symbols = sorted({o.symbol for o in orders} | {p.symbol for p in held})
            marks = await venue.mark_prices(symbols)
        except VenueError as error:
            return f"{account}: the futures account could not be read before the run ({error}): not started"
        missing = [symbol for symbol in symbols if symbol not in listed]
        if missing:
            return f"{account}: {', '.join(missing)} not listed by {exchange}: not started"
        refused = risk_refusal(
            AccountRisk(account, margin.margin_balance, held),
            orders,
            settings,
            listed,
            marks,
            limits.max_leverage,
            limits.min_liquidation_distance,
        )
        if refused:
            return f"pre-trade check: {refused}: not started"
    return ""


async def _next_leg(
    ctx: Context, plan: RebalancePlanned, leg: int, order: PlannedPositionOrder
) -> FuturesVenue | Stop | None:
    """The venue to place a position leg on; None when the leg is done or cannot run (failed: no futures
    venue of that name); the `Stop` when the run stops before it."""
    if await ctx.journal.leg_done(plan.event_id, leg):
        return None
    stop = await guards.stop_before_leg(ctx, plan)
    if stop:
        return stop
    venue = _futures(ctx, order.exchange)
    if venue is None:
        await fail(ctx, plan, leg, f"{_what(leg, order)} failed: no futures venue {order.exchange!r}")
    return venue


# -- phase 1: reduce-only orders ------------------------------------------------------------------------


async def reduce(ctx: Context, record: RunRecord) -> Stop | None:
    plan = record.plan
    for index, order in enumerate(plan.position_orders):
        if not order.reduce_only:
            continue
        leg = POSITION_LEGS + index
        venue = await _next_leg(ctx, plan, leg, order)
        if isinstance(venue, Stop):
            return venue
        if venue is None:
            continue
        existing = await ctx.journal.latest_order(plan.event_id, leg)
        amount = order.amount
        if existing is None:
            sized = await _reducible(ctx, plan, leg, order, venue)
            if sized is None:
                continue
            amount = sized
        stop = await place(
            ctx,
            record,
            leg,
            _as_leg(order),
            amount,
            existing,
            venue=PositionVenue(venue, True),
            resizable=False,
        )
        if stop:
            return stop
    return None


async def _reducible(
    ctx: Context, plan: RebalancePlanned, leg: int, order: PlannedPositionOrder, venue: FuturesVenue
) -> Decimal | None:
    """What the reduce-only leg may reduce now: at most the position held on the side it reduces (None:
    the leg is skipped, nothing to reduce)."""
    held = {p.symbol: p.amount for p in await venue.positions(order.account)}.get(order.symbol, Decimal(0))
    reducible = -held if order.side == "buy" else held
    if reducible <= 0:
        await skip(ctx, plan, leg, f"{_what(leg, order)} skipped: no {order.symbol} position to reduce")
        return None
    if reducible < order.amount:
        await ctx.journal.note(
            plan.event_id,
            f"reduced-{leg}",
            f"{_what(leg, order)} reduced from {dec_str(order.amount)} to {dec_str(reducible)}: the position "
            "held now",
        )
        return reducible
    return order.amount


# -- phase 2: settings, then opening orders -------------------------------------------------------------


async def increase(ctx: Context, record: RunRecord) -> Stop | None:
    plan = record.plan
    refused: dict[tuple[str, str, str], str] = {}
    settled: set[tuple[str, str, str]] = set()
    for index, order in enumerate(plan.position_orders):
        if order.reduce_only:
            continue
        leg = POSITION_LEGS + index
        venue = await _next_leg(ctx, plan, leg, order)
        if isinstance(venue, Stop):
            return venue
        if venue is None:
            continue
        existing = await ctx.journal.latest_order(plan.event_id, leg)
        key = (order.exchange, order.account, order.symbol)
        if existing is None and key not in settled:
            settled.add(key)
            try:
                await _apply_settings(venue, _settings_of(plan, order))
            except VenueAuthError as error:
                await fail(ctx, plan, leg, f"{_what(leg, order)} failed: {error}")
                return Stop("error", f"authentication refused by {venue.name}: {error}; trading stopped")
            except VenueError as error:
                refused[key] = str(error)
        if key in refused and existing is None:
            await fail(
                ctx,
                plan,
                leg,
                f"{_what(leg, order)} not placed: the venue refused its settings: {refused[key]}",
            )
            continue
        stop = await place(
            ctx,
            record,
            leg,
            _as_leg(order),
            order.amount,
            existing,
            venue=PositionVenue(venue, False),
            resizable=False,
        )
        if stop:
            return stop
    return None


def _settings_of(plan: RebalancePlanned, order: PlannedPositionOrder) -> Sequence[PlannedPositionSetting]:
    return [
        s
        for s in plan.position_settings
        if (s.exchange, s.account, s.symbol) == (order.exchange, order.account, order.symbol)
    ]


async def _apply_settings(venue: FuturesVenue, settings: Sequence[PlannedPositionSetting]) -> None:
    """The margin mode, then the leverage (Binance keeps a leverage per symbol, whatever the mode)."""
    for setting in settings:
        if setting.margin_mode is not None:
            await venue.set_margin_mode(setting.account, setting.symbol, setting.margin_mode)
        if setting.leverage is not None:
            await venue.set_leverage(setting.account, setting.symbol, setting.leverage)


def _what(leg: int, order: PlannedPositionOrder) -> str:
    kind = "reduce-only " if order.reduce_only else ""
    return f"leg {leg} {order.symbol} {kind}{order.side}"
