"""Operator commands (issue 7): approve, apply, status, history, halt, resume, export, config, doctor.

They talk to the monitor's REST API (docs/api.md) over HTTP: ``--api-url`` (``REBAL__API__URL``, default
http://127.0.0.1:8105) and the operator's token (``REBAL__API__TOKEN`` or ``REBAL__API__TOKEN_FILE``).
``config`` and ``doctor`` read the typed configuration (``rebal.settings``) and the infrastructure
directly. Exit codes (`rebal_cli.support`): 0 ok, 1 error (a refused approval, a failed run, a failed
doctor check), 2 bad input or not found, 3 not running, 4 configuration error. Read commands take
``--json``; progress goes to stderr, so stdout stays the data.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rebal_cli import config as cli_config
from rebal_cli import context as cli_context
from rebal_cli.support import DEFAULT_API_URL, EXIT_ERROR, band_option, fail, write_json

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from rebal_cli.api import Api

# A run is followed until it has finished, at most this long by default.
RUN_TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.5
# The run statuses that mean it went wrong (the others that end a run are successes).
FAILED_RUN_STATUSES = frozenset({"error", "cancelled", "plan_failed", "failed", "halted"})

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="REBAL__API__URL",
        help=f"The monitor's REST API (default: api.url of REBAL_CONFIG, else {DEFAULT_API_URL}).",
    ),
]
PortfolioOpt = Annotated[
    str | None, typer.Option("--portfolio", help="The portfolio (default: the API's first configured one).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _band(raw: str | None) -> str | None:
    return None if raw is None else str(band_option(raw))


# -- plans ----------------------------------------------------------------------------------------


def _plan_header(plan: dict[str, Any]) -> str:
    from rebal_cli.render import percent, plan_counts, valuation_quote, value_text

    inputs = plan.get("inputs") or {}
    total = inputs.get("total_value")
    value = "?" if total is None else value_text(total, valuation_quote(plan))
    return (
        f"plan [bold]{plan['plan_id']}[/] for {plan['portfolio_id']} ({plan['status']}): "
        f"{plan_counts(plan)}; portfolio value {value}, band {percent(plan.get('band'))}, "
        f"expires {when(plan.get('expires_at'))}"
    )


def preview(api_url: str | None, portfolio: str | None, band: str | None, as_json: bool) -> None:
    """`rebal plan --portfolio P`: a dry-run plan made by the running system, stored for `rebal approve`."""
    from rebal_cli.api import connect
    from rebal_cli.render import console, print_plan

    plan = connect(api_url).post(
        "/portfolio/rebalance", {"portfolio_id": portfolio, "dry_run": True, "band": _band(band)}
    )
    if as_json:
        write_json(plan)
        return
    print_plan(plan, _plan_header(plan))
    console().print(f"approve it with: rebal approve {plan['plan_id']}")


def _find_run(api: Api, portfolio: str | None, run_id: str) -> dict[str, Any] | None:
    page = api.get("/portfolio/history", {"portfolio_id": portfolio, "limit": 50})
    return next((run for run in page["runs"] if run["run_id"] == run_id), None)


def follow_run(api: Api, plan: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Wait for the approved plan's run to finish, with a progress bar of its orders (on stderr)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from rebal_cli.render import console

    run_id = plan.get("approval_run_id") or plan["run_id"]
    total = len(plan["orders"])
    deadline = time.monotonic() + timeout
    run: dict[str, Any] | None = None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"run {run_id}: waiting", total=total or None)
        while time.monotonic() < deadline:
            run = _find_run(api, plan["portfolio_id"], run_id)
            if run is not None:
                counts = run.get("counts") or {}
                done = int(counts.get("filled", 0)) + int(counts.get("failed", 0))
                progress.update(task, completed=done, description=f"run {run_id}: {run['status']}")
                if run.get("finished_at"):
                    return run
            time.sleep(POLL_SECONDS)
    return run


def _report_run(run: dict[str, Any] | None, timeout: float, as_json: bool, plan: dict[str, Any]) -> None:
    from rebal_cli.render import console, run_line

    if as_json:
        write_json({"plan": plan, "run": run})
    if run is None or not run.get("finished_at"):
        status = run["status"] if run else "not started"
        fail(f"the run of plan {plan['plan_id']} has not finished after {timeout:g} s ({status})", EXIT_ERROR)
    counts = run.get("counts") or {}
    if not as_json:
        console().print(f"run {run['run_id']}: {run_line(run['status'], counts, skip_lines(run))}")
    if run["status"] in FAILED_RUN_STATUSES:
        raise typer.Exit(EXIT_ERROR)


def approve(
    plan_id: Annotated[str, typer.Argument(help="The plan to execute (from `rebal plan --portfolio`).")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run until it finishes.")] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to follow the run.")
    ] = RUN_TIMEOUT_SECONDS,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Execute exactly a stored plan; refused (exit 1) when it expired or prices or balances moved."""
    from rebal_cli.api import connect

    api = connect(api_url)
    plan = api.post(f"/portfolio/plans/{plan_id}/approve")
    _after_approval(api, plan, wait, timeout, as_json)


