"""How `rebal` shows a plan and a run's outcome: one renderer, wherever the plan comes from.

A plan reaches the operator three ways: `rebal plan` makes it from files (its JSON, docs/formats.md),
`rebal plan --portfolio`/`apply` get the API's stored plan, and `rebal rebalance` (and `make run`'s first
rebalance) receive the planner's `RebalancePlanned` event. All three carry the same orders and skips
(`rebal.events.PlannedOrder`, `SkippedOrder`: the file format uses the same names) and the same
transfers, whose ends are ``from``/``to`` in the file format and ``from_account``/``to_account`` on the
bus and in the API. They are shown alike: the orders, the transfers, every skip with its reason; the
diff tree when the plan has one (from files) and the projected weights when it has them (stored plans).

Numbers are shown as operators read them (`rebal.core.display`): order amounts exactly (whole steps of
the market), prices, costs and fees to the quote's precision, weights to two decimals of a percent; never
in exponent form (the bus's JSON may write ``8.3E-7``). Nothing is cut to fit the terminal, and a number
is never broken across lines: a table takes the first of its layouts in which every number keeps its
width, the text columns (names, paths, a where-mode plan's reason) folding onto more lines. The orders:
all in one table (from `WIDE_COLUMNS`), then one table per account (the account as the table's title)
whose where-mode reason, saving and awaited transfer share one column (`WHY`), then the same with the
numbers stacked two to a column (amount over price, cost over fee), then all four in one; the
transfers and futures orders alike. Only when even the last cannot fit (below some 60 columns) are numbers
folded, never cropped; ids are never broken or shortened.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text
from rich.tree import Tree as RichTree

from rebal.core.display import money_text, percent_text, price_text
from rebal.core.numbers import dec_str

if TYPE_CHECKING:
    from rebal_cli.commands import Outcome

JsonDict = dict[str, Any]
OPERATION_STYLE = {"buy": "green", "sell": "red", "hold": "dim"}
# Columns of short tokens, never broken.
UNBROKEN = frozenset({"phase", "side", "symbol"})
# Columns of numbers: never broken across lines (a number read as `0.999` over `8` is misread); their
# headers take a line per word instead, so that a column is as wide as its numbers.
NUMBERS = frozenset(
    {
        "#",
        "phase",
        "amount",
        "est. price",
        "est. cost",
        "est. fee",
        "est. notional",
        "est. saving",
        "after transfer",
        "est. value",
        "fee",
        "fees",
        "spread",
        "withdrawal fees",
        "total",
        "now",
        "after",
    }
)
# Below this width the orders leave out their exchange (the account's path names it) so that the rest fits,
# and a where-mode plan's reason, saving and awaited transfer share one column (`WHY`).
WIDE_COLUMNS = 100
WHERE_COLUMNS = ("reason", "est. saving", "after transfer")
WHY = "why"


def console(stderr: bool = False) -> Console:
    return Console(highlight=False, stderr=stderr, soft_wrap=True)


def plan_counts(plan: Mapping[str, Any]) -> str:
    """ "3 orders, 1 skipped, 0 transfers": the plan's size, for a header line (with its position orders
    when it has any)."""
    positions = len(plan.get("position_orders") or ())
    return (
        f"{len(plan['orders'])} orders, "
        + (f"{positions} position orders, " if positions else "")
        + f"{len(plan['skipped'])} skipped, {len(plan.get('transfers') or ())} transfers"
    )


def print_plan(plan: Mapping[str, Any], header: str | None = None, out: Console | None = None) -> None:
    """The header (when given), then the plan's sections (`plan_sections`), wrapped to the terminal."""
    out = out or console()
    if header is not None:
        out.print(header)
    for section in plan_sections(plan, out.width):
        out.print(_fitted(section, out.width) if isinstance(section, Table) else section, soft_wrap=False)


# The fewest characters a folding column (a name, a reason) is given when deciding whether numbers fit.
FOLDED_MIN = 4
# Columns shown in one column, a line each (an order's amount over its price): a table's layout is the
# stack of each of its columns, in order.
Stack = tuple[str, ...]


# A number inside a folding column's text (a where-mode leg's saving, `after #0`): kept whole too.
NUMBER_WORD = re.compile(r"[-+#]?\d[\d.,]*%?")


