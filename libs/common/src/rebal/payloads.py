"""The large part of an event as compact columns: how trees and plans travel by reference.

A snapshot's tree, a target's tree and a plan's orders grow with the portfolio (a 100k-wallet plan is
22 MB of JSON), far past what one NATS message should carry (`rebal.bus.MAX_MESSAGE_BYTES`). The bus
puts such an event's large fields (`LARGE_FIELDS`) into a JetStream Object Store as one object in this
encoding and publishes the event with those fields empty and a `PayloadRef` naming the object and its
digest; a consumer fetches the object, checks the digest and gets the whole event back (`hydrate`).

The encoding, ``rebal-columns-v1+deflate``: a zlib stream (RFC 1950, deflate) of one UTF-8 JSON object
``{"format": "rebal-columns", "version": 1, "kind": <event type>, "fields": {<field>: <value>}}``:

- a tree (``tree``) is a *tree table*: its nodes in preorder, ``{"n": <nodes>, "up": [...], "children":
  [...], "keys": {<key>: {"gaps": [...], "values": [...]}}}``. ``up[i]`` is how many rows back node i's
  parent is (0 for the root); ``children`` lists, as gaps, the rows whose node has a ``children`` list
  (children are the rows whose parent it is, in order); each other key of the nodes is a column: the
  rows that have it (as gaps from the previous such row, the first from -1; no ``gaps`` when every row
  has it) and its values, as JSON. A document that is not a tree of objects is sent as it is
  (``{"document": ...}``).
- a tuple of records (``orders``, ``skipped``, ...) is a *record table*: ``{"n": <rows>, "columns":
  {<field>: <column>}}``, one column per field of the record. A column is the rows' values as a JSON
  array (decimals as their exact text), or, as a plan's orders are written from the core's columns,
  ``{"dictionary": [values], "codes": [index per row]}`` (accounts, symbols, sides, prices per
  market) or exact decimals ``{"coefficients": [...], "exponents": [...], "exact": {<row>: <text>}}``
  (row i is ``coefficients[i]E exponents[i]``, or the text in ``exact`` for a coefficient of 19
  digits or more).
- any other field is its JSON value.

Repeated text within a plain column (paths, assets) is left to deflate, which finds it within its
32 KiB window. Pure functions of bytes and values: the bus does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import Any, Final, TypeVar, get_args

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel

from rebal.core.bulk import Decimals
from rebal.core.plan import BUY_PHASE, SELL_PHASE, Plan
from rebal.events import (
    BalanceSnapshotTaken,
    Event,
    Frozen,
    PayloadRef,
    RebalancePlanned,
    TargetWeightsComputed,
)

ENCODING: Final = "rebal-columns-v1+deflate"
FORMAT, VERSION = "rebal-columns", 1
# Fast deflate: a plan's columns shrink about as much at level 1 as at 6, in a third of the time.
LEVEL = 1
# The fields an event of each kind may send by reference; everything else stays in the message.
LARGE_FIELDS: Final[Mapping[type[Event], tuple[str, ...]]] = {
    BalanceSnapshotTaken: ("tree", "prices", "markets"),
    TargetWeightsComputed: ("tree",),
    RebalancePlanned: ("orders", "transfers", "skipped", "projected_weights", "budgets"),
}
TREE_FIELDS = frozenset({"tree"})
# A `Body` of at most this many records goes into its event (whose JSON is then measured like any
# other's); a larger one is encoded straight into the Object Store. An order is ~240 bytes of JSON.
INLINE_ROWS = 500
E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Records:
    """Records already in columns (a record table: the core's columnar orders), with the rows they
    stand for, made only when a small plan puts them into its event."""

    table: dict[str, Any]
    rows: Callable[[], Sequence[Sequence[Any]]]

    def __len__(self) -> int:
        return int(self.table["n"])


@dataclass(frozen=True)
class Body:
    """An event's large fields given apart from it, as the core made them: records as rows of values in
    their model's field order (or as models), trees as documents. The bus puts a small one into the
    event and encodes a large one straight into the Object Store, without a model per record."""

    fields: Mapping[str, Any]

    @property
    def rows(self) -> int:
        return sum(len(value) for value in self.fields.values() if isinstance(value, list | tuple | Records))

    def attach(self, event: E) -> E:
        """`event` with these fields (records made models as the core's rows are trusted: see
        `Frozen.trusted`)."""
        kind = type(event)
        update = {}
        for name, value in self.fields.items():
            record = record_model(kind, name)
            if isinstance(value, Records):
                value = value.rows()  # noqa: PLW2901 - the rows the columns stand for
            if record is None:
                update[name] = value
            elif issubclass(record, Frozen) and value and not isinstance(value[0], record):
                update[name] = record.trusted(value)
            else:
                update[name] = tuple(value)
        return event.model_copy(update=update)

    def encode(self, kind: type[Event]) -> bytes:
        return encode_fields(kind, self.fields)


class PayloadError(ValueError):
    """An object that is not a payload of this event: a bad digest, a broken encoding, the wrong kind."""


def digest_of(data: bytes) -> str:
    """The digest as NATS's object store writes it (``SHA-256=`` and the URL-safe base64 of the hash), so
    the event's digest and ``nats object info`` show the same text."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def offloadable(kind: type[Event]) -> bool:
    return kind in LARGE_FIELDS


def encode(event: Event) -> bytes:
    """The large fields of `event` (a kind of `LARGE_FIELDS`) in the columns encoding."""
    kind = type(event)
    return encode_fields(kind, {name: getattr(event, name) for name in LARGE_FIELDS[kind]})


def encode_fields(kind: type[Event], values: Mapping[str, Any]) -> bytes:
    """The columns encoding of large fields of a `kind` event: `values` maps a field to its value (a
    tree; records as models, or as rows of values in the record model's field order; any JSON value)."""
    fields = {name: _field(kind, name, value) for name, value in values.items()}
    document = {"format": FORMAT, "version": VERSION, "kind": kind.__name__, "fields": fields}
    return zlib.compress(orjson.dumps(document, default=_exact, option=orjson.OPT_SERIALIZE_NUMPY), LEVEL)


def decode(kind: type[Event], data: bytes, ref: PayloadRef) -> dict[str, Any]:
    """The large fields of a `kind` event from its object, checked against `ref` (raises `PayloadError`):
    plain values (trees as documents, records as dicts) for the model to validate."""
    if ref.encoding != ENCODING:
        raise PayloadError(f"unknown payload encoding {ref.encoding!r} (this service reads {ENCODING})")
    if digest_of(data) != ref.digest:
        raise PayloadError(f"payload {ref.bucket}/{ref.name} does not match its digest {ref.digest}")
    try:
        document = orjson.loads(zlib.decompress(data))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise PayloadError(f"payload {ref.bucket}/{ref.name} is not {ENCODING}: {exc}") from None
    if not isinstance(document, dict) or (document.get("format"), document.get("version")) != (
        FORMAT,
        VERSION,
    ):
        raise PayloadError(f"payload {ref.bucket}/{ref.name} is not {FORMAT} v{VERSION}")
    if document.get("kind") != kind.__name__:
        found = document.get("kind")
        raise PayloadError(f"payload {ref.bucket}/{ref.name} is a {found}, not a {kind.__name__}")
    fields = document.get("fields")
    allowed = set(LARGE_FIELDS.get(kind, ()))
    if not isinstance(fields, dict) or not set(fields) <= allowed:
        raise PayloadError(f"payload {ref.bucket}/{ref.name} holds other fields than {sorted(allowed)}")
    try:
        return {name: _value(kind, name, value) for name, value in fields.items()}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PayloadError(f"payload {ref.bucket}/{ref.name}: broken {type(exc).__name__}: {exc}") from None


def slim(event: E, ref: PayloadRef) -> E:
    """`event` as it travels by reference: its large fields empty (their defaults), `payload_ref` set."""
    kind = type(event)
    empty = {name: _empty(kind, name) for name in LARGE_FIELDS[kind]}
    return event.model_copy(update={**empty, "payload_ref": ref})


def hydrate(event: E, fields: Mapping[str, Any]) -> E:
    """The whole event: `event` (as it travelled) with its large `fields` back, validated as a consumer
    validates any event it receives. `payload_ref` stays: it tells where the fields came from."""
    whole = {**event.model_dump(mode="json", exclude=set(fields)), **fields}
    # Through JSON: pydantic validates 100k orders from JSON text in half the time it takes from dicts.
    return type(event).model_validate_json(orjson.dumps(whole))


# -- encoding ---------------------------------------------------------------------------------------


def _exact(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def record_model(kind: type[Event], name: str) -> type[BaseModel] | None:
    """The model of the records field `name` of `kind` holds (``tuple[PlannedOrder, ...]``), if any."""
    args = get_args(kind.model_fields[name].annotation)
    record = args[0] if args else None
    return record if isinstance(record, type) and issubclass(record, BaseModel) else None


def _field(kind: type[Event], name: str, value: Any) -> Any:
    if name in TREE_FIELDS and isinstance(value, dict):
        return tree_table(value)
    if isinstance(value, Records):
        return value.table
    record = record_model(kind, name)
    if record is not None:
        return record_table(list(record.model_fields), value)
    return value


def record_table(names: Sequence[str], records: Sequence[BaseModel | Sequence[Any]]) -> dict[str, Any]:
    """Records, as models or as rows of values in the order of `names`, as a record table."""
    rows = [tuple(r.__dict__.values()) if isinstance(r, BaseModel) else r for r in records]
    columns = [_column(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in names]
    return {"n": len(rows), "columns": dict(zip(names, columns, strict=True))}


def _column(values: tuple[Any, ...]) -> list[Any]:
    """A column's values as JSON values: decimals as their exact text, in one pass (a call back from the
    JSON writer per decimal took most of the time)."""
    if isinstance(values[0], Decimal):
        return [str(value) for value in values]
    return list(values)


def tree_table(tree: dict[str, Any]) -> dict[str, Any]:
    """A tree document's nodes as columns (see the module's docstring), or the document as it is when it
    is not a tree of objects."""
    up: list[int] = []
    with_children: list[int] = []
    keys: dict[str, tuple[list[int], list[Any]]] = {}
    pending: list[tuple[Any, int]] = [(tree, -1)]
    while pending:
        node, parent = pending.pop()
        if not isinstance(node, dict):
            return {"document": tree}
        row = len(up)
        up.append(row - parent if parent >= 0 else 0)
        for key, value in node.items():
            if key == "children" and isinstance(value, list):
                with_children.append(row)
                pending.extend((child, row) for child in reversed(value))
                continue
            column = keys.get(key)
            if column is None:
                column = keys[key] = ([], [])
            column[0].append(row)
            column[1].append(value)
    count = len(up)
    return {
        "n": count,
        "up": up,
        "children": _gaps(with_children),
        "keys": {
            key: {"values": values} if len(rows) == count else {"gaps": _gaps(rows), "values": values}
            for key, (rows, values) in keys.items()
        },
    }


def _gaps(rows: list[int]) -> list[int]:
    return [row - previous for previous, row in zip([-1, *rows], rows, strict=False)]


# -- decoding ---------------------------------------------------------------------------------------


def _value(kind: type[Event], name: str, value: Any) -> Any:
    if name in TREE_FIELDS:
        return tree_of(value)
    if record_model(kind, name) is not None:
        return records_of(value)
    return value


def records_of(table: dict[str, Any]) -> list[dict[str, Any]]:
    count, columns = int(table["n"]), table["columns"]
    values = [_column_values(column) for column in columns.values()]
    if any(len(column) != count for column in values):
        raise ValueError(f"a column of a {count}-row table has another length")
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _column_values(column: Any) -> list[Any]:
    """A column's values, row by row (decimals as exact text: the model reads them)."""
    if isinstance(column, list):
        return column
    if "dictionary" in column:
        dictionary = column["dictionary"]
        return [dictionary[code] for code in column["codes"]]
    made = list(map("{}E{}".format, column["coefficients"], column["exponents"]))
    for row, text in column.get("exact", {}).items():
        made[int(row)] = text
    return made


# -- the core's columns, as they are written ---------------------------------------------------------


def dictionary_column(values: Sequence[Any], codes: npt.NDArray[np.integer[Any]]) -> dict[str, Any]:
    """Rows that take one of a few `values`: the values once and an index per row."""
    return {"dictionary": list(values), "codes": codes}


def decimal_column(column: Decimals, *, normalize: bool = False) -> dict[str, Any]:
    """A column of exact decimals as coefficients and exponents (`normalize`: trailing zeros dropped,
    as ``Decimal.normalize`` does)."""
    coefficient, exponent = column.coefficient, column.exponent
    exact = {str(row): value for row, value in column.exact.items()}
    if normalize:
        coefficient, exponent = coefficient.copy(), exponent.copy()
        zero = coefficient == 0
        exponent[zero] = 0
        for _ in range(20):  # at most 19 digits to drop
            strip = ~zero & (coefficient % 10 == 0)
            if not strip.any():
                break
            coefficient[strip] //= 10
            exponent[strip] += 1
        exact = {str(row): value.normalize() for row, value in column.exact.items()}
    return {
        "coefficients": coefficient,
        "exponents": exponent,
        "exact": {row: str(value) for row, value in exact.items()},
    }


def plan_orders(plan: Plan) -> Records:
    """A plan's orders as a record table straight from the core's columns (no object per order): the
    same records as `Plan.orders()`, which makes them only when the plan is small enough to go whole."""
    columns = plan.order_columns()
    tree = plan.diff.tree
    nodes, account = np.unique(columns.account, return_inverse=True)
    side = columns.sell.astype(np.int64)
    table = {
        "n": len(columns),
        "columns": {
            "account": dictionary_column([tree.path(int(node)) for node in nodes], account),
            "exchange": dictionary_column([tree.accounts[int(node)][0] for node in nodes], account),
            "symbol": dictionary_column([market.symbol for market in columns.markets], columns.market),
            "side": dictionary_column(["buy", "sell"], side),
            "amount": decimal_column(columns.amount, normalize=True),
            # One price per market and side (a sell's at the bid, a buy's at the ask in where mode).
            "est_price": dictionary_column(
                [str(p) for p in columns.est_price.values()], 2 * columns.market + side
            ),
            "est_cost": decimal_column(columns.est_cost),
            "est_fee": decimal_column(columns.est_fee),
            "phase": dictionary_column([BUY_PHASE, SELL_PHASE], side),
            # The transfer a where-mode plan's order waits for (None: none, every order of other plans).
            "after_transfer": plan.waits_for(),
            # Why it trades there and what that saves (where mode; None: every order of other plans).
            **dict(zip(("reason", "est_saving"), _why_columns(plan), strict=True)),
        },
    }
    return Records(table, plan.orders)


def _why_columns(plan: Plan) -> tuple[list[str | None], list[str | None]]:
    reasons, savings = plan.why()
    return reasons, [None if saving is None else str(saving) for saving in savings]


def tree_of(table: dict[str, Any]) -> Any:
    """The document a tree table was made from."""
    if "document" in table:
        return table["document"]
    count = int(table["n"])
    up = table["up"]
    if len(up) != count or count < 1:
        raise ValueError("the tree's parent column does not match its node count")
    nodes: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, column in table["keys"].items():
        rows = _rows(column["gaps"]) if "gaps" in column else range(count)
        for row, value in zip(rows, column["values"], strict=True):
            nodes[row][key] = value
    for row in _rows(table["children"]):
        nodes[row]["children"] = []
    for row in range(1, count):
        back = up[row]
        if not 0 < back <= row:
            raise ValueError(f"node {row} names no earlier node as its parent")
        nodes[row - back]["children"].append(nodes[row])
    return nodes[0]


def _rows(gaps: list[int]) -> list[int]:
    rows = list(accumulate(gaps, initial=-1))[1:]
    if any(gap < 1 for gap in gaps):
        raise ValueError("rows must increase")
    return rows


def _empty(kind: type[Event], name: str) -> Any:
    field = kind.model_fields[name]
    if not field.is_required():
        return field.get_default(call_default_factory=True)
    return {} if name in TREE_FIELDS or name == "prices" else ()
