"""`rebal backtest` at work: the files read and checked, the replay run, the comparison printed (the
command and its options: `rebal_cli.backtest`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from rebal.core.backtest import BASELINE, BUY_AND_HOLD, Comparison, Figures, History, Overdrawn, compare
from rebal.core.backtest.start import (
    accounts_of,
    added_wallets,
    at_target,
    free_markets,
    quiet_added_cash,
    valuation_currency,
    with_cash_wallets,
)
from rebal.core.diff import diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets
from rebal.core.numbers import RANGE, in_range, parse_decimal
from rebal.core.policy import Policy
from rebal.core.tree import Role, Tree, parse_tree
from rebal.io import FileError, load
from rebal.policy import load_policy
from rebal.trigger import instant_text
from rebal_cli.backtest_files import Flows, HistoryError, read_flows, read_history
from rebal_cli.render import console
from rebal_cli.support import exchanges_not_held, fail, warn, write_json

# The exchange of a target that names no account (it becomes one account) when --markets does not name
# exactly one exchange: unknown to any markets file, so unconstrained and free of fees.
DEFAULT_EXCHANGE = "backtest"
# Where the portfolio starts without --real or --initial: at the target holding this much of the valuation
# currency (Portfolio Visualizer's default start, 10,000).
DEFAULT_INITIAL = "10000"
# The reference rows: no policy row is named like them.
REFERENCE_NAMES = (BASELINE, BUY_AND_HOLD)
# Figures as shown (docs/backtest.md, "Figures"): money to the cent, ratios to 6 places (Sharpe, a ratio of
# a mean to a deviation each known to a few digits, to 4), percentage points to 4.
MONEY_PLACES, RATIO_PLACES, POINT_PLACES, SHARPE_PLACES = 2, 6, 4, 4
# The table's width when the output is not a terminal (a file, a pipe): every column in full.
TABLE_WIDTH = 160


def _number(value: float, places: int) -> float | None:
    return round(value, places) if math.isfinite(value) else None


def figures_json(name: str, figures: Figures) -> dict[str, Any]:
    """One row of `--json`: the figures of docs/backtest.md, money to the cent."""
    return {
        "name": name,
        "rebalances": figures.rebalances,
        "orders": figures.orders,
        "turnover": _number(figures.turnover, RATIO_PLACES),
        "fees": _number(figures.fees, MONEY_PLACES),
        "tracking_error": _number(figures.tracking_error, RATIO_PLACES),
        "max_drift": _number(figures.max_drift, POINT_PLACES),
        "mean_drift": _number(figures.mean_drift, POINT_PLACES),
        "final_value": _number(figures.final_value, MONEY_PLACES),
        "cagr": _number(figures.cagr, RATIO_PLACES),
        "volatility": _number(figures.volatility, RATIO_PLACES),
        "max_drawdown": _number(figures.max_drawdown, RATIO_PLACES),
        "sharpe": _number(figures.sharpe, SHARPE_PLACES),
    }


def comparison_json(comparison: Comparison, frequency: str) -> dict[str, Any]:
    """The `--json` document: ``{"frequency", "policies", "baseline", "buy_and_hold"}``; `frequency` is
    the history's spacing as its figures are annualised (`rebal.core.backtest.history.Spacing.label`)."""
    return {
        "frequency": frequency,
        "policies": [figures_json(outcome.name, outcome.figures) for outcome in comparison.policies],
        "baseline": figures_json(comparison.baseline.name, comparison.baseline.figures),
        "buy_and_hold": figures_json(comparison.buy_and_hold.name, comparison.buy_and_hold.figures),
    }


def policy_names(paths: list[Path]) -> list[str]:
    """Each policy's row name: its file's stem; the path as given when another file has the same stem
    or the stem is a reference row's name (`baseline`, `buy_and_hold`). The same file twice is refused
    (exit 2): its two rows would be one."""
    seen: dict[Path, Path] = {}
    for path in paths:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            fail(f"--policy: {path} is {first} again: one policy file, one row")
    stems = [path.stem for path in paths]
    names = []
    for stem, path in zip(stems, paths, strict=True):
        name = stem if stems.count(stem) == 1 and stem not in REFERENCE_NAMES else str(path)
        names.append(f".{os.sep}{name}" if name in REFERENCE_NAMES else name)  # a file named `baseline`
    return names