def _fits(table: Table, width: int) -> bool:
    """Whether `table` fits `width` with its numbers and short tokens unbroken. Each column takes 3 for
    its padding and border (and the table 1); rich narrows the folding columns (names, reasons) widest
    first, as water levels out: each must keep `FOLDED_MIN` and its longest number."""
    budget = width - 1 - 3 * len(table.columns)
    folding: list[tuple[int, int]] = []  # (natural width, the least it may be given)
    for column in table.columns:
        lines = list(_lines(column))
        natural = max(map(cell_len, lines))
        if column.no_wrap:
            budget -= natural
            continue
        numbers = [cell_len(word) for line in lines for word in line.split() if NUMBER_WORD.fullmatch(word)]
        folding.append((natural, min(natural, max([FOLDED_MIN, *numbers]))))
    if sum(natural for natural, _ in folding) <= budget:
        return True
    if not folding:
        return False
    level = max(least for _, least in folding)  # the folding columns, none below what it must keep
    return sum(min(natural, level) for natural, _ in folding) <= budget


def _fitted(table: Table, width: int) -> Table:
    """The table, its numbers let fold after all when even unbroken they cannot fit in `width` (every
    layout tried): rich would otherwise crop every column, losing digits; a folded number is still
    there to read."""
    if not _fits(table, width):
        for column in table.columns:
            column.no_wrap = column.no_wrap and str(column.header) in UNBROKEN
    return table


def _first_fitting(layouts: Iterable[Callable[[], list[Table]]], width: int) -> list[Table]:
    """The tables of the first layout whose every table fits `width` with its numbers unbroken; else
    the last layout's (its numbers folded when printed, `_fitted`)."""
    tables: list[Table] = []
    for layout in layouts:
        tables = layout()
        if all(_fits(table, width) for table in tables):
            break
    return tables


def _stacks(columns: Sequence[str], *groups: Stack) -> list[Stack]:
    """`columns` as stacks: each group's columns (those of `columns`) shown in one, where its first is."""
    stacks: list[Stack] = []
    for name in columns:
        group = next((tuple(n for n in g if n in columns) for g in groups if name in g), (name,))
        if group[0] == name:
            stacks.append(group)
    return stacks


def _lines(column: Column) -> Iterable[str]:
    """The header and cells of a column as shown, line by line (markup removed)."""
    for cell in (column.header, *column.cells):
        yield from Text.from_markup(str(cell)).plain.splitlines() or [""]


def valuation_quote(plan: Mapping[str, Any]) -> str | None:
    """The currency a plan's values are in: its prices' quote (a stored plan), else the quote every order
    shares (a plan on the bus); None when unknown."""
    prices = (plan.get("inputs") or {}).get("prices") or plan.get("prices")
    if isinstance(prices, Mapping) and isinstance(prices.get("quote"), str):
        return str(prices["quote"])
    quotes = {_quote(order["symbol"]) for order in plan.get("orders") or ()}
    return quotes.pop() if len(quotes) == 1 else None


def _quote(symbol: str) -> str | None:
    _base, slash, quote = symbol.partition("/")
    return quote if slash else None


def value_text(value: Any, quote: str | None) -> str:
    """A value in the valuation currency: to its precision when it is known, else exact."""
    return money_text(str(value), quote) if quote is not None else number(value)


def print_outcome(outcome: Outcome, out: Console | None = None) -> None:
    """A rebalance command's outcome: the command sent, or why there is no plan, or the plan (header and
    sections) and, for a live run, how it ended."""
    out = out or console()
    plan, finished = outcome.plan, outcome.finished
    if plan is None:
        out.print(f"sent rebalance command {outcome.command.event_id} for {outcome.command.portfolio_id}")
        return
    from rebal.events import PlanFailed

    if isinstance(plan, PlanFailed):
        out.print(f"[red]no plan[/] for run {plan.correlation_id}: {escape(plan.reason)}")
        return
    kind = "dry-run plan" if plan.dry_run else "plan"
    shown = plan.model_dump(mode="json")
    counted = plan_counts(shown)
    value = value_text(plan.total_value, valuation_quote(shown))
    header = f"run {plan.correlation_id}: {kind} with {counted} (portfolio value {value})"
    print_plan(shown, header, out)
    if finished is not None:
        out.print(run_line(finished.status, finished.model_dump(), finished.reasons))


def plan_sections(plan: Mapping[str, Any], width: int = WIDE_COLUMNS) -> list[RenderableType]:
    """The diff tree (a plan from files), the orders, the transfers, the skips with their reasons and the
    projected weights (a stored plan); empty sections are left out, except the orders."""
    sections: list[RenderableType] = []
    quote = valuation_quote(plan)
    if plan.get("diff"):
        sections.append(diff_tree(plan["diff"]))
    sections.extend(_orders(plan["orders"], width, quote))
    if plan.get("transfers"):
        sections.extend(_transfers(plan["transfers"], quote, width))
    if plan.get("position_orders") or plan.get("position_settings"):
        sections.extend(_position_orders(plan.get("position_orders") or (), width))
    if plan.get("position_settings"):
        sections.append(_position_settings(plan["position_settings"]))
    if plan["skipped"]:
        sections.append(_skipped(plan["skipped"]))
    if plan.get("projected_weights"):
        sections.append(_projected(plan["projected_weights"]))
    if plan.get("costs"):
        sections.extend(_costs(plan["costs"], quote, width))
    return sections


