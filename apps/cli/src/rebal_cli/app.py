"""The `rebal` command line: plan a rebalance from files, show trees.

Exit codes: 0 ok, 1 error, 2 bad input (one line on stderr naming the file, the node path and the problem),
3 not running, 4 configuration error (`rebal_cli.support`). The operator, strategy and fund commands live
in `rebal_cli.ops`, `rebal_cli.strategies` and `rebal_cli.funds`, registered on this app at the bottom.
Each command imports what it uses when it runs: `rebal --help` loads none of the core.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rebal.core.numbers import RANGE, in_range, parse_decimal
from rebal_cli import backtest as cli_backtest
from rebal_cli import funds as cli_funds
from rebal_cli import ops as cli_ops
from rebal_cli import paper as cli_paper
from rebal_cli import policy as cli_policy
from rebal_cli import strategies as cli_strategies
from rebal_cli import target as cli_target
from rebal_cli import transfers as cli_transfers
from rebal_cli import venue as cli_venue
from rebal_cli.plain import PlainCommand, PlainGroup
from rebal_cli.support import (
    DEFAULT_NATS_URL,
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    band_option,
    exchanges_not_held,
    fail,
    warn,
    write_json,
)

if TYPE_CHECKING:
    from collections.abc import Collection

    from rebal.core.market import Markets, Prices
    from rebal.core.networks import Networks
    from rebal.core.plan import Plan
    from rebal.core.position_plan import PositionPlan

app = typer.Typer(
    name="rebal",
    help="Rebal: keep a hierarchical portfolio at its target allocation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help and usage errors in click's plain text, for every group and command: rich's formatter
    # (typer.rich_utils loads rich, markdown-it and pygments) took half of `rebal --help`'s start.
    rich_markup_mode=None,
    cls=PlainGroup,  # its --version without pydantic (rebal_cli.plain)
)
tree_app = typer.Typer(help="Look at portfolio trees.", no_args_is_help=True)
app.add_typer(tree_app, name="tree")


def _version(shown: bool) -> None:
    if shown:
        from rebal_cli import __version__

        typer.echo(f"rebal {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Rebal: keep a hierarchical portfolio at its target allocation."""


def _amount_option(raw: str | None, option: str) -> float:
    if raw is None:
        return 0.0
    value = parse_decimal(raw)
    if value is None or value < 0:
        fail(f"{option}: {raw!r} is not a decimal amount >= 0")
    if not in_range(value):
        fail(f"{option}: {raw} is outside the supported range ({RANGE})")
    return float(value)


