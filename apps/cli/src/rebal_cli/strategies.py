"""Strategy commands (issue 5): `rebal backfill` and `rebal optimize`.

`optimize` gives the allocation across strategies and its volatility targeting, the numbers of
`portfolio_config.json` (`--export FILE` writes that document: account_value, weights,
ann_volatility_pct, target_vol_pct, leverage; `rebal_allocation.volatility`). With `--returns FILE` or
`--stats-dir DIR` it solves offline with the optimizer's own mathematics (`rebal_allocation`), by default
as the strategy manager's workflow does (docs/strategies.md: slope/std of the compounded equity curve over
the last 365 days, leverage uncapped), annualising at the frequency of the dates; otherwise it publishes
`RunOptimization` and waits for the running optimizer's answer (exit 3 when it does not come, 1 when the
optimizer could not allocate, with its reason). Bad input (a file, an option, constant or irregular data)
is one line naming it, exit 2.

`backfill` publishes a strategy's return history (docs/bots.md, "Backfill files") on the bus, exactly
as its bot would report it: one `StrategyReturnReported` per period, its id derived from the strategy and
the timestamp, so running it again adds nothing (the bus drops the repeat within its duplicate window,
the tracker's table keeps one row per strategy and timestamp after it). The whole file is read and checked
first: a bad row is named by line and column (exit 2) and nothing is published.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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

if TYPE_CHECKING:  # numpy, pydantic and rich load when a command runs, not when `rebal --help` starts
    import numpy as np
    from numpy.typing import NDArray

    from rebal.events import StrategyReturnReported
    from rebal.settings import NatsSettings
    from rebal_cli.returns_file import Returns

    Floats = NDArray[np.float64]

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


async def _publish_all(
    url: NatsSettings, events: list[StrategyReturnReported], show: bool
) -> tuple[int, int]:
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

    from rebal_cli.api import nats_settings as resolve_nats
    from rebal_cli.commands import NotRunning
    from rebal_cli.render import console as _console
    from rebal_cli.returns_file import ReturnsFileError, single_series

    _token(portfolio, "--portfolio")
    _token(strategy, "--strategy")
    try:
        series = single_series(file)
    except ReturnsFileError as exc:
        fail(str(exc))
    frequency = _spacing(file, series)
    events = backfill_events(portfolio, strategy, series, datetime.now(UTC))
    try:
        stored, duplicates = asyncio.run(
            _publish_all(resolve_nats(nats_url), events, progress and not as_json)
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
                "frequency": frequency,
            }
        )
        return
    _console().print(
        f"{strategy} ({portfolio}): {len(events)} {frequency} returns from {first} to {last}: "
        f"{stored} published, {duplicates} already known"
    )


def _spacing(file: Path, series: Sequence[tuple[datetime, Decimal]]) -> str:
    """The frequency of the file's dates (what statistics will annualise at); irregular dates are refused
    before anything is published (one return has no spacing: "single")."""
    from rebal.core.performance import Irregular, frequency_of

    if len(series) < 2:
        return "single"
    found = frequency_of([ts.timestamp() for ts, _ in series])
    if isinstance(found, Irregular):
        fail(f"{file}: {found.reason}")
    return found.describe()


# -- optimize -------------------------------------------------------------------------------------

OPTIMIZE_TIMEOUT_SECONDS = 30.0
# `rebal_allocation.allocation.METHOD_PARAMETERS`'s methods, named here so that the help does not load the
# allocation mathematics (tests/cli/test_start.py keeps them equal).
METHODS = ("min_variance", "mean_variance", "max_sharpe", "risk_parity", "slope_std", "mix")
# The strategy manager's workflow (docs/strategies.md): slope/std of the combined equity curve over the
# last 365 days, leverage = target volatility / realised volatility with no cap.
DEFAULT_METHOD = "slope_std"
DEFAULT_WINDOW_DAYS = 365
# A volatility target is a fraction (0.30 is 30%); one this large is a percentage typed by mistake.
LARGEST_TARGET_VOLATILITY = 5.0


def _parameters(raw: list[str]) -> dict[str, float]:
    out = {}
    for item in raw:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            fail(f"--param: {item!r} must be NAME=NUMBER (e.g. risk_aversion=2)")
        if not sep or not key.strip():
            fail(f"--param: {item!r} must be NAME=NUMBER (e.g. risk_aversion=2)")
        if not math.isfinite(number):
            fail(f"--param: {item!r}: {key.strip()} must be a finite number")
        out[key.strip()] = number
    return out


@dataclass(frozen=True)
class Offline:
    """What `rebal optimize` solves offline: the options besides the returns."""

    method: str
    parameters: dict[str, float]
    account_value: Decimal
    target_volatility: float
    max_leverage: float | None
    estimator: str
    equity: str
    window_days: int
    lookback: int | None
    min_weight: float
    max_weight: float


def _window(stamps: Floats, matrix: Floats, options: Offline) -> tuple[Floats, Floats]:
    """The last `lookback` common dates when given, else those of the last `window_days` days."""
    if options.lookback is not None:
        return stamps[-options.lookback :], matrix[-options.lookback :]
    keep = stamps > stamps[-1] - options.window_days * 86_400.0 if stamps.size else stamps.astype(bool)
    return stamps[keep], matrix[keep]


def _offline(source: str, returns: Returns, options: Offline) -> dict[str, object]:
    """Solve with the optimizer's own mathematics (no bus, no database)."""
    from pydantic import ValidationError

    from rebal.core.performance import MIN_PERIODS_TO_ANNUALISE, Irregular, align, frequency_of
    from rebal_allocation.allocation import Allocation
    from rebal_allocation.estimate import TooLarge
    from rebal_allocation.methods import make_optimizer  # imports cvxpy: only when solving
    from rebal_allocation.optimize import BadData, Infeasible, SolverFailed
    from rebal_allocation.volatility import portfolio_config
    from rebal_allocation.volatility import target_volatility as scale

    names = tuple(returns.series)
    try:
        all_stamps, all_rows = align(
            [[ts.timestamp() for ts, _ in returns.series[n]] for n in names],
            [[float(v) for _, v in returns.series[n]] for n in names],
        )
    except ValueError as exc:
        fail(f"{source}: {exc}")
    found = frequency_of(all_stamps)
    if isinstance(found, Irregular):
        fail(f"{source}: the dates every strategy has a return for: {found.reason}")
    stamps, matrix = _window(all_stamps, all_rows, options)
    periods = int(matrix.shape[0])
    if periods < MIN_PERIODS_TO_ANNUALISE:
        fail(
            f"{source}: only {periods} {found.name} returns every strategy has in the window; at least "
            f"{MIN_PERIODS_TO_ANNUALISE} are needed to annualise a volatility"
        )
    parameters = dict(options.parameters)
    if options.method in ("slope_std", "mix"):
        parameters.setdefault("lookback", periods)  # the whole window
    try:
        allocation = Allocation(
            method=options.method,
            parameters=parameters,
            estimator=options.estimator,
            equity=options.equity,
            min_weight=options.min_weight,
            max_weight=options.max_weight,
            target_volatility=options.target_volatility,
            max_leverage=options.max_leverage,
        )
        optimizer = make_optimizer(allocation, names, found.periods_per_year)
    except ValidationError as exc:
        fail("the allocation options: " + "; ".join(error["msg"] for error in exc.errors()))
    except ValueError as exc:  # constraints the method cannot take
        fail(f"the allocation options: {exc}")
    try:
        result = optimizer.solve(matrix)
    except TooLarge as exc:  # what cannot be estimated, or would not fit in memory
        fail(f"{source}: {exc}")
    if isinstance(result, BadData):
        fail(f"{source}: {result.describe(names)}")
    if isinstance(result, Infeasible | SolverFailed):
        kind = "infeasible" if isinstance(result, Infeasible) else "solver failed"
        fail(f"no allocation: {kind}: {result.reason}", EXIT_ERROR)
    config = scale(
        list(names),
        result.weights,
        matrix,
        float(options.account_value),
        options.target_volatility,
        math.inf if options.max_leverage is None else options.max_leverage,
        found.periods_per_year,
    )
    first, last = (datetime.fromtimestamp(float(t), UTC).date().isoformat() for t in (stamps[0], stamps[-1]))
    return {
        "method": options.method,
        "status": result.status,
        "observations": periods,
        "frequency": found.describe(),
        "periods_per_year": found.periods_per_year,
        "first": first,
        "last": last,
        "portfolio_config": portfolio_config(config),
    }