def _costs(costs: Mapping[str, Any], quote: str | None, width: int = WIDE_COLUMNS) -> list[Table]:
    """A where-mode plan's estimated costs (valuation currency; spreads against the reference prices),
    two to a column when they do not fit side by side."""
    columns = ("fees", "spread", "withdrawal fees", "total")
    parts = [value_text(costs[key], quote) for key in ("fees", "spread", "withdrawal_fees")]
    # The total of the parts as shown (each rounded alone, their total might otherwise differ by a cent).
    total = value_text(sum(map(Decimal, parts)), quote) if quote is not None else number(costs["total"])
    cells = dict(zip(columns, (*parts, total), strict=True))

    def layout(*groups: Stack) -> list[Table]:
        stacks = _stacks(columns, *groups)
        table = _table("Estimated costs", stacks, right=("total",))
        table.add_row(*_stacked_cells(cells, stacks))
        return [table]

    return _first_fitting(
        (layout, partial(layout, columns[:2], columns[2:]), partial(layout, columns)), width
    )


def _table(title: str, columns: Sequence[str | Stack], right: Iterable[str] = ()) -> Table:
    """Names and reasons fold onto more lines when the terminal is narrow; numbers and short tokens never
    break (a number's header takes a line per word). A stack of columns is one column headed by their
    names, a line each (its cells `_stacked_cells`)."""
    table = Table(title=title)
    aligned = set(right)
    for column in columns:
        stack = (column,) if isinstance(column, str) else column
        name = stack[0]
        table.add_column(
            (name.replace(" ", "\n") if name in NUMBERS else name) if len(stack) == 1 else "\n".join(stack),
            justify="right" if name in aligned else "left",
            overflow="fold",
            no_wrap=any(part in UNBROKEN or part in NUMBERS for part in stack),
        )
    return table


def _stacked_cells(cells: Mapping[str, str], stacks: Sequence[Stack]) -> list[str]:
    """A row's cells (by column) in `stacks`: a stack's cells one over the other."""
    return ["\n".join(cells[name] for name in stack) for stack in stacks]


def _side(side: str) -> str:
    return f"[{OPERATION_STYLE.get(side, 'dim')}]{side}[/]"


# The orders' (and futures orders') numbers, stacked two to a column, then all in one, when they do not fit
# side by side.
MONEY = ("amount", "est. price", "est. cost", "est. fee")
PAIRED: tuple[tuple[Stack, ...], ...] = ((), (MONEY[:2], MONEY[2:]), (MONEY,))


def _orders(orders: Sequence[Mapping[str, Any]], width: int, valuation: str | None = None) -> list[Table]:
    """One table of every order (from `WIDE_COLUMNS`, when its numbers fit), else one per account (titled
    with the account, a where-mode plan's notes in one column), its numbers stacked when they do not fit
    side by side (`_first_fitting`)."""
    where = bool(orders) and orders[0].get("reason") is not None  # a where-mode plan says why and saves
    right = ("phase", *MONEY, *WHERE_COLUMNS)
    layouts: list[Callable[[], list[Table]]] = []
    if width >= WIDE_COLUMNS or not orders:
        names = ("phase", "account", "exchange", "symbol", "side", *MONEY, *(WHERE_COLUMNS if where else ()))

        def wide() -> list[Table]:
            table = _table(f"Orders ({len(orders)})", names, right=right)
            for order in orders:
                table.add_row(*_stacked_cells(_order_cells(order, valuation), _stacks(names)))
            return [table]

        layouts.append(wide)
    if orders:
        accounts: dict[str, list[Mapping[str, Any]]] = {}
        for order in orders:
            accounts.setdefault(order["account"], []).append(order)

        def per_account(*groups: Stack) -> list[Table]:
            stacks = _stacks(("phase", "symbol", "side", *MONEY, *((WHY,) if where else ())), *groups)
            tables = []
            for account, held in accounts.items():
                title = f"Orders ({len(orders)})" + ("" if len(accounts) == 1 else f": {len(held)}")
                table = _table(f"{title} on {escape(account)}", stacks, right=right)
                for order in held:
                    table.add_row(*_stacked_cells(_order_cells(order, valuation), stacks))
                tables.append(table)
            return tables

        layouts.extend(partial(per_account, *groups) for groups in PAIRED)
    return _first_fitting(layouts, width)


