"""The files `rebal backtest` reads besides the trees: the price history and the cash flows (CSV).

HISTORY.csv: a header with a ``date`` (or ``timestamp``) column and one column per asset, then one row
per instant: the date as ``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time (with an offset, or UTC
without one), each price a positive decimal in the valuation currency. Rows strictly increasing in time,
regularly spaced (`rebal.core.backtest.history.spacing_of`: every step the usual one, on the clock of the
dates as written or in time; a longer one is a gap), each price and amount zero or within
`rebal.core.numbers.RANGE` (a price: positive). FLOWS.csv:
``date,amount``: a deposit (positive) or a withdrawal (negative) of cash in the valuation currency,
landing at the first row at or after its date.

Every problem is a `HistoryError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from rebal.core.backtest.history import Spacing, Uneven, spacing_of
from rebal.core.numbers import LARGEST, RANGE, SMALLEST, in_range, parse_decimal
from rebal.trigger import instant_text, parse_instant

DATE_COLUMNS = ("date", "timestamp")


class HistoryError(ValueError):
    """A history or flows file that cannot be used; the message names the file, line and column."""


@dataclass(frozen=True)
class Table:
    """A history as read: times, asset names, prices (rows x assets) and how often the rows come."""

    times: np.ndarray
    assets: tuple[str, ...]
    prices: np.ndarray
    spacing: Spacing


def _read(path: Path, example: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's export starts with a BOM
    except FileNotFoundError:
        raise HistoryError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"{path}: cannot read: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise HistoryError(f"{path}: line 1: empty file (expected a header such as {example})")
    rows = [(line, row) for line, row in enumerate(reader, start=2) if any(cell.strip() for cell in row)]
    return [name.strip() for name in header], rows


def _date_column(path: Path, names: list[str]) -> int:
    found = [i for i, name in enumerate(names) if name.lower() in DATE_COLUMNS]
    if not found:
        raise HistoryError(f"{path}: line 1: no date column (one of {', '.join(DATE_COLUMNS)})")
    return found[0]


def _time(path: Path, line: int, column: str, raw: str) -> tuple[int, int]:
    """The instant (seconds since the epoch) and the same on the clock of its own offset (a daily row at
    local midnight is 24 hours after the row above on that clock, across a change of summer time)."""
    try:
        when = parse_instant(raw)
    except ValueError as exc:
        raise HistoryError(f"{path}: line {line}, column {column}: {exc}") from None
    offset = datetime.fromisoformat(raw.strip()).utcoffset()
    return when, when + (0 if offset is None else int(offset.total_seconds()))


def _plain_prices(rows: list[tuple[int, list[str]]], date: int, width: int) -> np.ndarray | None:
    """Every price at once when every cell is a number in range (float() reads a decimal's text to the
    same float as the decimal does); None when a cell needs the careful path that names it."""
    try:
        prices = np.array(
            [[float(cell) for i, cell in enumerate(row) if i != date] for _, row in rows], dtype=np.float64
        )
    except ValueError:  # a cell that is not a number, or rows of different lengths
        return None
    if (
        prices.shape != (len(rows), width - 1)
        or not ((prices >= float(SMALLEST)) & (prices <= float(LARGEST))).all()
    ):
        return None
    return prices


def read_history(path: Path) -> Table:
    """The prices of HISTORY.csv (see the module's docstring)."""
    names, rows = _read(path, "date,BTC,ETH")
    date = _date_column(path, names)
    assets = [name for i, name in enumerate(names) if i != date]
    if not assets:
        raise HistoryError(f"{path}: line 1: no price column (one per asset after the date)")
    for i, name in enumerate(names):
        if not name:
            raise HistoryError(f"{path}: line 1, column {i + 1}: a column without a name")
        if names.index(name) != i:
            raise HistoryError(f"{path}: line 1, column {name}: named twice")
    if len(rows) < 2:
        line = rows[0][0] + 1 if rows else 2
        count = "no row" if not rows else "one row"
        raise HistoryError(
            f"{path}: line {line}: the file ends with {count} of prices: a backtest needs at least two"
        )
    times = np.zeros(len(rows), dtype=np.int64)
    wall = np.zeros(len(rows), dtype=np.int64)
    fast = _plain_prices(rows, date, len(names))
    prices = np.zeros((len(rows), len(assets))) if fast is None else fast
    seen: dict[int, int] = {}
    for k, (line, row) in enumerate(rows):
        if len(row) != len(names):
            raise HistoryError(f"{path}: line {line}: {len(row)} columns, the header has {len(names)}")
        when, clock = _time(path, line, names[date], row[date])
        if when in seen:
            raise HistoryError(
                f"{path}: line {line}, column {names[date]}: {row[date].strip()} repeats line {seen[when]}"
            )
        if k and when < times[k - 1]:
            raise HistoryError(
                f"{path}: line {line}, column {names[date]}: {row[date].strip()} comes before the line above "
                "(rows must be sorted by time)"
            )
        seen[when] = line
        times[k], wall[k] = when, clock
        if fast is not None:
            continue
        cells = [cell for i, cell in enumerate(row) if i != date]
        for j, (asset, cell) in enumerate(zip(assets, cells, strict=True)):
            prices[k, j] = _price(path, line, asset, cell)
    found = spacing_of(times, wall)
    if isinstance(found, Uneven):
        k = found.row
        what = "a gap" if found.gap else "a step"
        raise HistoryError(
            f"{path}: line {rows[k][0]}, column {names[date]}: {instant_text(int(times[k]))} follows "
            f"{instant_text(int(times[k - 1]))}: {what} of {found.step} in a history of one row every "
            f"{found.usual} (rows must be regularly spaced)"
        )
    return Table(times, tuple(assets), prices, found)


def _price(path: Path, line: int, asset: str, cell: str) -> float:
    if not cell.strip():
        raise HistoryError(f"{path}: line {line}, column {asset}: no price (a gap in the history)")
    value = parse_decimal(cell)
    if value is None:
        raise HistoryError(f"{path}: line {line}, column {asset}: {cell.strip()!r} is not a decimal number")
    if value <= 0:
        raise HistoryError(f"{path}: line {line}, column {asset}: price {cell.strip()} must be positive")
    if not in_range(value):
        raise HistoryError(
            f"{path}: line {line}, column {asset}: price {cell.strip()} is out of range (1e-18 to 1e18)"
        )
    return float(value)


@dataclass(frozen=True)
class Flows:
    """FLOWS.csv as read: one amount per row of the history, and the file's first line landing on each
    row that has a flow (to name it when the replay refuses it)."""

    amounts: np.ndarray
    lines: dict[int, int]


def read_flows(path: Path, times: np.ndarray) -> Flows:
    """FLOWS.csv against the history whose `times` are given (see the module's docstring)."""
    names, rows = _read(path, "date,amount")
    date = _date_column(path, names)
    amount_columns = [i for i, name in enumerate(names) if name.lower() == "amount"]
    if not amount_columns:
        raise HistoryError(f"{path}: line 1: no amount column (expected date,amount)")
    column = amount_columns[0]
    flows = np.zeros(times.size)
    lines: dict[int, int] = {}
    for line, row in rows:
        if len(row) != len(names):
            raise HistoryError(f"{path}: line {line}: {len(row)} columns, the header has {len(names)}")
        when, _ = _time(path, line, names[date], row[date])
        value = parse_decimal(row[column])
        if value is None:
            raise HistoryError(
                f"{path}: line {line}, column {names[column]}: {row[column].strip()!r} is not a decimal"
            )
        if not in_range(value):
            raise HistoryError(
                f"{path}: line {line}, column {names[column]}: amount {row[column].strip()} is out of range "
                f"({RANGE})"
            )
        at = int(np.searchsorted(times, when))
        if at >= times.size:
            raise HistoryError(
                f"{path}: line {line}, column {names[date]}: {row[date].strip()} is after the history's "
                f"last row ({instant_text(int(times[-1]))})"
            )
        flows[at] += float(value)
        lines.setdefault(at, line)
    return Flows(flows, lines)
