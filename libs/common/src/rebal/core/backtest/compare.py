"""Policies side by side on one history: each replayed from the same start, beside the `baseline` (the
target rebalanced at every row without costs) and `buy_and_hold` (never rebalanced)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rebal.core import performance
from rebal.core.backtest.book import Book
from rebal.core.backtest.figures import Figures, baseline_values, figures, returns_of
from rebal.core.backtest.history import History
from rebal.core.backtest.references import FillRule
from rebal.core.backtest.replay import Overdrawn, Run, replay
from rebal.core.diff import diff_trees
from rebal.core.market import Markets
from rebal.core.policy import Policy
from rebal.core.tree import FloatArray, Tree

BASELINE = "baseline"
BUY_AND_HOLD = "buy_and_hold"


@dataclass(frozen=True, eq=False)
class Outcome:
    name: str
    run: Run
    figures: Figures


@dataclass(frozen=True, eq=False)
class Comparison:
    spacing: int  # seconds between rows (the median)
    periods_per_year: float
    policies: tuple[Outcome, ...]
    baseline: Outcome
    buy_and_hold: Outcome


def compare(
    history: History,
    start: dict[str, Any],
    target: Tree,
    markets: Markets,
    policies: Sequence[tuple[str, Policy]],
    *,
    flows: FloatArray | None = None,
    last_rebalance: int | None = None,
    fill_rule: FillRule = "rebal",
    periods_per_year: float | None = None,
) -> Comparison:
    """Replay each policy (see `rebal.core.backtest.replay`) and the two references; needs two rows.
    `periods_per_year` annualises the figures (`history.spacing_of` tells it from the dates as written);
    None: `rebal.core.performance.periods_per_year_from` the times (ValueError when they are uneven)."""
    if len(history) < 2:
        raise ValueError("a backtest needs at least two rows of prices")
    spacing = int(np.median(np.diff(history.times)))
    per_year = (
        performance.periods_per_year_from(history.times) if periods_per_year is None else periods_per_year
    )
    flow = np.zeros(len(history)) if flows is None else flows
    base = _baseline(history, start, target, flow)
    base_returns = returns_of(base.value, base.flow)

    def outcome(name: str, policy: Policy) -> Outcome:
        try:
            run = replay(
                history,
                start,
                target,
                markets,
                policy,
                flows=flow,
                last_rebalance=last_rebalance,
                fill_rule=fill_rule,
            )
        except Overdrawn as exc:
            raise exc.under(name) from None
        return Outcome(name, run, figures(run, base_returns, per_year))

    return Comparison(
        spacing=spacing,
        periods_per_year=per_year,
        policies=tuple(outcome(name, policy) for name, policy in policies),
        baseline=Outcome(BASELINE, base, figures(base, base_returns, per_year)),
        buy_and_hold=outcome(BUY_AND_HOLD, Policy()),
    )


def _baseline(history: History, start: dict[str, Any], target: Tree, flow: FloatArray) -> Run:
    """The target at every row without costs, from the start's value: the desired shares of the
    portfolio at the first row, held by compounding each asset's price change."""
    book = Book.of(start)
    diff = diff_trees(book.tree(), target, history.row_prices(0))
    wallets = np.flatnonzero(diff.tree.wallet)
    root = float(diff.desired_value[0])
    shares = np.zeros(len(history.assets))
    for node in wallets.tolist():
        column = history.column(diff.asset_names[int(diff.asset_id[node])])
        if column is not None and root > 0:
            shares[column] += float(diff.desired_value[node]) / root
    start_value = float(diff.current_value[0]) + float(flow[0])
    value = baseline_values(history.prices, shares, start_value, flow)
    overdrawn = np.flatnonzero(value < 0)
    if overdrawn.size:
        row = int(overdrawn[0])
        raise Overdrawn(row, -float(flow[row]), float(value[row] - flow[row]), BASELINE)
    rows = len(history)
    flows = np.asarray(flow, dtype=np.float64).copy()
    return Run(
        value=value,
        flow=flows,
        fees=np.zeros(rows),
        traded=np.zeros(rows),
        orders=np.zeros(rows, dtype=np.int64),
        drift=np.zeros(rows),
        kind=np.ones(rows, dtype=np.int8),
        trades=(),
        evaluations=0,
    )