async def _ask(url: NatsSettings, portfolio: str, timeout: float) -> object:
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
    stats_dir: Annotated[
        Path | None,
        typer.Option(
            "--stats-dir", help="Solve offline from DIR/<strategy>/stats.json (docs/strategies.md)."
        ),
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write portfolio_config.json (exactly its fields) here.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help=f"Offline: one of {', '.join(METHODS)}.")] = (
        DEFAULT_METHOD
    ),
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Offline: a method parameter NAME=NUMBER.")
    ] = None,
    account_value: Annotated[
        str | None, typer.Option("--account-value", help="Offline: the capital allocated.")
    ] = None,
    target_vol: Annotated[
        float,
        typer.Option(
            "--target-volatility", "--target-vol", help="Offline: annualised volatility target (0.30 is 30%)."
        ),
    ] = 0.10,
    max_leverage: Annotated[
        float | None, typer.Option("--max-leverage", help="Offline: the leverage cap (default: none).")
    ] = None,
    estimator: Annotated[
        str, typer.Option("--estimator", help="Offline: sample, ewma or ledoit_wolf.")
    ] = "ledoit_wolf",
    equity: Annotated[
        str, typer.Option("--equity", help="Offline, slope_std: the equity curve, compounded or additive.")
    ] = "compounded",
    window: Annotated[
        str, typer.Option("--window", help="Offline: the days of returns used, up to the latest common date.")
    ] = str(DEFAULT_WINDOW_DAYS),
    lookback: Annotated[
        str | None, typer.Option("--lookback", help="Offline: the last N common dates instead of --window.")
    ] = None,
    min_weight: Annotated[float, typer.Option("--min-weight", help="Offline: per strategy.")] = 0.0,
    max_weight: Annotated[float, typer.Option("--max-weight", help="Offline: per strategy.")] = 1.0,
    nats_url: NatsUrl = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the optimizer.")] = (
        OPTIMIZE_TIMEOUT_SECONDS
    ),
    as_json: AsJson = False,
) -> None:
    """The allocation across strategies and its volatility targeting (portfolio_config.json): offline
    from a returns file or a folder of strategies' stats.json, or from the running optimizer (which uses
    its configured method)."""
    import asyncio

    from rebal.events import OptimizationFailed, TargetWeightsComputed
    from rebal_allocation.volatility import PortfolioConfig, portfolio_config
    from rebal_cli.api import nats_settings as resolve_nats
    from rebal_cli.commands import NotRunning
    from rebal_cli.render import console as _console
    from rebal_cli.returns_file import ReturnsFileError, read_returns, read_stats_dir

    if export is not None and (export.is_dir() or not export.parent.is_dir()):
        fail(f"--export: {export} is a directory or its directory does not exist")
    if returns is not None and stats_dir is not None:
        fail("--returns and --stats-dir: give one source of returns")
    if returns is not None or stats_dir is not None:
        options = _offline_options(
            method,
            param or [],
            account_value,
            target_vol,
            max_leverage,
            estimator,
            equity,
            _whole("--window", window, 1),
            None if lookback is None else _whole("--lookback", lookback, 2),
        )
        options = Offline(**{**options.__dict__, "min_weight": min_weight, "max_weight": max_weight})
        skipped: tuple[str, ...] = ()
        try:
            if stats_dir is not None:
                folder = read_stats_dir(stats_dir)
                source, series, skipped = str(stats_dir), folder.returns, folder.skipped
            else:
                assert returns is not None
                source, series = str(returns), read_returns(returns)
        except ReturnsFileError as exc:
            fail(str(exc))
        outcome = _offline(source, series, options)
        if stats_dir is not None:
            outcome["skipped"] = list(skipped)
    else:
        if portfolio is None:
            fail("--portfolio: name the portfolio to ask the running optimizer about, or give --returns FILE")
        _token(portfolio, "--portfolio")
        try:
            answer = asyncio.run(_ask(resolve_nats(nats_url), portfolio, timeout))
        except NotRunning as exc:
            fail(str(exc), EXIT_NOT_RUNNING)
        if isinstance(answer, OptimizationFailed):
            fail(f"no allocation for {portfolio}: {answer.reason}", EXIT_ERROR)
        assert isinstance(answer, TargetWeightsComputed)
        found = answer.optimization
        if found is None:
            fail(f"the optimizer answered for {portfolio} without an allocation", EXIT_ERROR)
        config = PortfolioConfig(
            account_value=float(found.account_value),
            weights=dict(sorted(found.weights.items())),
            realised_volatility=math.nan if found.realised_volatility is None else found.realised_volatility,
            target_volatility=found.target_volatility,
            leverage=found.leverage,
        )
        outcome = {
            # Published as the portfolio's target: the next rebalance trades it (docs/cli.md).
            "published_target": str(answer.event_id),
            "method": found.method,
            "status": found.status,
            "observations": found.observations,
            "portfolio_config": portfolio_config(config),
        }
    document = outcome["portfolio_config"]
    if export is not None:
        export.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    if as_json:
        write_json(outcome)
        return
    _print_allocation(outcome, export)
    if portfolio is not None and returns is None:
        _console().print(
            f"published as {portfolio}'s new target ({outcome['published_target']}): the next rebalance"
            f" trades it; see what it would trade with: rebal plan --portfolio {portfolio}"
        )