def _after_approval(api: Api, plan: dict[str, Any], wait: bool, timeout: float, as_json: bool) -> None:
    from rebal_cli.render import console

    if not wait:
        if as_json:
            write_json({"plan": plan, "run": None})
        else:
            console().print(f"plan {plan['plan_id']} approved: run {plan.get('approval_run_id')}")
        return
    if not as_json:
        console().print(f"plan {plan['plan_id']} approved: run {plan.get('approval_run_id')}")
    _report_run(follow_run(api, plan, timeout), timeout, as_json, plan)


def apply(
    portfolio: PortfolioOpt = None,
    band: Annotated[str | None, typer.Option("--band", help="Relative drift band (default: 0).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run until it finishes.")] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to follow the run.")
    ] = RUN_TIMEOUT_SECONDS,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Plan and approve at once: a fresh plan, executed as made (nothing to trade: nothing is sent)."""
    from rebal_cli.api import connect
    from rebal_cli.render import console, print_plan

    api = connect(api_url)
    plan = api.post("/portfolio/rebalance", {"portfolio_id": portfolio, "dry_run": True, "band": _band(band)})
    if not as_json:
        print_plan(plan, _plan_header(plan))
    if not plan["orders"] and not plan["transfers"]:
        if as_json:
            write_json({"plan": plan, "run": None})
        else:
            console().print("nothing to trade: the portfolio is within the band; nothing approved")
        return
    approved = api.post(f"/portfolio/plans/{plan['plan_id']}/approve")
    _after_approval(api, approved, wait, timeout, as_json)


# -- status, history, kill switch -------------------------------------------------------------------


def when(iso: str | None) -> str:
    """A time from the API (ISO 8601, UTC) as operators read it: ``2026-12-06 23:50:30 UTC``."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_summary(run: dict[str, Any]) -> str:
    """A run's status and counts on one line (its id goes on a line of its own: never broken)."""
    counts = run.get("counts") or {}
    kind = " (dry-run)" if run.get("dry_run") and run["status"] != "preview" else ""
    tally = ", ".join(f"{counts.get(key, 0)} {key}" for key in ("orders", "filled", "skipped", "failed"))
    return f"{run['status']}{kind}, planned {when(run.get('planned_at'))}: {tally}"


def skip_lines(run: dict[str, Any]) -> list[str]:
    """Every skip of a run with its reason: the plan's (which leg) and the executor's reasons."""
    from rebal_cli.render import number

    lines = [
        f"skipped {skip['side']} {number(skip['amount'])} {skip['symbol']} at {skip['path']}: "
        + skip["reason"]
        for skip in run.get("skips") or ()
    ]
    listed = {skip["reason"] for skip in run.get("skips") or ()}
    return lines + [reason for reason in run.get("reasons") or () if reason not in listed]