def _position_orders(orders: Sequence[Mapping[str, Any]], width: int = WIDE_COLUMNS) -> list[Table]:
    """The futures accounts' orders: reduce-only ones (phase 1) before the ones that open or increase;
    their numbers stacked as the orders' when they do not fit side by side."""
    money = ("amount", "est. price", "est. notional", "est. fee")
    names = ("phase", "account", "symbol", "side", "reduce-only", *money)
    rows = []
    for order in orders:
        quote = _perpetual_quote(order["symbol"])
        rows.append(
            {
                "phase": str(order["phase"]),
                "account": escape(order["account"]),
                "symbol": escape(order["symbol"]),
                "side": _side(order["side"]),
                "reduce-only": "yes" if order["reduce_only"] else "no",
                "amount": number(order["amount"]),
                "est. price": price_text(str(order["est_price"]), quote),
                "est. notional": money_text(str(order["est_notional"]), quote),
                "est. fee": money_text(str(order["est_fee"]), quote),
            }
        )

    def layout(*groups: Stack) -> list[Table]:
        stacks = _stacks(names, *groups)
        table = _table(f"Position orders ({len(orders)})", stacks, right=("phase", *money))
        for row in rows:
            table.add_row(*_stacked_cells(row, stacks))
        return [table]

    return _first_fitting(
        (partial(layout, *groups) for groups in ((), (money[:2], money[2:]), (money,))), width
    )


def _position_settings(settings: Sequence[Mapping[str, Any]]) -> Table:
    """What is set on each symbol before its opening order (blank: left as it is)."""
    table = _table(f"Position settings ({len(settings)})", ("account", "symbol", "leverage", "margin mode"))
    for setting in settings:
        leverage, mode = setting.get("leverage"), setting.get("margin_mode")
        table.add_row(
            escape(setting["account"]),
            escape(setting["symbol"]),
            "" if leverage is None else f"{leverage}x",
            "" if mode is None else str(mode),
        )
    return table


def _perpetual_quote(symbol: str) -> str | None:
    """``BTC/USDT:USDT`` -> USDT (a perpetual's quote, which it settles in)."""
    return _quote(symbol.partition(":")[0])


def _order_cells(order: Mapping[str, Any], valuation: str | None = None) -> dict[str, str]:
    """An order's cells by column; a where-mode order's notes both apart (`WHERE_COLUMNS`) and in one
    (`WHY`)."""
    quote = _quote(order["symbol"])
    cells = {
        "phase": str(order["phase"]),
        "account": escape(order["account"]),
        "exchange": escape(order["exchange"]),
        "symbol": escape(order["symbol"]),
        "side": _side(order["side"]),
        "amount": number(order["amount"]),
        "est. price": price_text(str(order["est_price"]), quote),
        "est. cost": money_text(str(order["est_cost"]), quote),
        "est. fee": money_text(str(order["est_fee"]), quote),
    }
    if order.get("reason") is not None:
        after = order.get("after_transfer")
        saving = value_text(order["est_saving"], valuation)  # the valuation currency, to its precision
        cells["reason"] = escape(order["reason"])
        cells["est. saving"] = saving
        cells["after transfer"] = "" if after is None else str(after)
        cells[WHY] = _why(order["reason"], saving, after)
    return cells


def _why(reason: str, saving: str, after: int | None = None) -> str:
    """A where-mode leg's reason, saving and the transfer it waits for, in one cell of a line each (the
    narrow view: three columns more would break the numbers)."""
    lines = [escape(reason), f"saving {saving}"]
    return "\n".join(lines if after is None else [*lines, f"after #{after}"])