def _whole(option: str, raw: str, least: int) -> int:
    """A whole number of at least `least` (30.7 is refused, not cut to 30)."""
    try:
        value = float(raw)
    except ValueError:
        fail(f"{option}: {raw!r} must be a whole number")
    if not math.isfinite(value) or value != int(value) or value < least:
        fail(f"{option}: {raw} must be a whole number of at least {least}")
    return int(value)


def _offline_options(
    method: str,
    param: list[str],
    account_value: str | None,
    target_vol: float,
    max_leverage: float | None,
    estimator: str,
    equity: str,
    window: int,
    lookback: int | None,
) -> Offline:
    """The offline options checked one by one (each refusal names its option)."""
    if account_value is None:
        fail("--account-value: needed to solve offline (the capital the weights apply to)")
    value = parse_decimal(account_value)
    if value is None or not value.is_finite() or value <= 0:
        fail(f"--account-value: {account_value!r} must be a decimal > 0")
    if method not in METHODS:
        fail(f"--method: {method!r} is not one of {', '.join(METHODS)}")
    if not math.isfinite(target_vol) or target_vol < 0:
        fail(f"--target-volatility: {target_vol} must be a finite number >= 0 (0.30 is 30%)")
    if target_vol > LARGEST_TARGET_VOLATILITY:
        fail(
            f"--target-volatility: {target_vol:g} is a fraction (0.30 is 30%); "
            f"did you mean {target_vol / 100:g}?"
        )
    if max_leverage is not None and not (math.isfinite(max_leverage) and max_leverage > 0):
        fail(f"--max-leverage: {max_leverage} must be a finite number > 0")
    if equity not in ("compounded", "additive"):
        fail(f"--equity: {equity!r} is not compounded or additive")
    return Offline(
        method=method,
        parameters=_parameters(param),
        account_value=value,
        target_volatility=target_vol,
        max_leverage=max_leverage,
        estimator=estimator,
        equity=equity,
        window_days=window,
        lookback=lookback,
        min_weight=0.0,
        max_weight=1.0,
    )