@app.command(cls=PlainCommand)  # its options' values without pydantic (rebal_cli.plain)
def plan(
    ctx: typer.Context,
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
    contracts: Annotated[
        Path | None,
        typer.Option("--contracts", help="Perpetual contracts per exchange, for futures accounts."),
    ] = None,
    band: Annotated[
        float, typer.Option("--band", help="Relative drift band: smaller differences hold.")
    ] = 0.0,
    network: Annotated[
        Path | None,
        typer.Option("--network", help="Networks per exchange and asset: withdrawal fees, minimums, on/off."),
    ] = None,
    invest: Annotated[str | None, typer.Option("--invest", help="Grow the portfolio by this value.")] = None,
    withdraw: Annotated[
        str | None, typer.Option("--withdraw", help="Shrink the portfolio by this value.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    buy_only: Annotated[
        bool,
        typer.Option("--buy-only", help="Sell nothing: spend the cash above its target on what is short."),
    ] = False,
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
    from decimal import Decimal

    from rebal import batch
    from rebal.core import partial
    from rebal.core.contracts import Contracts
    from rebal.core.diff import diff_trees
    from rebal.core.errors import InputError
    from rebal.core.market import Markets, Prices
    from rebal.core.networks import Networks
    from rebal.core.plan import plan_rebalance
    from rebal.core.position_plan import PositionPlan, plan_positions
    from rebal.io import FileError, load, load_tree
    from rebal_cli import forked

    if portfolio is not None:
        given = [
            name
            for name, value in (
                ("--real", real),
                ("--target", target),
                ("--prices", prices),
                ("--markets", markets),
                ("--contracts", contracts),
                ("--network", network),
                ("--invest", invest),
                ("--withdraw", withdraw),
                ("--buy-only", buy_only or None),
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
    apart = forked.parallel(real, target)  # a second process reads the desired tree, writes half the JSON
    # The desired tree's helper is killed once its tree came and reaped on the way out (by then at once):
    # waiting for it right away waited for its memory to be torn down (8-16 ms at 200k wallets).
    with forked.tree_read_apart(target, "target", apart) as read_target:
        try:
            price_table = load(prices, Prices.parse)
            market_table = load(markets, Markets.parse) if markets is not None else Markets()
            contract_table = load(contracts, Contracts.parse) if contracts is not None else Contracts()
            networks = load(network, Networks.parse) if network is not None else None
            real_tree = load_tree(real, "real")
            target_tree = read_target()
        except FileError as exc:
            fail(str(exc))
        batch.settled()
        try:
            diff = diff_trees(
                real_tree, target_tree, price_table, band=band, invest=invest_value, withdraw=withdraw_value
            )
            # The exchanges as the planner resolves them (a bank's own name stands for its exchange).
            exchanges = {exchange for exchange, _ in diff.tree.accounts.values()}
            banks = {int(node) for node in diff.tree.bank_accounts}
            trading = {exchange for node, (exchange, _) in diff.tree.accounts.items() if node not in banks}
            warn(
                unused_exchanges(
                    exchanges, price_table, prices, networks, network, market_table, markets, trading
                )
            )
            result = plan_rebalance(
                partial.buy_only(diff) if buy_only else diff, market_table, networks=networks
            )
            warn([dear.line(price_table.quote) for dear in result.dear_conversions()])
            positions = plan_positions(diff.tree, contract_table.marked(price_table), Decimal(repr(band)))
        except InputError as exc:
            files = {"real": real, "target": target, "prices": prices}
            source = files.get(exc.source)
            fail(f"{source}: {exc}" if source is not None else str(exc))
        if as_json and positions == PositionPlan() and not sys.stdout.isatty():
            # no futures account wants positions, not a terminal: the documented JSON, streamed
            forked.write_plan_json(result, sys.stdout.buffer, apart)
        else:
            _show(result, positions, as_json)
            return
    _written(ctx)


def _show(result: Plan, positions: PositionPlan, as_json: bool) -> None:
    """The plan as indented JSON (for a terminal, or with its futures accounts' part) or as a view."""
    from rebal.core.position_plan import PositionPlan
    from rebal.render import plan_json, write_plan_json

    if positions == PositionPlan():
        if as_json:  # on a terminal
            write_plan_json(result, sys.stdout.buffer, pretty=True)
            return
        document = plan_json(result)
    else:
        document = with_positions(plan_json(result), positions)
        if as_json:
            write_json(document)
            return
    from rebal_cli import render  # the terminal's view only: rich and the renderer

    # The valuation currency the values (costs, savings, transfers' values) are in: the prices' quote, not
    # a guess from the orders' symbols (mixed, as a route's are, or none, it showed 8 places or all digits).
    render.print_plan({**document, "prices": {"quote": result.diff.prices.quote}})


def _written(ctx: typer.Context) -> None:
    """The plan written whole, the console script (`main`) ends here at once: freeing the trees and the
    plan object by object, then the interpreter's own teardown, took some 0.05 s of 1.1 s at 200k
    wallets, and nothing is left to do (the helpers are reaped, no exit handler is ours). Callers of the
    app in a process of their own (tests) get the usual return; an output that cannot be flushed (a
    closed pipe) is left to the usual exit too, which reports it as before."""
    if ctx.obj is not CONSOLE:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        return
    os._exit(EXIT_OK)


def unused_exchanges(
    held: Collection[str],
    prices: Prices,
    prices_file: Path,
    networks: Networks | None,
    network_file: Path | None,
    markets: Markets | None = None,
    markets_file: Path | None = None,
    trading: Collection[str] = (),
) -> list[str]:
    """An exchange the prices' `venues`, the network file or the markets file name that no account is on
    (`held`: the accounts' exchanges; a typo, "binanse", would otherwise plan binance at the reference
    price, or free of fees, unnoticed): `exchanges_not_held`'s lines. The markets file's are named only
    when an exchange an account trades on (`trading`) has no markets in it: a shared markets file listing
    more exchanges than the portfolio uses is the usual case, a typo leaves an account without its own."""
    sections: list[tuple[Path, str, Collection[str], str]] = [
        (prices_file, "venues", prices.venues, "prices")
    ]
    if networks is not None and network_file is not None:
        sections += [
            (network_file, "withdrawals", networks.withdrawals.keys(), "withdrawals"),
            (network_file, "deposits", networks.deposits.keys(), "deposits"),
        ]
    if markets is not None and markets_file is not None and set(trading) - set(markets.exchanges):
        sections.append((markets_file, "", markets.exchanges.keys(), "markets"))
    return exchanges_not_held(held, sections)


def with_positions(document: dict[str, Any], positions: PositionPlan) -> dict[str, Any]:
    """The plan's JSON with its futures accounts' part, as a plan on the bus carries it: the
    `position_orders` and `position_settings`, their skips among the others."""
    from rebal.events import PlannedPositionOrder, PlannedPositionSetting, SkippedOrder

    def dumped(models: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [model.model_dump(mode="json") for model in models]

    return {
        **document,
        "skipped": [*document["skipped"], *dumped(SkippedOrder.trusted(positions.skips))],
        "position_orders": dumped(PlannedPositionOrder.trusted(positions.orders)),
        "position_settings": dumped(PlannedPositionSetting.trusted(positions.settings)),
    }


@tree_app.command("show")
def tree_show(
    file: Annotated[Path, typer.Argument(help="A real tree (JSON or YAML).")],
    owner: Annotated[str | None, typer.Option("--owner", help="Show only this owner's virtual tree.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show a tree, or the virtual tree an owner (a bot) holds through its locks."""
    from rebal.io import FileError, load_tree
    from rebal.render import tree_json
    from rebal_cli import render

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
    render.console().print(render.real_tree(data))


@app.command("rebalance")
def rebalance_command(
    portfolio: Annotated[str, typer.Option("--portfolio", help="The portfolio to rebalance.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan only: show the orders, send nothing.")
    ] = False,
    band: Annotated[str, typer.Option("--band", help="Relative drift band: smaller differences hold.")] = "0",
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            envvar="REBAL__NATS__URL",
            help=f"NATS server (default: the client context's, else {DEFAULT_NATS_URL}).",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the run until it is planned/done.")
    ] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each step.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Ask the planner for a rebalance of PORTFOLIO (executed by the executor unless --dry-run)."""
    import asyncio

    from rebal import subjects, telemetry
    from rebal.events import PlanFailed
    from rebal_cli import commands, render
    from rebal_cli.api import nats_settings as resolve_nats

    try:
        subjects.check_token(portfolio, "--portfolio")
    except ValueError as exc:
        fail(str(exc))
    band_value = band_option(band)
    url = resolve_nats(nats_url)
    try:
        # OTEL_TRACES_EXPORTER (the OpenTelemetry convention) turns the operator's span on.
        with telemetry.session("cli", os.environ):
            outcome = asyncio.run(
                commands.rebalance(
                    url, portfolio, dry_run=dry_run, band=band_value, wait=wait, timeout=timeout
                )
            )
    except commands.NotRunning as exc:
        fail(str(exc), EXIT_NOT_RUNNING)
    except commands.Unreadable as exc:
        fail(str(exc), EXIT_ERROR)
    plan = outcome.plan
    if isinstance(plan, PlanFailed) and plan.unknown_portfolio and not as_json:
        fail(f"--portfolio: {plan.reason}")
    failed = plan is not None and plan.type == "PlanFailed"
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
        render.print_outcome(outcome)
    if isinstance(plan, PlanFailed) and plan.unknown_portfolio:
        raise typer.Exit(EXIT_BAD_INPUT)
    if failed or unfinished:
        raise typer.Exit(EXIT_ERROR)


for _commands in (
    cli_ops,
    cli_strategies,
    cli_funds,
    cli_paper,
    cli_target,
    cli_venue,
    cli_policy,
    cli_backtest,
    cli_transfers,
):
    _commands.register(app)


# The console script's mark on the context (`ctx.obj`): `rebal plan --json` may end the process itself.
CONSOLE = "rebal console script"


def main() -> None:
    app(obj=CONSOLE)


if __name__ == "__main__":
    main()