def _load_tree(path: Path, role: Role) -> tuple[dict[str, Any], Tree]:
    """The document and its parsed tree (bad input: exit 2 naming the file and the node)."""

    def parse(document: object) -> tuple[dict[str, Any], Tree]:
        tree = parse_tree(document, role)
        assert isinstance(document, dict), "a tree that parses is a mapping"
        return document, tree

    try:
        return load(path, parse)
    except FileError as exc:
        fail(str(exc))


def _exchange_for(markets: Markets) -> str:
    names = list(markets.exchanges)
    return names[0] if len(names) == 1 else DEFAULT_EXCHANGE


def _missing_columns(history: History, trees: list[tuple[Path, Tree]], history_path: Path) -> None:
    """Every asset of the trees and every account's quote needs a column (or is the valuation currency)."""
    for path, tree in trees:
        for node, asset in enumerate(tree.assets):
            if asset is not None and not history.has(asset):
                fail(f"{history_path}: line 1: no column {asset} (held at {tree.path(node)} in {path})")
        for node, quote in tree.quote.items():
            if not history.has(quote):
                fail(f"{history_path}: line 1: no column {quote} (the quote of {tree.path(node)} in {path})")


def run(
    prices: Path | None,
    target: Path | None,
    real: Path | None,
    initial: str | None,
    markets: Path | None,
    policy: list[Path] | None,
    flows: Path | None,
    strategies: Path | None,
    allocation: Path | None,
    as_json: bool,
    plot: Path | None,
) -> None:
    """`rebal backtest` (`rebal_cli.backtest`), its options given."""
    if plot is not None and plot.suffix.lower() not in (".html", ".png"):
        fail(f"--plot: {plot} must end in .html or .png")
    if plot is not None and (plot.is_dir() or not plot.parent.is_dir()):
        fail(f"--plot: {plot} is a directory or its directory does not exist")
    if strategies is not None or allocation is not None:
        from rebal_cli.walkforward import walk

        walk(strategies, allocation, prices, target, real, initial, policy, flows, as_json, plot)
        return
    if prices is None or target is None:
        fail("--prices and --target are needed (or --strategies and --allocation for the optimizer)")
    if not policy:
        fail("--policy: give at least one policy file")
    names = policy_names(policy)
    if real is not None and initial is not None:
        fail("--real and --initial cannot be used together")
    amount = 0.0
    if real is None:
        value = parse_decimal(DEFAULT_INITIAL if initial is None else initial)
        if value is None or value <= 0 or not in_range(value):
            fail(f"--initial: {initial!r} must be a decimal amount > 0 ({RANGE})")
        amount = float(value)
    try:
        table = read_history(prices)
    except HistoryError as exc:
        fail(str(exc))
    try:
        market_table = load(markets, Markets.parse) if markets is not None else Markets()
        policies: list[Policy] = [load_policy(path).to_policy() for path in policy]
    except FileError as exc:
        fail(str(exc))
    target_doc, target_tree = _load_tree(target, "target")
    start_path = real if real is not None else target
    real_doc, real_tree = _load_tree(real, "real") if real is not None else (None, None)
    quote = valuation_currency([doc for doc in (target_doc, real_doc) if doc is not None], table.assets)
    history = History(table.times, table.assets, table.prices, quote)
    trees = [(target, target_tree)]
    if real is not None and real_tree is not None:
        trees.append((real, real_tree))
    _missing_columns(history, trees, prices)
    flow: Flows | None = None
    if flows is not None:
        try:
            flow = read_flows(flows, history.times)
        except HistoryError as exc:
            fail(str(exc))
    sources = {"real": start_path, "target": target, "prices": prices, "options": None}
    try:
        if real_doc is not None:
            start = with_cash_wallets(real_doc, quote)
            last = None
            amount = float(
                diff_trees(parse_tree(start, "real"), target_tree, history.row_prices(0)).current_value[0]
            )
        else:
            start = at_target(
                target_doc, target_tree, amount, history.row_prices(0), _exchange_for(market_table)
            )
            last = int(history.times[0])
        added = added_wallets(start, real_doc if real_doc is not None else target_doc)
        if markets is not None:
            held = {str(account.get("exchange", "")) for account in accounts_of(start)}
            warn(exchanges_not_held(held, [(markets, "", market_table.exchanges.keys(), "markets")]))
        result = compare(
            history,
            start,
            target_tree,
            free_markets(market_table, start, history, amount),
            [(name, quiet_added_cash(rule, added)) for name, rule in zip(names, policies, strict=True)],
            flows=flow.amounts if flow is not None else None,
            last_rebalance=last,
            periods_per_year=table.spacing.periods_per_year,
        )
    except Overdrawn as exc:
        assert flows is not None and flow is not None, "only a flow overdraws"
        fail(overdrawn_text(flows, flow, exc, history))
    except InputError as exc:
        fail(replay_error_text(exc, sources, markets, prices))
    if plot is not None:
        from rebal_cli.backtest_plot import write_plot

        write_plot(plot, result, history)
    if as_json:
        write_json(comparison_json(result, table.spacing.label))
        return
    if real is not None:
        begins = f"Starting from {real}."
    else:
        default = " (the default of --initial)" if initial is None else ""
        begins = f"Starting at the target with {amount:,.2f} {history.quote}{default}."
    print_comparison(result, history, table.spacing.label, begins)


