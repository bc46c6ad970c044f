"""Strategy commands (issue 5): `rebal backfill` and `rebal optimize`.

`optimize` gives the allocation across strategies and its volatility targeting, the numbers of
`portfolio_config.json` (`--export FILE` writes exactly that document: account_value, weights,
realised_volatility, target_volatility, leverage). With `--returns FILE` it solves offline with the
optimizer's own mathematics (`rebal_allocation`); otherwise it publishes `RunOptimization` and waits for
the running optimizer's answer (exit 3 when it does not come, 1 when the optimizer could not allocate,
with its reason).

`backfill` publishes a strategy's return history (docs/bots.md, "Backfill files") on the bus, exactly
as its bot would report it: one `StrategyReturnReported` per period, its id derived from the strategy and
the timestamp, so running it again adds nothing (the bus drops the repeat within its duplicate window,
the tracker's table keeps one row per strategy and timestamp after it). The whole file is read and checked
first: a bad row is named by line and column (exit 2) and nothing is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from rebal import subjects
from rebal.core.numbers import parse_decimal
from rebal_cli.support import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    fail,
    write_json,
)

if TYPE_CHECKING:
    from rebal.events import StrategyReturnReported

# Publishes in flight at once while backfilling (each waits for its JetStream acknowledgement).
BACKFILL_CONCURRENCY = 256

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats-url", envvar="REBAL__NATS__URL", help="NATS server (default: the context's)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


def _token(value: str, option: str) -> str:
    try:
        return subjects.check_token(value, option)
    except ValueError as exc:
        fail(str(exc))


def backfill_events(
    portfolio: str, strategy: str, series: Sequence[tuple[datetime, Decimal]], now: datetime
) -> list[StrategyReturnReported]:
    """The reports a bot would have sent for these periods (ids from strategy and timestamp, like the
    demo bot's, so a period the bot already reported is the same event)."""
    from rebal.events import StrategyReturnReported, new_event

    return [
        new_event(
            StrategyReturnReported,
            key=f"{strategy}|{ts.isoformat()}",
            now=now,
            occurred_at=ts,
            portfolio_id=portfolio,
            strategy_id=strategy,
            timestamp=ts,
            period_return=value,
        )
        for ts, value in series
    ]


async def _publish_all(url: str, events: list[StrategyReturnReported], show: bool) -> tuple[int, int]:
    """(stored, duplicates) as the server acknowledged them."""
    import asyncio

    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rebal_cli.commands import NotRunning, connected
    from rebal_cli.render import console as _console

    stored = duplicates = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    async with connected(url) as client:
        js = client.jetstream()

        async def one(event: StrategyReturnReported) -> bool:
            ack = await js.publish(
                event.subject,
                event.model_dump_json().encode(),
                stream=subjects.EVENTS_STREAM,
                headers={"Nats-Msg-Id": str(event.event_id)},
                timeout=10.0,
            )
            return bool(ack.duplicate)

        console = _console(stderr=True)
        hidden = not show or not console.is_terminal
        with Progress(*columns, console=console, disable=hidden, transient=True) as bar:
            task = bar.add_task("publishing returns", total=len(events))
            for start in range(0, len(events), BACKFILL_CONCURRENCY):
                chunk = events[start : start + BACKFILL_CONCURRENCY]
                try:
                    results = await asyncio.gather(*(one(event) for event in chunk))
                except (NoRespondersError, NatsTimeout) as exc:
                    raise NotRunning(
                        f"NATS did not store the returns (is the system running, with its streams?): "
                        f"{exc or type(exc).__name__}; {stored + duplicates} of {len(events)} published"
                    ) from None
                duplicates += sum(results)
                stored += len(results) - sum(results)
                bar.advance(task, len(chunk))
    return stored, duplicates


def backfill(
    file: Annotated[Path, typer.Argument(help="CSV (date,return) or JSON returns; see docs/bots.md.")],
    portfolio: Annotated[str, typer.Option("--portfolio", help="The portfolio the strategy belongs to.")],
    strategy: Annotated[str, typer.Option("--strategy", help="The strategy id.")],
    nats_url: NatsUrl = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar.")] = True,
    as_json: AsJson = False,
) -> None:
    """Publish a strategy's return history, as its bot would have; running it again adds nothing."""
    import asyncio

    from rebal_cli.api import nats_url as resolve_nats_url
    from rebal_cli.commands import NotRunning
    from rebal_cli.render import console as _console
    from rebal_cli.returns_file import ReturnsFileError, single_series

    _token(portfolio, "--portfolio")
    _token(strategy, "--strategy")
    try:
        series = single_series(file)
    except ReturnsFileError as exc:
        fail(str(exc))
    events = backfill_events(portfolio, strategy, series, datetime.now(UTC))
    try:
        stored, duplicates = asyncio.run(
            _publish_all(resolve_nats_url(nats_url), events, progress and not as_json)
        )
    except NotRunning as exc:
        fail(str(exc), EXIT_NOT_RUNNING)
    first, last = series[0][0].isoformat(), series[-1][0].isoformat()
    if as_json:
        write_json(
            {
                "portfolio_id": portfolio,
                "strategy_id": strategy,
                "returns": len(events),
                "stored": stored,
                "duplicates": duplicates,
                "first": first,
                "last": last,
            }
        )
        return
    _console().print(
        f"{strategy} ({portfolio}): {len(events)} returns from {first} to {last}: {stored} published, "
        f"{duplicates} already known"
    )


# -- optimize -------------------------------------------------------------------------------------

OPTIMIZE_TIMEOUT_SECONDS = 30.0
# `rebal_allocation.allocation.METHOD_PARAMETERS`'s methods, named here so that the help does not load the
# allocation mathematics (tests/cli/test_start.py keeps them equal).
METHODS = ("min_variance", "mean_variance", "max_sharpe", "risk_parity", "slope_std", "mix")


def _parameters(raw: list[str]) -> dict[str, float]:
    out = {}
    for item in raw:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            fail(f"--param: {item!r} must be NAME=NUMBER (e.g. risk_aversion=2)")
        if not sep or not key.strip():
            fail(f"--param: {item!r} must be NAME=NUMBER (e.g. risk_aversion=2)")
    return out


def _offline(
    path: Path,
    method: str,
    parameters: dict[str, float],
    account_value: Decimal,
    target_volatility: float,
    max_leverage: float,
    estimator: str,
    lookback: int,
    min_weight: float,
    max_weight: float,
) -> dict[str, object]:
    """Solve from a returns file with the optimizer's own mathematics (no bus, no database)."""
    from pydantic import ValidationError

    from rebal.core.performance import align
    from rebal_allocation.allocation import Allocation
    from rebal_allocation.estimate import TooLarge
    from rebal_allocation.methods import make_optimizer  # imports cvxpy: only when solving
    from rebal_allocation.optimize import Infeasible, SolverFailed
    from rebal_allocation.volatility import portfolio_config
    from rebal_allocation.volatility import target_volatility as scale
    from rebal_cli.returns_file import ReturnsFileError, read_returns

    try:
        returns = read_returns(path)
    except ReturnsFileError as exc:
        fail(str(exc))
    names = tuple(returns.series)
    try:
        _, matrix = align(
            [[ts.timestamp() for ts, _ in returns.series[n]] for n in names],
            [[float(v) for _, v in returns.series[n]] for n in names],
        )
    except ValueError as exc:
        fail(f"{path}: {exc}")
    matrix = matrix[-lookback:]
    if matrix.shape[0] < 2:
        fail(f"{path}: only {matrix.shape[0]} dates every strategy has a return for; at least 2 are needed")
    try:
        allocation = Allocation(
            method=method,
            parameters=parameters,
            estimator=estimator,
            min_weight=min_weight,
            max_weight=max_weight,
            target_volatility=target_volatility,
            max_leverage=max_leverage,
        )
        optimizer = make_optimizer(allocation, names)
    except ValidationError as exc:
        fail("the allocation options: " + "; ".join(error["msg"] for error in exc.errors()))
    except ValueError as exc:  # constraints the method cannot take
        fail(f"the allocation options: {exc}")
    try:
        result = optimizer.solve(matrix)
    except TooLarge as exc:  # what cannot be estimated, or would not fit in memory
        fail(f"{path}: {exc}")
    if isinstance(result, Infeasible | SolverFailed):
        kind = "infeasible" if isinstance(result, Infeasible) else "solver failed"
        fail(f"no allocation: {kind}: {result.reason}", EXIT_ERROR)
    config = scale(list(names), result.weights, matrix, float(account_value), target_volatility, max_leverage)
    return {
        "method": method,
        "status": result.status,
        "observations": int(matrix.shape[0]),
        "portfolio_config": portfolio_config(config),
    }


async def _ask(url: str, portfolio: str, timeout: float) -> object:
    """Publish `RunOptimization` and wait for the optimizer's answer (an event caused by it)."""
    import asyncio
    import uuid

    from nats.aio.msg import Msg
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from rebal import bus
    from rebal.events import Event, OptimizationFailed, RunOptimization, TargetWeightsComputed, new_event
    from rebal_cli.commands import NotRunning, connected

    command = new_event(
        RunOptimization, key=uuid.uuid4(), now=datetime.now(UTC), portfolio_id=portfolio, requested_by="cli"
    )
    answers: asyncio.Queue[Event] = asyncio.Queue()
    async with connected(url) as client:

        async def keep(message: Msg) -> None:
            event = bus.decode_any(message.subject, message.data)
            if not isinstance(event, str) and event.causation_id == command.event_id:
                await answers.put(event)

        for kind in (TargetWeightsComputed, OptimizationFailed):
            await client.subscribe(kind.topic.subject(portfolio), cb=keep)
        try:
            await client.jetstream().publish(
                command.subject,
                command.model_dump_json().encode(),
                stream=subjects.COMMANDS_STREAM,
                headers={"Nats-Msg-Id": str(command.event_id)},
                timeout=timeout,
            )
        except (NatsTimeout, NoRespondersError):
            raise NotRunning("NATS did not store the command: are the services running?") from None
        try:
            return await asyncio.wait_for(answers.get(), timeout)
        except TimeoutError:
            raise NotRunning(f"the optimizer did not answer within {timeout:g} s: is it running?") from None


def optimize(
    portfolio: Annotated[
        str | None, typer.Option("--portfolio", help="Ask the running optimizer for this portfolio.")
    ] = None,
    returns: Annotated[
        Path | None, typer.Option("--returns", help="Solve offline from this returns file (docs/bots.md).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write portfolio_config.json (exactly its fields) here.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help=f"Offline: one of {', '.join(METHODS)}.")] = (
        "risk_parity"
    ),
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Offline: a method parameter NAME=NUMBER.")
    ] = None,
    account_value: Annotated[
        str | None, typer.Option("--account-value", help="Offline: the capital allocated.")
    ] = None,
    target_vol: Annotated[
        float, typer.Option("--target-volatility", help="Offline: annualised volatility target.")
    ] = 0.10,
    max_leverage: Annotated[float, typer.Option("--max-leverage", help="Offline: the leverage cap.")] = 1.0,
    estimator: Annotated[
        str, typer.Option("--estimator", help="Offline: sample, ewma or ledoit_wolf.")
    ] = "ledoit_wolf",
    lookback: Annotated[int, typer.Option("--lookback", help="Offline: the last N common dates.")] = 365,
    min_weight: Annotated[float, typer.Option("--min-weight", help="Offline: per strategy.")] = 0.0,
    max_weight: Annotated[float, typer.Option("--max-weight", help="Offline: per strategy.")] = 1.0,
    nats_url: NatsUrl = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the optimizer.")] = (
        OPTIMIZE_TIMEOUT_SECONDS
    ),
    as_json: AsJson = False,
) -> None:
    """The allocation across strategies and its volatility targeting (portfolio_config.json): offline
    from a returns file, or from the running optimizer (which uses its configured method)."""
    import asyncio

    from rebal.events import OptimizationFailed, TargetWeightsComputed
    from rebal_cli.api import nats_url as resolve_nats_url
    from rebal_cli.commands import NotRunning
    from rebal_cli.render import console as _console

    if export is not None and (export.is_dir() or not export.parent.is_dir()):
        fail(f"--export: {export} is a directory or its directory does not exist")
    if returns is not None:
        if account_value is None:
            fail("--account-value: needed with --returns (the capital the weights apply to)")
        value = parse_decimal(account_value)
        if value is None or value <= 0:
            fail(f"--account-value: {account_value!r} must be a decimal > 0")
        if method not in METHODS:
            fail(f"--method: {method!r} is not one of {', '.join(METHODS)}")
        if lookback < 2:
            fail(f"--lookback: {lookback} must be at least 2")
        outcome = _offline(
            returns,
            method,
            _parameters(param or []),
            value,
            target_vol,
            max_leverage,
            estimator,
            lookback,
            min_weight,
            max_weight,
        )
    else:
        if portfolio is None:
            fail("--portfolio: name the portfolio to ask the running optimizer about, or give --returns FILE")
        _token(portfolio, "--portfolio")
        try:
            answer = asyncio.run(_ask(resolve_nats_url(nats_url), portfolio, timeout))
        except NotRunning as exc:
            fail(str(exc), EXIT_NOT_RUNNING)
        if isinstance(answer, OptimizationFailed):
            fail(f"no allocation for {portfolio}: {answer.reason}", EXIT_ERROR)
        assert isinstance(answer, TargetWeightsComputed)
        found = answer.optimization
        if found is None:
            fail(f"the optimizer answered for {portfolio} without an allocation", EXIT_ERROR)
        outcome = {
            # Published as the portfolio's target: the next rebalance trades it (docs/cli.md).
            "published_target": str(answer.event_id),
            "method": found.method,
            "status": found.status,
            "observations": found.observations,
            "portfolio_config": {
                "account_value": float(found.account_value),
                "weights": dict(sorted(found.weights.items())),
                "realised_volatility": found.realised_volatility,
                "target_volatility": found.target_volatility,
                "leverage": found.leverage,
            },
        }
    config = outcome["portfolio_config"]
    if export is not None:
        export.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    if as_json:
        write_json(outcome)
        return
    _print_allocation(outcome, export)
    if portfolio is not None and returns is None:
        _console().print(
            f"published as {portfolio}'s new target ({outcome['published_target']}): the next rebalance"
            f" trades it; see what it would trade with: rebal plan --portfolio {portfolio}"
        )


def _print_allocation(outcome: dict[str, object], export: Path | None) -> None:
    from rich.table import Table

    from rebal_cli.render import console as _console

    config = outcome["portfolio_config"]
    assert isinstance(config, dict)
    console = _console()
    table = Table(title=f"{outcome['method']} ({outcome['status']}, {outcome['observations']} periods)")
    table.add_column("strategy")
    table.add_column("weight", justify="right")
    table.add_column("with leverage", justify="right")
    leverage = float(config["leverage"])
    for name, weight in config["weights"].items():
        table.add_row(name, f"{weight * 100:.2f}%", f"{weight * leverage * 100:.2f}%")
    console.print(table)
    realised = config["realised_volatility"]
    console.print(
        f"account value {config['account_value']:g}; realised volatility "
        f"{'-' if realised is None else f'{realised * 100:.2f}%'}, target "
        f"{config['target_volatility'] * 100:.2f}%: leverage {leverage:.4f}"
    )
    if export is not None:
        console.print(f"wrote {export}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.command()(backfill)
    app.command()(optimize)
