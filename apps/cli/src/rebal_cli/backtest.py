"""`rebal backtest`: replay a price history through the same core and policies as the live system, and
compare rebalancing policies (docs/backtest.md).

    rebal backtest --prices HISTORY.csv --target TARGET.json [--real START.json | --initial AMOUNT]
                   [--markets MARKETS.json] --policy POLICY [--policy POLICY ...] [--flows FLOWS.csv]
                   [--json] [--plot OUT.html|OUT.png]
    rebal backtest --strategies RETURNS.csv --allocation ALLOCATION [--json] [--plot OUT.html|OUT.png]

The files are read and checked here; the replay is `rebal.core.backtest` (pure); the optimizer's walk
forward is `rebal_allocation.walkforward`. Bad input exits 2 with one line naming the file, the line and
the column (or the key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer import Option


def backtest(
    prices: Annotated[
        Path | None, Option("--prices", help="HISTORY.csv: date, then one price column per asset.")
    ] = None,
    target: Annotated[Path | None, Option("--target", help="The desired tree (JSON, YAML or TOML).")] = None,
    real: Annotated[
        Path | None, Option("--real", help="Start from this real tree (default: at the target).")
    ] = None,
    initial: Annotated[
        str | None,
        Option(
            "--initial",
            metavar="AMOUNT",
            help="Start at the target holding this value (default: 10000, without --real).",
        ),
    ] = None,
    markets: Annotated[
        Path | None, Option("--markets", help="Markets per exchange: steps, minimums, fees.")
    ] = None,
    policy: Annotated[
        list[Path] | None,
        Option("--policy", metavar="POLICY", help="A policy file (repeat to compare)."),
    ] = None,
    flows: Annotated[
        Path | None, Option("--flows", help="FLOWS.csv: date,amount deposits and withdrawals.")
    ] = None,
    strategies: Annotated[
        Path | None, Option("--strategies", help="Strategy returns to walk the optimizer over (CSV or JSON).")
    ] = None,
    allocation: Annotated[
        Path | None,
        Option("--allocation", help="With --strategies: the methods and schedule (docs/backtest.md)."),
    ] = None,
    as_json: Annotated[bool, Option("--json", help="Print the figures as JSON.")] = False,
    plot: Annotated[
        Path | None, Option("--plot", help="Write the charts: OUT.html (Plotly) or OUT.png.")
    ] = None,
) -> None:
    """Replay a price history through the live system's core and compare rebalancing policies (or, with
    --strategies, walk the optimizer forward over strategy returns)."""
    from rebal_cli.backtest_run import run  # the core, numpy and rich: only when it runs

    run(prices, target, real, initial, markets, policy, flows, strategies, allocation, as_json, plot)


def register(app: typer.Typer) -> None:
    app.command()(backtest)