def with_restarts(status: dict[str, Any]) -> dict[str, Any]:
    """The status with the dev stack's restarts of each child (`make run`'s supervisor, found through the
    client context's ``[devstack] supervisor`` file), when there is one running."""
    try:
        found = cli_context.current()
    except cli_context.ContextError:
        return status
    named = None if found is None else found.devstack.get("supervisor")
    if named is None:
        return status
    try:
        document = json.loads(Path(named).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return status  # the stack is not running (the supervisor removes its file when it stops)
    children = document.get("children") if isinstance(document, dict) else None
    return {**status, "supervisor": children} if isinstance(children, dict) else status


def restarts_text(children: dict[str, Any]) -> str:
    """ "executor 3 (last exit code 1 at 12:00:00)", restarted children first; "none" when none was."""
    restarted = sorted(
        (name for name, child in children.items() if child.get("restarts")),
        key=lambda n: (-children[n]["restarts"], n),
    )
    if not restarted:
        return "none"
    parts = []
    for name in restarted:
        child = children[name]
        code = child.get("last_exit_code")
        exit_text = "stopped" if code is None else f"last exit code {code}"
        state = ", restarting now" if child.get("state") == "restarting" else ""
        parts.append(
            f"{name} {child['restarts']} ({exit_text} at {when(child.get('last_restart_at'))}{state})"
        )
    return "; ".join(parts)


def _status_view(status: dict[str, Any]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Rebal: {status['portfolio_id']}", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    halted = status.get("halted")
    reason = escape(status.get("halt_reason") or "no reason")
    pending = (
        ""
        if status.get("halt_state") in (None, "in_force")
        else " [bold]- NOT acknowledged by the executor yet[/]"
    )
    state = f"[red]HALTED[/] ({reason}, since {when(status.get('halted_at'))}){pending}"
    table.add_row("trading", state if halted else "[green]running[/]")
    table.add_row("mode", str(status.get("mode")))
    table.add_row("nats", str(status.get("nats")))
    table.add_row("postgres", str(status.get("postgres")))
    for name, state in (status.get("services") or {}).items():
        table.add_row(name, "[green]ok[/]" if state == "ok" else f"[red]{escape(state)}[/]")
    if "supervisor" in status:
        table.add_row("restarts (make run)", escape(restarts_text(status["supervisor"])))
    if status.get("transfers_waiting"):
        table.add_row(
            "bank transfers",
            f"[bold]{status['transfers_waiting']} waiting for an operator[/] (rebal transfer list)",
        )
    table.add_row("latest snapshot", when(status.get("snapshot_at")))
    table.add_row("latest target", when(status.get("target_at")))
    for label, key in (("last run", "last_run"), ("last preview", "last_preview")):
        run = status.get(key)
        if run:
            details = [run["run_id"], run_summary(run), *skip_lines(run)]
            table.add_row(label, escape("\n".join(details)))
        else:
            table.add_row(label, "none yet")
    return table


def status(
    portfolio: PortfolioOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes (--watch).")] = 2.0,
    count: Annotated[
        int | None, typer.Option("--count", help="With --watch: stop after this many refreshes.")
    ] = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Halted or trading, live or dry-run, the last run, the latest snapshot and target (--watch: live)."""
    from rich.console import Group
    from rich.live import Live

    from rebal_cli.api import connect
    from rebal_cli.render import console

    if not interval > 0:
        fail(f"--interval: {interval} must be a number of seconds > 0")
    if count is not None and count < 1:
        fail(f"--count: {count} must be >= 1")
    api = connect(api_url)
    params = {"portfolio_id": portfolio}
    if not watch:
        current = with_restarts(api.get("/status", params))
        write_json(current) if as_json else console().print(_status_view(current))
        return
    shown = 0
    try:
        if as_json:  # one JSON document per line and refresh
            while count is None or shown < count:
                console().print_json(data=with_restarts(api.get("/status", params)), indent=None)
                shown += 1
                if count is None or shown < count:
                    time.sleep(interval)
            return
        with Live(console=console(), auto_refresh=False) as live:
            while count is None or shown < count:
                current = with_restarts(api.get("/status", params))
                stamp = f"[dim]{time.strftime('%H:%M:%S')}, every {interval:g} s; Ctrl-C stops[/]"
                live.update(Group(_status_view(current), stamp), refresh=True)
                shown += 1
                if count is None or shown < count:
                    time.sleep(interval)
    except KeyboardInterrupt:
        return


def history(
    portfolio: PortfolioOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Runs per page (1-500).")] = 20,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next page (from a previous page).")
    ] = None,
    previews: Annotated[
        bool,
        typer.Option(
            "--previews/--no-previews",
            help="Include dry-run previews (the planner previews every new snapshot: off by default).",
        ),
    ] = False,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Past runs, newest first: status, orders, fills, skips and their reasons."""
    from rebal_cli.api import connect
    from rebal_cli.render import console as make_console

    if not 1 <= limit <= 500:
        fail(f"--limit: {limit} must be between 1 and 500")
    page = connect(api_url).get(
        "/portfolio/history",
        {
            "portfolio_id": portfolio,
            "limit": limit,
            "cursor": cursor,
            "include_previews": str(previews).lower(),
        },
    )
    if as_json:
        write_json(page)
        return
    out = make_console()
    out.print(history_view(page["runs"]), soft_wrap=False)
    if page.get("next_cursor"):
        out.print(f"more: rebal history --cursor {page['next_cursor']}")


def history_view(runs: list[dict[str, Any]]) -> Text:
    """The runs, newest first: each id whole on a line of its own (a table column cut or folded them),
    then its status and counts, then every skip with its reason; it wraps at any width."""
    from rich.text import Text

    lines = [f"Runs ({len(runs)})"]
    for run in runs:
        lines += ["", run["run_id"], f"  {run_summary(run)}", *(f"  {line}" for line in skip_lines(run))]
    return Text("\n".join(lines), overflow="fold")


def halt(
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the halt).")] = "halted by operator",
    portfolio: PortfolioOpt = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """The kill switch: cancel open orders and refuse new runs until `rebal resume`."""
    from rebal_cli.api import connect
    from rebal_cli.render import console

    if not reason.strip():
        fail("--reason: give a reason (it is shown with the halt)")
    sent = connect(api_url).post("/halt", {"portfolio_id": portfolio, "reason": reason})
    state = sent.get("halt_state", "pending")
    if as_json:
        write_json(sent)
    elif state == "in_force":
        console().print(f"halt in force for {sent['portfolio_id']} (the executor acknowledged it)")
    else:
        console().print(f"halt sent for {sent['portfolio_id']}: {sent['command_id']}")
    if state != "in_force":
        why = "a newer resume was recorded first" if state == "superseded" else "is the executor running?"
        fail(
            f"the halt of {sent['portfolio_id']} is NOT in force ({state}): {why} (see `rebal status`)",
            EXIT_ERROR,
        )


def resume(
    portfolio: PortfolioOpt = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Lift a halt: runs are accepted again."""
    from rebal_cli.api import connect
    from rebal_cli.render import console

    sent = connect(api_url).post("/resume", {"portfolio_id": portfolio})
    write_json(sent) if as_json else console().print(
        f"resume sent for {sent['portfolio_id']}: {sent['command_id']}"
    )


# -- exports -------------------------------------------------------------------------------------


EXPORT_KINDS = ("trades", "plans")
EXPORT_FORMATS = ("csv", "json")


def export(
    kind: Annotated[str, typer.Argument(help="trades (every fill) or plans (every stored plan).")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    portfolio: PortfolioOpt = None,
    api_url: ApiUrl = None,
) -> None:
    """Every trade or plan as CSV or JSON, streamed (a progress bar on stderr when writing a file)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from rebal_cli.api import connect
    from rebal_cli.render import console

    if kind not in EXPORT_KINDS:
        fail(f"export: {kind!r} is not one of {', '.join(EXPORT_KINDS)}")
    if fmt not in EXPORT_FORMATS:
        fail(f"--format: {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        fail(f"--output: {output} is a directory or its directory does not exist")
    api = connect(api_url)
    params = {"format": fmt, "portfolio_id": portfolio}
    with api.stream(f"/export/{kind}", params) as response:
        if output is None:
            out = typer.get_binary_stream("stdout")
            for chunk in response.iter_bytes():
                out.write(chunk)
            out.flush()
            return
        partial = output.with_name(f".{output.name}.partial")
        length = response.headers.get("content-length")
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
        try:
            with partial.open("wb") as out, Progress(*columns, console=console(stderr=True)) as progress:
                task = progress.add_task(f"{kind} → {output}", total=int(length) if length else None)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    progress.advance(task, len(chunk))
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    console(stderr=True).print(f"wrote {output} ({output.stat().st_size} bytes)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    app.command()(approve)
    app.command()(apply)
    app.command()(status)
    app.command()(history)
    app.command()(halt)
    app.command()(resume)
    app.command()(export)
    app.add_typer(cli_config.config_app, name="config")
    app.command()(cli_config.doctor)


__all__ = ["preview", "register"]
