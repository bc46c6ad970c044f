"""`rebal transfer list` and `rebal transfer confirm ID`: transfers to or from a bank account (no API) are
operators' tasks (docs/execution.md, "Bank transfers"). The run that needs one waits for its confirmation
before the buys the money funds; `confirm` says it arrived, and how much (`--received`, the planned amount
when left out), through the monitor's API (`POST /transfers/{id}/confirm` → `ConfirmTransfer`).

Exit codes: 0 confirmed (or confirmed before: said so, nothing credited twice), 1 refused (the task
expired) or not acknowledged by the executor yet, 2 an unknown task or a bad amount.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rebal.core.numbers import parse_decimal
from rebal_cli.ops import ApiUrl, AsJson
from rebal_cli.support import EXIT_ERROR, fail, write_json

transfer_app = typer.Typer(
    help="Operators' transfer tasks (bank accounts): list, confirm.", no_args_is_help=True
)


def list_tasks(
    all_states: Annotated[
        bool, typer.Option("--all", help="Every task, confirmed and expired too (default: waiting ones).")
    ] = False,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """The transfer tasks waiting for an operator (`--all`: every one), oldest first."""
    from rebal_cli.api import connect

    found = connect(api_url).get("/transfers", {"state": "all" if all_states else "waiting"})
    tasks: list[dict[str, Any]] = found["transfers"]
    if as_json:
        write_json(found)
        return
    from rebal_cli.render import console

    if not tasks:
        console().print("no transfer task is waiting" if not all_states else "no transfer task")
        return
    for task in tasks:
        console().print(_line(task), markup=False)


def _line(task: dict[str, Any]) -> str:
    what = f"{task['amount']} {task['asset']} from {task['from']} to {task['to']}"
    if task["state"] == "waiting":
        state = f"waiting until {task['expires_at']}"
    elif task["state"] == "confirmed":
        state = f"confirmed {task['received']} {task['asset']} at {task['confirmed_at']}"
        state += f" by {task['confirmed_by']}"
    else:
        state = f"expired: {task['reason']}"
    return f"{task['task_id']}  {task['portfolio_id']}  {what}  {state}"


def confirm(
    task_id: Annotated[str, typer.Argument(help="The task (`bt-…`) from `rebal transfer list`.")],
    received: Annotated[
        str | None,
        typer.Option(
            "--received", help="What arrived, in the transfer's asset (default: the planned amount)."
        ),
    ] = None,
    api_url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """The money of a transfer task arrived: the run's buys that waited for it go on."""
    from rebal_cli.api import connect

    body: dict[str, str] = {}
    if received is not None:
        amount = parse_decimal(received)
        if amount is None or amount < 0:
            fail(f"--received: {received!r} must be a decimal amount of at least 0")
        body["received"] = received.strip()
    answer = connect(api_url).post(f"/transfers/{task_id}/confirm", body or None)
    if as_json:
        write_json(answer)
    task = answer.get("task") or {}
    if answer.get("state") == "pending":
        if not as_json:
            fail(
                f"transfer task {task_id}: confirmation sent, not acknowledged by the executor yet",
                EXIT_ERROR,
            )
        raise typer.Exit(EXIT_ERROR)
    if as_json:
        return
    from rebal_cli.render import console

    if answer.get("already_confirmed"):
        console().print(
            f"transfer task {task_id} was already confirmed ({task.get('received')} {task.get('asset')} at "
            f"{task.get('confirmed_at')}): nothing changed",
            markup=False,
        )
    else:
        console().print(
            f"transfer task {task_id} confirmed: {answer.get('received')} {task.get('asset')} received; "
            "the buys that waited for it go on",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `rebal` app."""
    transfer_app.command("list")(list_tasks)
    transfer_app.command("confirm")(confirm)
    app.add_typer(transfer_app, name="transfer")
