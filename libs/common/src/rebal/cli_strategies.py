"""Strategy commands (issue 5): `rebal backfill` and `rebal optimize`.

`backfill` publishes a strategy's return history (docs/bots.md, "Backfill files") on the bus, exactly
as its bot would report it: one `StrategyReturnReported` per period, its id derived from the strategy and
the timestamp, so running it again adds nothing (the bus drops the repeat within its duplicate window,
the tracker's table keeps one row per strategy and timestamp after it). The whole file is read and checked
first: a bad row is named by line and column (exit 2) and nothing is published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rebal import subjects
from rebal.cli_support import DEFAULT_NATS_URL, EXIT_NOT_RUNNING, fail, write_json
from rebal.events import StrategyReturnReported, new_event
from rebal.returns_file import ReturnsFileError, single_series

# Publishes in flight at once while backfilling (each waits for its JetStream acknowledgement).
BACKFILL_CONCURRENCY = 256

NatsUrl = Annotated[str, typer.Option("--nats-url", envvar="REBAL__NATS__URL", help="NATS server.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]


def _console(stderr: bool = False) -> Console:
    return Console(highlight=False, stderr=stderr, soft_wrap=True)


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
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from rebal.commands import NotRunning, connected

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
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar.")] = True,
    as_json: AsJson = False,
) -> None:
    """Publish a strategy's return history, as its bot would have; running it again adds nothing."""
    from rebal.commands import NotRunning

    _token(portfolio, "--portfolio")
    _token(strategy, "--strategy")
    try:
        series = single_series(file)
    except ReturnsFileError as exc:
        fail(str(exc))
    events = backfill_events(portfolio, strategy, series, datetime.now(UTC))
    try:
        stored, duplicates = asyncio.run(_publish_all(nats_url, events, progress and not as_json))
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


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.command()(backfill)