# The planner's advice for an order of more than 2**53 steps speaks to `rebal plan`'s options
# (rebal.core.plan._too_many_steps); a backtest's orders come from its history, start and markets.
PLAN_ADVICE = "check the amounts, prices and --invest"


def replay_error_text(
    exc: InputError, sources: dict[str, Path | None], markets: Path | None, prices: Path
) -> str:
    """What the core refused during the replay, named by the backtest's input it is about: the one the
    core names, else the markets file (steps, minimums) or, without one, the price history."""
    source = sources.get(exc.source) if exc.source else (markets or prices)
    where = "" if markets is not None else " in a markets file (--markets)"
    text = str(exc).replace(PLAN_ADVICE, f"give that market a coarser amount_step{where}")
    return f"{source}: {text}" if source is not None else text


def overdrawn_text(path: Path, flows: Flows, exc: Overdrawn, history: History) -> str:
    """The flows file's line for a withdrawal no portfolio could pay."""
    when = instant_text(int(history.times[exc.row]))
    held = f"{exc.name}: " if exc.name else ""
    return (
        f"{path}: line {flows.lines[exc.row]}, column amount: withdrawing {exc.wanted:,.2f} {history.quote} "
        f"on {when} takes more than the portfolio holds then ({held}{exc.held:,.2f} {history.quote})"
    )


def print_comparison(result: Comparison, history: History, frequency: str, begins: str) -> None:
    """The figures as a table, one row per policy, then the baseline and buy-and-hold; `begins` says
    where the portfolio starts."""
    out = console()
    if not out.is_terminal:  # a pipe or a file: the whole table, unwrapped
        out = Console(highlight=False, width=TABLE_WIDTH)
    first, last = instant_text(int(history.times[0])), instant_text(int(history.times[-1]))
    out.print(
        f"{len(history)} rows from {first} to {last}, one every {frequency} "
        f"({result.periods_per_year:.2f} a year); values in {history.quote}"
    )
    out.print(begins)
    table = RichTable()
    columns = (
        ("policy", "left"),
        ("rebalances", "right"),
        ("orders", "right"),
        ("turnover", "right"),
        ("fees", "right"),
        ("tracking", "right"),
        ("max drift", "right"),
        ("mean drift", "right"),
        ("final value", "right"),
        ("CAGR", "right"),
        ("vol", "right"),
        ("max DD", "right"),
        ("Sharpe", "right"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    outcomes = (*result.policies, result.baseline, result.buy_and_hold)
    for outcome in outcomes:
        f = outcome.figures
        table.add_row(
            outcome.name,
            f"{f.rebalances:,}",
            f"{f.orders:,}",
            _percent(f.turnover),
            f"{f.fees:,.2f}",
            _percent(f.tracking_error),
            f"{f.max_drift:.2f} pp",
            f"{f.mean_drift:.2f} pp",
            f"{f.final_value:,.2f}",
            _percent(f.cagr),
            _percent(f.volatility),
            _percent(f.max_drawdown),
            "-" if not math.isfinite(f.sharpe) else f"{f.sharpe:.2f}",
        )
    out.print(table)


def _percent(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value * 100:.2f}%"
