"""One plan renderer: a plan from files, the API's stored plan and the planner's event are shown alike,
with every order, transfer and skip (and its reason), never cutting a number."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

from rebal.core.diff import diff_trees
from rebal.core.display import money_text
from rebal.core.market import Markets, Prices
from rebal.core.plan import plan_rebalance
from rebal.core.tree import parse_tree
from rebal.events import RebalancePlanned, RunFinished, StartRebalance, new_event
from rebal.io import load
from rebal.render import plan_json
from rebal_cli import render
from rebal_cli.commands import Outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2024, 5, 1, tzinfo=UTC)


def shown(draw: Any, width: int = 200) -> str:
    out = Console(file=io.StringIO(), width=width, highlight=False, soft_wrap=True, color_system=None)
    draw(out)
    text = out.file.getvalue()
    assert isinstance(text, str)
    return text


def example_plan() -> dict[str, Any]:
    """`rebal plan`'s JSON for the examples: orders, a transfer and a skipped leg."""
    real = load(EXAMPLES / "real.json", lambda doc: parse_tree(doc, "real"))
    target = load(EXAMPLES / "target.json", lambda doc: parse_tree(doc, "target"))
    prices = load(EXAMPLES / "prices.json", Prices.parse)
    markets = load(EXAMPLES / "markets.json", Markets.parse)
    plan = plan_json(plan_rebalance(diff_trees(real, target, prices), markets))
    assert plan["orders"] and plan["transfers"] and plan["skipped"]
    return plan


def as_event(plan: dict[str, Any]) -> RebalancePlanned:
    """The same plan as the planner publishes it (transfers' ends are from_account/to_account)."""
    cause = new_event(StartRebalance, key="cause", now=NOW, portfolio_id="demo", dry_run=False)
    return cause.caused(
        RebalancePlanned,
        now=NOW,
        correlation_id=uuid.uuid5(uuid.NAMESPACE_URL, "run"),
        dry_run=False,
        band=Decimal(0),
        snapshot_id=uuid.uuid4(),
        target_id=uuid.uuid4(),
        total_value=Decimal("1000"),
        orders=plan["orders"],
        transfers=[
            {
                "asset": t["asset"],
                "from_account": t["from"],
                "to_account": t["to"],
                "amount": t["amount"],
                "est_value": t["est_value"],
            }
            for t in plan["transfers"]
        ],
        skipped=plan["skipped"],
    )


def tables(text: str) -> str:
    """The orders, transfers and skips of a rendered plan (what every way of showing it shares)."""
    return text[text.index("Orders (") :]


def test_a_plan_from_files_from_the_api_and_from_the_bus_show_the_same_tables() -> None:
    files = example_plan()
    event = as_event(files)
    stored = {**event.model_dump(mode="json"), "plan_id": "p1", "portfolio_id": "demo", "status": "stored"}
    from_files = shown(lambda out: render.print_plan({**files, "diff": None}, out=out))
    from_api = shown(lambda out: render.print_plan(stored, "plan p1", out))
    from_bus = shown(lambda out: render.print_outcome(Outcome(event_cause(event), event, None), out))
    assert tables(from_files) == tables(from_api) == tables(from_bus)
    for order in files["orders"]:
        quote = order["symbol"].split("/")[1]
        assert order["symbol"] in from_bus and order["amount"] in from_bus
        assert money_text(order["est_fee"], quote) in from_bus
    assert "E-" not in tables(from_bus)  # the event's JSON writes 8.33E-7; shown as 0.00000083


def test_money_is_shown_to_the_quote_precision_and_prices_keep_four_digits() -> None:
    """The issue's screenshot: est. cost 12576.954285892, est. fee 12.576954285892 for a BTC/USDT sell."""
    order = {
        "account": "demo/paper/spot",
        "exchange": "paper",
        "symbol": "BTC/USDT",
        "side": "sell",
        "amount": "0.21332",
        "est_price": "58958.1581",
        "est_cost": "12576.954285892",
        "est_fee": "12.576954285892",
        "phase": 1,
    }
    text = shown(lambda out: render.print_plan({"orders": [order], "skipped": []}, out=out))
    row = next(line for line in text.splitlines() if "BTC/USDT" in line)
    assert [cell.strip() for cell in row.split("│")[6:10]] == ["0.21332", "58958.16", "12576.95", "12.58"]


def event_cause(event: RebalancePlanned) -> StartRebalance:
    return new_event(StartRebalance, key="cause", now=NOW, portfolio_id=event.portfolio_id, dry_run=False)


def test_rebalance_shows_which_legs_were_skipped_and_why() -> None:
    """`rebal rebalance` said "1 skipped" and no more; the skipped leg and its reason are shown now."""
    event = as_event(example_plan())
    finished = event.caused(
        RunFinished,
        now=NOW,
        plan_id=event.event_id,
        status="completed",
        placed=6,
        filled=6,
        skipped=1,
        failed=0,
    )
    text = shown(lambda out: render.print_outcome(Outcome(event_cause(event), event, finished), out))
    skip = event.skipped[0]
    assert f"Skipped ({len(event.skipped)})" in text
    assert skip.path in text and skip.reason in text
    assert "completed: 6 placed, 6 filled, 1 skipped, 0 failed" in text


