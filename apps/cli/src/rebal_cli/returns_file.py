"""A strategy's return history from a file (`rebal backfill`, `rebal optimize --returns`).

Formats (docs/bots.md, "Backfill files"):

- CSV with a header: ``date,return`` (also ``timestamp`` for the date and ``period_return`` for the
  return); for several strategies in one file (``rebal optimize --returns``) a ``date`` column then one
  column per strategy, named by its id.
- JSON: a list of ``{"date": ..., "return": ...}`` objects; or a backtest's stats, an object whose
  ``returns`` (or ``daily_returns``) is such a list or a mapping ``date -> return`` (what pandas'
  ``Series.to_json()`` writes, dates as ISO strings or epoch milliseconds); for several strategies,
  ``{"returns": {"<strategy>": {date: return, ...}, ...}}``.

A date is ``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time with a zone. Returns are decimals (0.01 is
+1%), at least -1. Every problem is a `ReturnsFileError` naming the file, the line (CSV) or the entry
(JSON) and the column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from rebal.core import bounds
from rebal.io import FileError, read_input

DATE_COLUMNS = ("date", "timestamp")
RETURN_COLUMNS = ("return", "period_return")


class ReturnsFileError(ValueError):
    """A file that cannot be read as returns; the message names the file and where."""


@dataclass(frozen=True)
class Returns:
    """One series per strategy, sorted by time (no timestamp twice)."""

    series: dict[str, list[tuple[datetime, Decimal]]]


def parse_time(raw: object) -> datetime:
    """A UTC time in the window the bus accepts (`rebal.core.bounds`) from a date, an ISO time with a
    zone or epoch milliseconds; ValueError otherwise."""
    value = _time(raw)
    problem = bounds.time_problem(value.timestamp())
    if problem is not None:
        raise ValueError(f"{raw!r} {problem}")
    return value


def _time(raw: object) -> datetime:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _from_epoch_ms(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{raw!r} is not a date")
    text = raw.strip()
    if text.isdigit():
        return _from_epoch_ms(int(text))
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{raw!r} has no time zone (add Z or +00:00)")
    return value.astimezone(UTC)


def _from_epoch_ms(milliseconds: int) -> datetime:
    try:
        return datetime.fromtimestamp(milliseconds / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{milliseconds} is not a date (epoch milliseconds out of range)") from None


def parse_return(raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"{raw!r} is not a decimal return")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"{raw!r} is not a decimal return") from None
    problem = bounds.return_problem(value)  # the rule the bus applies to a reported return
    if problem is not None:
        raise ValueError(f"{raw!r} {problem}")
    return value


def _sorted(path: Path, points: dict[datetime, tuple[Decimal, str]]) -> list[tuple[datetime, Decimal]]:
    return [(ts, value) for ts, (value, _) in sorted(points.items())]


def _add(
    path: Path, points: dict[datetime, tuple[Decimal, str]], ts: datetime, value: Decimal, where: str
) -> None:
    if ts in points:
        raise ReturnsFileError(f"{path}: {where}: {ts.isoformat()} repeats {points[ts][1]}")
    points[ts] = (value, where)


def _rows(path: Path, reader: Any) -> Iterator[list[str]]:
    """The CSV reader's rows; a row it cannot read (a cell over the csv module's limit) names its line."""
    try:
        yield from reader
    except csv.Error as exc:
        raise ReturnsFileError(f"{path}: line {reader.line_num}: {exc}") from None


def _csv(path: Path, text: str) -> dict[str, dict[datetime, tuple[Decimal, str]]]:
    reader = _rows(path, csv.reader(io.StringIO(text)))
    header = next(reader, None)
    if header is None:
        raise ReturnsFileError(f"{path}: empty file (expected a header such as date,return)")
    names = [name.strip() for name in header]
    date_column = next((i for i, name in enumerate(names) if name.lower() in DATE_COLUMNS), None)
    if date_column is None:
        raise ReturnsFileError(f"{path}: line 1: no date column (one of {', '.join(DATE_COLUMNS)})")
    value_columns = [i for i in range(len(names)) if i != date_column]
    if not value_columns:
        raise ReturnsFileError(f"{path}: line 1: no return column")
    out: dict[str, dict[datetime, tuple[Decimal, str]]] = {names[i]: {} for i in value_columns}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            raise ReturnsFileError(f"{path}: line {line}: {len(row)} columns, the header has {len(names)}")
        try:
            ts = parse_time(row[date_column])
        except ValueError as exc:
            raise ReturnsFileError(f"{path}: line {line}, column {names[date_column]}: {exc}") from None
        for i in value_columns:
            if not row[i].strip() and len(value_columns) > 1:
                continue  # a strategy with no return that day
            try:
                value = parse_return(row[i])
            except ValueError as exc:
                raise ReturnsFileError(f"{path}: line {line}, column {names[i]}: {exc}") from None
            _add(path, out[names[i]], ts, value, f"line {line}")
    return out


def _entries(path: Path, where: str, data: Any) -> dict[datetime, tuple[Decimal, str]]:
    points: dict[datetime, tuple[Decimal, str]] = {}
    if isinstance(data, dict):
        items = [(f"{where}[{key!r}]", key, value) for key, value in data.items()]
    elif isinstance(data, list):
        items = []
        for index, entry in enumerate(data):
            here = f"{where}[{index}]"
            if not isinstance(entry, dict):
                raise ReturnsFileError(f"{path}: {here}: expected an object with date and return")
            stamp = next((entry[k] for k in DATE_COLUMNS if k in entry), None)
            value = next((entry[k] for k in RETURN_COLUMNS if k in entry), None)
            if stamp is None or value is None:
                raise ReturnsFileError(f"{path}: {here}: needs a date and a return")
            items.append((here, stamp, value))
    else:
        raise ReturnsFileError(f"{path}: {where}: expected a list or a mapping of returns")
    for here, stamp, value in items:
        try:
            ts = parse_time(stamp)
        except ValueError as exc:
            raise ReturnsFileError(f"{path}: {here}, date: {exc}") from None
        try:
            parsed = parse_return(value)
        except ValueError as exc:
            raise ReturnsFileError(f"{path}: {here}, return: {exc}") from None
        _add(path, points, ts, parsed, here)
    return points


def _json(path: Path, text: str, name: str) -> dict[str, dict[datetime, tuple[Decimal, str]]]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ReturnsFileError(f"{path}: not JSON: {exc}") from None
    if isinstance(data, list):
        return {name: _entries(path, "$", data)}
    if not isinstance(data, dict):
        raise ReturnsFileError(f"{path}: expected a list of returns or an object with 'returns'")
    key = next((k for k in ("returns", "daily_returns") if k in data), None)
    if key is None:
        raise ReturnsFileError(f"{path}: no 'returns' (or 'daily_returns') in the object")
    inner = data[key]
    if isinstance(inner, dict) and inner and all(isinstance(v, dict | list) for v in inner.values()):
        return {str(strategy): _entries(path, f"$.{key}.{strategy}", v) for strategy, v in inner.items()}
    return {name: _entries(path, f"$.{key}", inner)}


def read_returns(path: Path, default_name: str = "returns") -> Returns:
    """Every series in the file (see the module doc); `default_name` names a single unnamed series."""
    try:
        text = read_input(path).decode("utf-8")
    except FileError as exc:
        raise ReturnsFileError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ReturnsFileError(f"{path}: cannot read: {exc}") from None
    found = _json(path, text, default_name) if path.suffix.lower() == ".json" else _csv(path, text)
    series = {name: _sorted(path, points) for name, points in sorted(found.items())}
    empty = [name for name, points in series.items() if not points]
    if empty or not series:
        raise ReturnsFileError(f"{path}: no returns for {', '.join(empty) or 'any strategy'}")
    return Returns(series)


def single_series(path: Path) -> list[tuple[datetime, Decimal]]:
    """The one series of a file (`rebal backfill`); a file with several is refused."""
    returns = read_returns(path)
    if len(returns.series) != 1:
        names = ", ".join(returns.series)
        raise ReturnsFileError(f"{path}: holds several series ({names}); backfill takes one (date,return)")
    return next(iter(returns.series.values()))