def _print_allocation(outcome: dict[str, object], export: Path | None) -> None:
    from rich.table import Table

    from rebal_cli.render import console as _console

    config = outcome["portfolio_config"]
    assert isinstance(config, dict)
    console = _console()
    where = f", {outcome['frequency']}" if "frequency" in outcome else ""
    title = f"{outcome['method']} ({outcome['status']}, {outcome['observations']} periods{where})"
    table = Table(title=title)
    table.add_column("strategy")
    table.add_column("weight", justify="right")
    table.add_column("with leverage", justify="right")
    leverage = float(config["leverage"])
    for name, weight in config["weights"].items():
        table.add_row(name, f"{weight * 100:.2f}%", f"{weight * leverage * 100:.2f}%")
    console.print(table)
    realised = config["ann_volatility_pct"]
    console.print(
        f"account value {config['account_value']:g}; annualised volatility "
        f"{'n/a' if realised is None else f'{realised:.2f}%'}, target "
        f"{config['target_vol_pct']:.2f}%: leverage {leverage:.4f}"
    )
    skipped = outcome.get("skipped")
    if skipped:
        assert isinstance(skipped, list)
        console.print(f"skipped (no stats.json): {', '.join(skipped)}")
    if export is not None:
        console.print(f"wrote {export}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.command()(backfill)
    app.command()(optimize)