def _transfers(
    transfers: Sequence[Mapping[str, Any]], quote: str | None, width: int = WIDE_COLUMNS
) -> list[Table]:
    """The transfers: a where-mode plan's with their index, network, fee and notes (apart from
    `WIDE_COLUMNS` when the numbers fit so, else in one column); their amount and value stacked (then
    the fee too) when the numbers do not fit side by side."""
    noted = transfers[0].get("reason") is not None
    rows = []
    for index, transfer in enumerate(transfers):
        source = transfer.get("from", transfer.get("from_account"))
        destination = transfer.get("to", transfer.get("to_account"))
        cells = {
            "#": str(index),
            "asset": escape(transfer["asset"]),
            "from": escape(source),
            "to": escape(destination),
            "amount": number(transfer["amount"]),
            "est. value": value_text(transfer["est_value"], quote),
        }
        if noted:
            saving = value_text(transfer["est_saving"], quote)
            cells |= {
                "network": escape(transfer.get("network") or "-"),
                "fee": number(transfer["fee"]),
                "reason": escape(transfer["reason"]),
                "est. saving": saving,
                WHY: _why(transfer["reason"], saving),
            }
        rows.append(cells)
    columns: tuple[str, ...] = ("asset", "from", "to", "amount", "est. value")

    def layout(notes: tuple[str, ...], *groups: Stack) -> list[Table]:
        named = ("#", *columns, "network", "fee", *notes) if noted else columns
        stacks = _stacks(named, *groups)
        table = _table(f"Transfers ({len(transfers)})", stacks)
        for row in rows:
            table.add_row(*_stacked_cells(row, stacks))
        return [table]

    stackings: tuple[tuple[Stack, ...], ...] = (
        (),
        (("amount", "est. value"),),
        (("amount", "est. value", "fee"),),
    )
    layouts = [partial(layout, (WHY,), *groups) for groups in stackings]
    if width >= WIDE_COLUMNS:
        layouts.insert(0, partial(layout, ("reason", "est. saving")))
    return _first_fitting(layouts, width)


def _skipped(skipped: Sequence[Mapping[str, Any]]) -> Table:
    table = _table(f"Skipped ({len(skipped)})", ("path", "symbol", "side", "amount", "reason"))
    for skip in skipped:
        table.add_row(
            escape(skip["path"]),
            escape(skip["symbol"]),
            skip["side"],
            number(skip["amount"]),
            escape(skip["reason"]),
        )
    return table


def _projected(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Projected weights (of the parent)", ("path", "now", "after"), right=("now", "after"))
    for row in rows:
        table.add_row(escape(row["path"]), percent(row["current_weight"]), percent(row["projected_weight"]))
    return table


def number(value: Any) -> str:
    """An exact decimal as plain text, whichever way it came (the bus and the API may write 8.3E-7)."""
    return dec_str(Decimal(str(value)))


def percent(weight: Any) -> str:
    """A weight (an exact decimal string) as a percentage with two decimals; "-" when there is none."""
    return percent_text(None if weight is None else str(weight))


def diff_tree(node: JsonDict, parent: RichTree | None = None) -> RichTree:
    """The diff tree of `rebal plan`'s JSON: per node, weights and values now and desired, the operation."""
    op = node["operation"]
    label = (
        f"[bold]{escape(node['name'])}[/] "
        f"{percent(node['current_weight'])} → {percent(node['desired_weight'])}  "
        f"{node['current_value']} → {node['desired_value']}  "
        f"[{OPERATION_STYLE[op]}]{op} {node['diff_value']}[/]"
    )
    if "asset" in node:
        label += f"  [cyan]{escape(node['asset'])}[/] {node['current_amount']} → {node['desired_amount']}"
        if Decimal(node["locked_amount"]):
            label += f" (locked {node['locked_amount']})"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node["children"]:
        diff_tree(child, branch)
    return branch


def real_tree(node: JsonDict, parent: RichTree | None = None) -> RichTree:
    """A real tree as `rebal tree show --json` gives it: assets, amounts, locks by owner and what is free."""
    label = f"[bold]{escape(node['name'])}[/]"
    if "kind" in node:
        label += f" [dim]({escape(node['kind'])})[/]"
    if "quote" in node:
        label += f" quote {escape(node['quote'])}"
    if "asset" in node:
        label += f"  [cyan]{escape(node['asset'])}[/] {node['amount']}"
        if "locks" in node:
            locks = escape(", ".join(f"{lock['owner']} {lock['amount']}" for lock in node["locks"]))
            label += f"  [yellow]locked {node['locked_amount']}[/] ({locks}), free {node['free_amount']}"
    branch = RichTree(label) if parent is None else parent.add(label)
    for child in node.get("children", []):
        real_tree(child, branch)
    return branch


def run_line(status: str, counts: Mapping[str, Any], reasons: Sequence[str] = ()) -> str:
    """How a run ended: "completed: 3 placed, 3 filled, 0 skipped, 0 failed (reasons)"; green when it
    completed, yellow when it completed with adjustments, red for every other end."""
    style = "green" if status == "completed" else "yellow" if status.startswith("completed") else "red"
    return (
        f"[{style}]{status}[/]: {counts.get('placed', 0)} placed, {counts.get('filled', 0)} filled, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed"
        + (f" ({escape('; '.join(reasons))})" if reasons else "")
    )
