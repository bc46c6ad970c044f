"""The portfolio as the journal shows it: weights, the trees and their diff, performance, the optimizer.

Each route loads what it shows from Postgres and, where it needs one, makes one pure call (`views`,
`rebal.core.performance`); the trees come back as the events carried them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import numpy as np
from fastapi import APIRouter, Query
from numpy.typing import ArrayLike

from rebal import strategy_store
from rebal.core import performance as perf
from rebal.core.assemble import layout_accounts
from rebal.core.diff import DiffTree
from rebal.core.errors import InputError
from rebal.core.market import Prices
from rebal.core.portfolio_performance import PortfolioPerformance, describe_step, portfolio_performance
from rebal.render import diff_json
from rebal_monitor import queries, views
from rebal_monitor.api.deps import (
    SNAPSHOT_TYPES,
    TARGET_TYPES,
    Authorised,
    Chosen,
    Db,
    JsonDict,
    Problem,
    latest_inputs,
)
from rebal_monitor.journal import record_value

Band = Annotated[float, Query(ge=0, le=1)]
Window = Annotated[str, Query(pattern=r"^(inception|[1-9][0-9]{0,3}d)$", description="inception or <N>d")]
router = APIRouter(dependencies=[Authorised])


def diff_or_problem(snapshot: queries.Stored, target: queries.Stored, band: float = 0.0) -> DiffTree:
    try:
        return views.diff_of(snapshot.payload, target.payload, band)
    except InputError as exc:
        raise Problem(422, f"the latest snapshot and target do not fit together: {exc}") from None


@router.get("/portfolio/weights", summary="Target vs actual weights from the latest snapshot and target")
async def weights(portfolio: Chosen, pool: Db) -> JsonDict:
    snapshot, target = await latest_inputs(pool, portfolio)
    total, rows = views.weights(diff_or_problem(snapshot, target))
    return {
        "portfolio_id": portfolio,
        "snapshot_id": str(snapshot.event_id),
        "target_id": str(target.event_id),
        "as_of": snapshot.occurred_at.isoformat(),
        **views.money_of(snapshot.payload),
        "total_value": total,
        "nodes": rows,
    }


@router.get(
    "/portfolio/performance",
    summary="The portfolio's own return, drawdown, volatility (and the strategies' figures beside)",
)
async def performance(portfolio: Chosen, pool: Db, window: Window = "inception") -> JsonDict:
    # The tracker's statistics when it has computed them; since inception, computed here from the
    # stored returns meanwhile (the same rebal.core.performance conventions).
    loaded = await strategy_store.load_stats(pool, portfolio)
    stats = {s.strategy_id: s for s in loaded if s.window == window}
    series = await queries.strategy_returns(pool, portfolio)
    strategies = []
    for name in sorted(stats.keys() | (series.keys() if window == "inception" else set())):
        if name in stats:
            strategies.append(_stored_statistics(stats[name]))
        else:
            stamps, values = series[name]
            strategies.append({**_statistics(name, stamps, values), "source": "strategy_returns"})
    combined = None
    if series:
        stamps_list: list[ArrayLike] = [stamps for stamps, _ in series.values()]
        common, matrix = perf.align(stamps_list, [values for _, values in series.values()])
        mixed = matrix.mean(axis=1) if matrix.size else np.empty(0)
        combined = {**_statistics("combined", common.tolist(), mixed.tolist()), "window": "inception"}
    own, quote, flows = await own_performance(pool, portfolio)
    return {
        "portfolio_id": portfolio,
        "window": window,
        # What the portfolio holds, from its snapshots (the figures the dashboard shows).
        "portfolio": {"source": "snapshots", **views.performance_json(own, quote), "flows": flows},
        # What the strategies' bots report (their own returns, not the portfolio's), and their equal mix.
        "strategies": strategies,
        "combined": combined,
    }


@router.get("/portfolio/equity", summary="The portfolio's value over time and its growth net of flows")
async def equity(portfolio: Chosen, pool: Db) -> JsonDict:
    own, quote, _ = await own_performance(pool, portfolio)
    return {
        "portfolio_id": portfolio,
        "source": "snapshots",
        "quote": quote,
        "step": None if own is None else describe_step(own.step_seconds),
        "max_drawdown": None if own is None else own.max_drawdown,
        "points": views.equity_points(own),
    }


async def own_performance(
    pool: asyncpg.Pool, portfolio: str
) -> tuple[PortfolioPerformance | None, str | None, list[JsonDict]]:
    """The portfolio's performance from its snapshots' values and the flows of its accounts (valued at
    the latest snapshot's prices); snapshots journaled before values were kept are valued first."""
    for stored in await queries.snapshots_without_value(pool, portfolio):
        async with pool.acquire() as connection:
            await record_value(connection, stored.event_id, portfolio, stored.occurred_at, stored.payload)
    times, values, quote = await queries.portfolio_values(pool, portfolio)
    latest = await queries.latest_event(pool, portfolio, SNAPSHOT_TYPES)
    flow_times: list[float] = []
    flow_values: list[float] = []
    shown: list[JsonDict] = []
    if latest is not None:
        try:
            accounts = [(a.exchange or "", a.path) for a in layout_accounts(latest.payload["tree"])]
            prices = Prices.parse(latest.payload["prices"])
        except (InputError, KeyError, TypeError):
            accounts, prices = [], None
        if prices is not None:
            flows = await queries.portfolio_flows(pool, accounts)
            flow_times, flow_values, shown = views.valued_flows(flows, prices)
    own = portfolio_performance(times, values, flow_times, flow_values)
    return own, quote, shown


@router.get("/portfolio/optimization", summary="The optimizer's latest result")
async def optimization(portfolio: Chosen, pool: Db) -> JsonDict:
    found = await queries.latest_optimization(pool, portfolio)
    if found is None:
        raise Problem(404, f"the optimizer has published no optimization result for {portfolio!r} yet")
    return {"portfolio_id": portfolio, "target_id": str(found.event_id),
            "computed_at": found.occurred_at.isoformat(), **found.payload}  # fmt: skip


@router.get("/portfolio/trees/real", summary="The latest snapshot's tree")
async def tree_real(portfolio: Chosen, pool: Db) -> JsonDict:
    snapshot = await queries.latest_event(pool, portfolio, SNAPSHOT_TYPES)
    if snapshot is None:
        raise Problem(404, f"no balance snapshot yet for portfolio {portfolio!r}")
    return {
        "portfolio_id": portfolio,
        "snapshot_id": str(snapshot.event_id),
        "as_of": snapshot.occurred_at.isoformat(),
        "tree": snapshot.payload["tree"],
        "prices": snapshot.payload["prices"],
    }


@router.get("/portfolio/trees/desired", summary="The latest target tree")
async def tree_desired(portfolio: Chosen, pool: Db) -> JsonDict:
    target = await queries.latest_event(pool, portfolio, TARGET_TYPES)
    if target is None:
        raise Problem(404, f"no target yet for portfolio {portfolio!r}")
    return {
        "portfolio_id": portfolio,
        "target_id": str(target.event_id),
        "as_of": target.occurred_at.isoformat(),
        "tree": target.payload["tree"],
    }


@router.get("/portfolio/trees/diff", summary="The diff tree of the latest snapshot and target")
async def tree_diff(portfolio: Chosen, pool: Db, band: Band = 0.0) -> JsonDict:
    snapshot, target = await latest_inputs(pool, portfolio)
    return {
        "portfolio_id": portfolio,
        "snapshot_id": str(snapshot.event_id),
        "target_id": str(target.event_id),
        "band": band,
        **views.money_of(snapshot.payload),
        # Each asset's amount step (its market's), so that amounts are shown as a venue can hold them.
        "amount_steps": views.amount_steps(snapshot.payload),
        "diff": diff_json(diff_or_problem(snapshot, target, band)),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _stored_statistics(stats: strategy_store.StrategyStats) -> JsonDict:
    return {
        "strategy_id": stats.strategy_id,
        "observations": stats.observations,
        "cumulative_return": stats.cumulative_return,
        "annualised_return": stats.annualised_return,
        "volatility": stats.volatility,
        "sharpe": stats.sharpe,
        "sortino": stats.sortino,
        "max_drawdown": stats.max_drawdown,
        "last_timestamp": stats.last_timestamp.isoformat() if stats.last_timestamp else None,
        "source": "strategy_stats",
        "computed_at": stats.computed_at.isoformat(),
    }


def _statistics(name: str, stamps: list[float], values: list[float]) -> dict[str, Any]:
    try:
        periods = perf.periods_per_year_from(stamps) if len(stamps) > 1 else perf.DEFAULT_PERIODS_PER_YEAR
    except ValueError:
        periods = perf.DEFAULT_PERIODS_PER_YEAR
    stats = perf.performance(values, periods)
    return {
        "strategy_id": name,
        "observations": stats.periods,
        "cumulative_return": _finite(stats.cumulative_return),
        "annualised_return": _finite(stats.annualised_return),
        "volatility": _finite(stats.annualised_volatility),
        "sharpe": _finite(stats.sharpe),
        "sortino": _finite(stats.sortino),
        "max_drawdown": _finite(stats.max_drawdown),
        "last_timestamp": datetime.fromtimestamp(stamps[-1], UTC).isoformat() if stamps else None,
    }
