"""The `rebal` command line: plan a rebalance from files, show trees.

Exit codes: 0 ok, 1 error, 2 bad input (one line on stderr naming the file, the node path and the problem),
3 not running, 4 configuration error (`rebal.cli_support`). The operator, strategy and fund commands live
in `rebal.cli_ops`, `rebal.cli_strategies` and `rebal.cli_funds`, registered on this app at the bottom.
"""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree as RichTree

from rebal import batch, cli_funds, cli_ops, cli_strategies
from rebal.cli_support import (
    DEFAULT_NATS_URL,
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    fail,
    write_json,
)
from rebal.core.diff import diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.numbers import RANGE, in_range, parse_decimal
from rebal.core.plan import Plan, plan_rebalance
from rebal.io import FileError, load, load_tree
from rebal.render import JsonDict, plan_json, tree_json, write_plan_json

app = typer.Typer(
    name="rebal",
    help="Rebal: keep a hierarchical portfolio at its target allocation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tree_app = typer.Typer(help="Look at portfolio trees.", no_args_is_help=True)
app.add_typer(tree_app, name="tree")

OPERATION_STYLE = {"buy": "green", "sell": "red", "hold": "dim"}


def _amount_option(raw: str | None, option: str) -> float:
    if raw is None:
        return 0.0
    value = parse_decimal(raw)
    if value is None or value < 0:
        fail(f"{option}: {raw!r} is not a decimal amount >= 0")
    if not in_range(value):
        fail(f"{option}: {raw} is outside the supported range ({RANGE})")
    return float(value)


@app.command()
def plan(
    real: Annotated[Path | None, typer.Option("--real", help="The real tree (JSON or YAML).")] = None,
    target: Annotated[
        Path | None, typer.Option("--target", help="The desired tree with weights (JSON or YAML).")
    ] = None,
    prices: Annotated[
        Path | None, typer.Option("--prices", help='Prices: {"quote": "USD", "prices": {...}}.')
    ] = None,
    markets: Annotated[
        Path | None, typer.Option("--markets", help="Markets per exchange: steps, minimums, fees.")
    ] = None,
    band: Annotated[
        float, typer.Option("--band", help="Relative drift band: smaller differences hold.")
    ] = 0.0,
    invest: Annotated[str | None, typer.Option("--invest", help="Grow the portfolio by this value.")] = None,
    withdraw: Annotated[
        str | None, typer.Option("--withdraw", help="Shrink the portfolio by this value.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    portfolio: Annotated[
        str | None,
        typer.Option(
            "--portfolio", help="Plan PORTFOLIO with the running system instead (a stored preview)."
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", envvar="REBAL__API__URL", help="The monitor's API (with --portfolio)."),
    ] = None,
) -> None:
    """Compare the real tree with the desired tree and print the diff tree and the order plan.

    With --portfolio instead of files: a dry-run plan made by the running system from its latest
    snapshot and target, stored for `rebal approve PLAN_ID`."""
    if portfolio is not None:
        given = [
            name
            for name, value in (
                ("--real", real),
                ("--target", target),
                ("--prices", prices),
                ("--markets", markets),
                ("--invest", invest),
                ("--withdraw", withdraw),
            )
            if value is not None
        ]
        if given:
            fail(f"--portfolio plans with the running system's data: leave out {', '.join(given)}")
        cli_ops.preview(api_url, portfolio, str(band), as_json)
        return
    if real is None or target is None or prices is None:
        fail("--real, --target and --prices are needed (or --portfolio P to plan with the running system)")
    if invest is not None and withdraw is not None:
        fail("--invest and --withdraw cannot be used together")
    if not band >= 0:  # also rejects NaN
        fail(f"--band: {band} must be a number >= 0")
    invest_value = _amount_option(invest, "--invest")
    withdraw_value = _amount_option(withdraw, "--withdraw")
    batch.prepare()
    try:
        price_table = load(prices, Prices.parse)
        market_table = load(markets, Markets.parse) if markets is not None else Markets()
        real_tree = load_tree(real, "real")
        target_tree = load_tree(target, "target")
    except FileError as exc:
        fail(str(exc))
    try:
        diff = diff_trees(
            real_tree, target_tree, price_table, band=band, invest=invest_value, withdraw=withdraw_value
        )
        result = plan_rebalance(diff, market_table)
    except InputError as exc:
        files = {"real": real, "target": target, "prices": prices}
        source = files.get(exc.source)
        fail(f"{source}: {exc}" if source is not None else str(exc))
    if as_json:
        write_plan_json(result, sys.stdout.buffer, pretty=sys.stdout.isatty())
    else:
        _print_plan(result)


def _print_plan(result: Plan) -> None:
    console = Console(highlight=False)
    data = plan_json(result)
    console.print(_rich_diff(data["diff"]))
    orders = data["orders"]
    table = Table(title=f"Orders ({len(orders)})", show_lines=False)
    for column in ("phase", "account", "exchange", "symbol", "side", "amount", "est. price", "est. cost"):
        table.add_column(
            column, justify="right" if column in ("amount", "est. price", "est. cost") else "left"
        )
    for order in orders:
        table.add_row(
            str(order["phase"]),
            order["account"],
            order["exchange"],
            order["symbol"],
            f"[{OPERATION_STYLE[order['side']]}]{order['side']}[/]",
            order["amount"],
            order["est_price"],
            order["est_cost"],
        )
    console.print(table)
    if data["transfers"]:
        transfers = Table(title=f"Transfers ({len(data['transfers'])})")
        for column in ("asset", "from", "to", "amount", "est. value"):
            transfers.add_column(column)
        for t in data["transfers"]:
            transfers.add_row(t["asset"], t["from"], t["to"], t["amount"], t["est_value"])
        console.print(transfers)
    if data["skipped"]:
        skipped = Table(title=f"Skipped ({len(data['skipped'])})")
        for column in ("path", "symbol", "side", "amount", "reason"):
            skipped.add_column(column)
        for s in data["skipped"]:
            skipped.add_row(s["path"], s["symbol"], s["side"], s["amount"], s["reason"])
        console.print(skipped)


def _rich_diff(node: JsonDict, parent: RichTree | None = None) -> RichTree:
    op = node["operation"]
    label = (
        f"[bold]{node['name']}[/] "
        f"{_percent(node['current_weight'])} → {_percent(node['desired_weight'])}  "
        f"{node['current_value']} → {node['desired_value']}  "
        f"[{OPERATION_STYLE[op]}]{op} {node['diff_value']}[/]"
    )
    if "asset" in node:
        label += f"  [cyan]{node['asset']}[/] {node['current_amount']} → {node['desired_amount']}"
        if Decimal(node["locked_amount"]):
            label += f" (locked {node['locked_amount']})"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node["children"]:
        _rich_diff(child, branch)
    return branch


def _percent(weight: str) -> str:
    return f"{Decimal(weight) * 100:.2f}%"


@tree_app.command("show")
def tree_show(
    file: Annotated[Path, typer.Argument(help="A real tree (JSON or YAML).")],
    owner: Annotated[str | None, typer.Option("--owner", help="Show only this owner's virtual tree.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show a tree, or the virtual tree an owner (a bot) holds through its locks."""
    try:
        tree = load_tree(file, "real")
    except FileError as exc:
        fail(str(exc))
    data = tree_json(tree, owner)
    if data is None:
        fail(f"{file}: owner {owner!r} holds no locks in this tree")
    if as_json:
        write_json(data)
        return
    Console(highlight=False).print(_rich_tree(data))


def _rich_tree(node: dict[str, Any], parent: RichTree | None = None) -> RichTree:
    label = f"[bold]{node['name']}[/]"
    if "kind" in node:
        label += f" [dim]({node['kind']})[/]"
    if "quote" in node:
        label += f" quote {node['quote']}"
    if "asset" in node:
        label += f"  [cyan]{node['asset']}[/] {node['amount']}"
        if "locks" in node:
            locks = ", ".join(f"{lock['owner']} {lock['amount']}" for lock in node["locks"])
            label += f"  [yellow]locked {node['locked_amount']}[/] ({locks}), free {node['free_amount']}"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node.get("children", []):
        _rich_tree(child, branch)
    return branch


@app.command("rebalance")
def rebalance_command(
    portfolio: Annotated[str, typer.Option("--portfolio", help="The portfolio to rebalance.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan only: show the orders, send nothing.")
    ] = False,
    band: Annotated[str, typer.Option("--band", help="Relative drift band: smaller differences hold.")] = "0",
    nats_url: Annotated[str, typer.Option("--nats-url", envvar="REBAL__NATS__URL", help="NATS server.")] = (
        DEFAULT_NATS_URL
    ),
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the run until it is planned/done.")
    ] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each step.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Ask the planner for a rebalance of PORTFOLIO (executed by the executor unless --dry-run)."""
    from rebal import commands, subjects, telemetry

    try:
        subjects.check_token(portfolio, "--portfolio")
    except ValueError as exc:
        fail(str(exc))
    band_value = parse_decimal(band)
    if band_value is None or band_value < 0:
        fail(f"--band: {band!r} must be a decimal >= 0")
    try:
        # OTEL_TRACES_EXPORTER (the OpenTelemetry convention) turns the operator's span on.
        with telemetry.session("cli", os.environ):
            outcome = asyncio.run(
                commands.rebalance(
                    nats_url, portfolio, dry_run=dry_run, band=band_value, wait=wait, timeout=timeout
                )
            )
    except commands.NotRunning as exc:
        fail(str(exc), EXIT_NOT_RUNNING)
    failed = outcome.plan is not None and outcome.plan.type == "PlanFailed"
    unfinished = outcome.finished is not None and outcome.finished.status in ("error", "cancelled")
    if as_json:
        write_json(
            {
                "command_id": str(outcome.command.event_id),
                "run_id": str(outcome.plan.correlation_id) if outcome.plan else None,
                "plan": outcome.plan.model_dump(mode="json") if outcome.plan else None,
                "finished": outcome.finished.model_dump(mode="json") if outcome.finished else None,
            }
        )
    else:
        _print_outcome(outcome)
    if failed or unfinished:
        raise typer.Exit(EXIT_ERROR)


def _print_outcome(outcome: Any) -> None:
    console = Console(highlight=False)
    plan, finished = outcome.plan, outcome.finished
    if plan is None:
        console.print(f"sent rebalance command {outcome.command.event_id} for {outcome.command.portfolio_id}")
        return
    if plan.type == "PlanFailed":
        console.print(f"[red]no plan[/] for run {plan.correlation_id}: {plan.reason}")
        return
    kind = "dry-run plan" if plan.dry_run else "plan"
    console.print(
        f"run {plan.correlation_id}: {kind} with {len(plan.orders)} orders, {len(plan.skipped)} skipped, "
        f"{len(plan.transfers)} transfers (portfolio value {plan.total_value})"
    )
    table = Table(show_lines=False)
    for column in ("phase", "account", "symbol", "side", "amount", "est. cost"):
        table.add_column(column)
    for order in plan.orders:
        table.add_row(
            str(order.phase), order.account, order.symbol, order.side, str(order.amount), str(order.est_cost)
        )
    if plan.orders:
        console.print(table)
    if finished is not None:
        style = (
            "green" if finished.status == "completed" else "yellow" if "adjust" in finished.status else "red"
        )
        console.print(
            f"[{style}]{finished.status}[/]: {finished.placed} placed, {finished.filled} filled, "
            f"{finished.skipped} skipped, {finished.failed} failed"
            + (f" ({'; '.join(finished.reasons)})" if finished.reasons else "")
        )


for _commands in (cli_ops, cli_strategies, cli_funds):
    _commands.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