def test_a_stored_plan_shows_its_transfers() -> None:
    """The API's stored plan listed orders and skips but dropped its transfers."""
    stored = {**as_event(example_plan()).model_dump(mode="json"), "plan_id": "p1", "status": "stored"}
    text = shown(lambda out: render.print_plan(stored, out=out))
    transfer = stored["transfers"][0]
    assert "Transfers (1)" in text
    assert transfer["from_account"] in text and transfer["to_account"] in text
    # Its orders and transfers have `reason: null` (not a where-mode plan): no where-mode columns.
    assert stored["orders"][0]["reason"] is None and transfer["reason"] is None
    assert "None" not in text and "saving" not in text and "why" not in text


# The orders tables' column names: a header of several of them, a line each, is a stack of columns (their
# cells one over the other, a line each); any other header is one name, a line a word.
ORDER_COLUMNS = frozenset(
    {"phase", "account", "exchange", "symbol", "side", "amount", "est. price", "est. cost", "est. fee", "why"}
)


def column(text: str, name: str) -> list[str]:
    """The cells of one column of every orders table (stacked with others or not), each put together from
    the lines it was folded on."""
    cells: list[str] = []
    lines = text.splitlines()
    for start, title in enumerate(lines):
        if "Orders (" not in title:
            continue
        top = next(at for at in range(start, len(lines)) if lines[at].startswith("┏"))
        rule = next(at for at in range(top, len(lines)) if lines[at].startswith("┡"))
        rows = [[cell.strip() for cell in line.split("┃")] for line in lines[top + 1 : rule]]
        headers = [[word for word in words if word] for words in zip(*rows, strict=True)]
        stacks = [
            header if len(header) > 1 and set(header) <= ORDER_COLUMNS else [" ".join(header)]
            for header in headers
        ]
        index = next(at for at, stack in enumerate(stacks) if name in stack)
        row: list[str] = []
        for line in [*lines[rule + 1 :], ""]:
            parts = [cell.strip() for cell in line.split("│")]
            if row and (not line.startswith("│") or parts[1]):  # a row ends: its phase is on its first line
                filled = [part for part in row if part]
                cells.append(filled[stacks[index].index(name)] if len(stacks[index]) > 1 else "".join(row))
                row = []
            if not line.startswith("│"):
                break
            row.append(parts[index])
    return cells


def test_no_number_or_name_is_cut_at_80_columns() -> None:
    plan = example_plan()
    plan["orders"][0] = {**plan["orders"][0], "amount": "61182.41234567", "est_cost": "1234567890.12345678"}
    text = shown(lambda out: render.print_plan(plan, out=out), width=80)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    accounts = list(dict.fromkeys(order["account"] for order in plan["orders"]))
    by_account = [o for account in accounts for o in plan["orders"] if o["account"] == account]
    for account in accounts:  # below 100 columns, one table per account, the account in its title
        assert f"on {account}" in text
    assert column(text, "amount") == [order["amount"] for order in by_account]
    assert column(text, "symbol") == [order["symbol"] for order in by_account]
    assert column(text, "est. cost")[0] == "1234567890.12"
    assert "0.34696 (locked 0.1)" in text  # the diff tree's labels wrap, not cropped
    wide = shown(lambda out: render.print_plan(plan, out=out), width=140)
    assert max(len(line) for line in wide.splitlines()) <= 140 and "…" not in wide
    for order in plan["orders"]:
        assert order["account"] in wide and order["amount"] in wide


def test_text_from_a_venue_or_a_file_is_shown_as_written_not_as_markup() -> None:
    plan = example_plan()
    plan["skipped"][0] = {**plan["skipped"][0], "reason": "refused [bold]by the venue[/bold] [code -2010]"}
    text = shown(lambda out: render.print_plan(plan, out=out))
    assert "refused [bold]by the venue[/bold] [code -2010]" in text
    line = render.run_line("error", {"placed": 1}, ["venue said [red]no[/red]"])
    assert shown(lambda out: out.print(line)).strip() == (
        "error: 1 placed, 0 filled, 0 skipped, 0 failed (venue said [red]no[/red])"
    )


def test_a_plan_on_the_bus_shows_its_position_orders() -> None:
    """A futures account's plan (`rebal rebalance`, `rebal plan --portfolio`) counted and shown with its
    position orders and settings: it read "0 orders" with nothing else before."""
    order = {
        "account": "demo/paper/futures",
        "exchange": "paper",
        "symbol": "BTC/USDT:USDT",
        "side": "sell",
        "amount": "0.087",
        "reduce_only": True,
        "est_price": "60000",
        "est_notional": "5220",
        "est_fee": "2.61",
        "phase": 1,
    }
    setting = {"account": "demo/paper/futures", "exchange": "paper", "symbol": "BTC/USDT:USDT"}
    plan = {
        "orders": [],
        "skipped": [],
        "position_orders": [order],
        "position_settings": [{**setting, "leverage": 3, "margin_mode": None}],
    }
    assert render.plan_counts(plan) == "0 orders, 1 position orders, 0 skipped, 0 transfers"
    out = Console(width=160, record=True)
    render.print_plan(plan, out=out)
    text = out.export_text()
    assert "Position orders (1)" in text and "Position settings (1)" in text
    assert money_text("5220", "USDT") in text
    assert "3x" in text
