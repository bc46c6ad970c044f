"""Values are checked where they enter (issue 19, point 3): an event carrying text Postgres cannot hold, a
number that is not finite or out of bounds, or a time outside 1970..2100 is refused on its own content,
with the field named; the bounds themselves are accepted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from rebal import bus, subjects
from rebal.core import bounds
from rebal.events import (
    BalanceSnapshotTaken,
    DefineFund,
    HaltTrading,
    OrderFilled,
    StrategyReturnReported,
    new_event,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SUBJECT = subjects.STRATEGY_RETURN_REPORTED.subject("trend")


def report(**changes: Any) -> bytes:
    body = {
        "type": "StrategyReturnReported",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-01-02T00:00:00Z",
        "emitted_at": "2026-01-02T00:00:01Z",
        "portfolio_id": "demo",
        "strategy_id": "trend",
        "timestamp": "2026-01-02T00:00:00Z",
        "period_return": "0.01",
    }
    return orjson.dumps({**body, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"period_return": "-5"}, "period_return: Input should be greater than or equal to -1"),
        ({"period_return": "-1.0000001"}, "period_return: Input should be greater than or equal to -1"),
        ({"period_return": "1e400"}, "period_return: Input should be less than 1E+30"),
        ({"period_return": "1e200000"}, "period_return: Input should be less than 1E+30"),
        ({"period_return": "1e-20000"}, "period_return: Decimal input should have no more than 100 decimal"),
        ({"period_return": "NaN"}, "period_return: Input should be a finite number"),
        ({"period_return": "Infinity"}, "period_return: Input should be a finite number"),
        ({"equity": "1e31"}, "equity: Input should be less than 1E+30"),
        ({"equity": "-1e30"}, "equity: Input should be greater than -1E+30"),
        (
            {"positions": {"BTC": "1e-101"}},
            "positions.BTC: Decimal input should have no more than 100 decimal",
        ),
        (
            {"positions": {"\u0000": "0.1"}},
            "'\\x00' contains a NUL character (U+0000), which cannot be stored",
        ),
        (
            {"strategy_id": "tr\u0000end"},
            "strategy_id: Value error, strategy 'tr\\x00end' must be 1-64 letters",
        ),
        ({"timestamp": "2200-01-01T00:00:00Z"}, "timestamp: Input should be less than 2100-01-01T00:00:00Z"),
        (
            {"timestamp": "0001-01-01T00:00:00Z"},
            "timestamp: Input should be greater than or equal to 1970-01-01T00",
        ),
        (
            {"timestamp": "1969-12-31T23:59:59Z"},
            "timestamp: Input should be greater than or equal to 1970-01-01T00",
        ),
        (
            {"occurred_at": "2100-01-01T00:00:00Z"},
            "occurred_at: Input should be less than 2100-01-01T00:00:00Z",
        ),
    ],
)
def test_a_report_out_of_bounds_is_refused_naming_the_field(changes: dict[str, Any], reason: str) -> None:
    refused = bus.decode(StrategyReturnReported, SUBJECT, report(**changes))
    assert isinstance(refused, str)
    assert refused.startswith("invalid StrategyReturnReported: ")
    assert reason in refused


@pytest.mark.parametrize(
    "changes",
    [
        {"period_return": "-1"},
        {"period_return": "0"},
        {"period_return": "999999999999999999999999999999"},  # just below 1e30
        {"period_return": "1e-100"},
        {"period_return": "0.1" + "0" * 200},  # trailing zeros are no decimal places
        {"period_return": "1.1102230246251565e-17"},  # what str(float) writes for float noise
        {"timestamp": "1970-01-01T00:00:00Z"},
        {"timestamp": "2099-12-31T23:59:59.999999Z"},
        {"positions": {"BTC": "0.5", "ETH-PERP": "-0.25"}, "equity": "10123.45"},
    ],
)
def test_values_within_the_bounds_are_accepted(changes: dict[str, Any]) -> None:
    event = bus.decode(StrategyReturnReported, SUBJECT, report(**changes))
    assert isinstance(event, StrategyReturnReported), event


@pytest.mark.parametrize("bad", ["\x00", "a\x00b", "\ud800", "x\udfff"])
def test_text_postgres_cannot_hold_is_refused_in_every_kind_of_field(bad: str) -> None:
    cases: list[tuple[type[Any], dict[str, Any]]] = [
        (HaltTrading, {"reason": bad}),
        (
            OrderFilled,
            {
                "client_order_id": "rb-1",
                "trade_id": bad,
                "symbol": "BTC/USDT",
                "side": "buy",
                "amount": Decimal(1),
                "price": Decimal(1),
                "fee": Decimal(0),
                "fee_asset": "USDT",
            },
        ),
        (
            DefineFund,
            {
                "exchange": "paper",
                "account": "f/paper/spot",
                "quote": "USDT",
                "weights": {bad: Decimal(1)},
                "prices_from": "demo",
            },
        ),
        (
            BalanceSnapshotTaken,  # deep inside a tree document, as a key
            {"tree": {"name": "me", "children": [{"name": "w", "meta": {bad: 1}}]}, "prices": {}},
        ),
    ]
    refused = "should match pattern|unable to parse raw data as a unicode string|cannot be stored"
    for kind, fields in cases:
        with pytest.raises(ValidationError, match=refused):
            new_event(kind, key=1, now=NOW, portfolio_id="demo", **fields)


def test_the_bounds_are_the_documented_ones() -> None:
    assert datetime.fromtimestamp(bounds.TIME_FROM, UTC) == datetime(1970, 1, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(bounds.TIME_UNTIL, UTC) == datetime(2100, 1, 1, tzinfo=UTC)
    assert str(bounds.DECIMAL_LIMIT) == "1E+30"
    assert bounds.MIN_RETURN == -1


NUMBERS = [
    "0",
    "-1",
    "1e-100",
    "1e-101",
    "1.5e-100",
    "100e-102",
    "0.1" + "0" * 200,
    "0." + "1" * 100,
    "0." + "1" * 101,
    "999999999999999999999999999999",
    "1e30",
    "-1e30",
    "1e400",
    "1e-20000",
    "-5",
    "-1.0000001",
    "12345.678",
]


@pytest.mark.parametrize("raw", NUMBERS)
def test_the_event_models_and_the_file_readers_apply_the_same_bounds(raw: str) -> None:
    """The models check the bounds with pydantic's constraints, the returns files with
    rebal.core.bounds' functions: the same answer for every value."""
    from pydantic import TypeAdapter

    from rebal.events import PeriodReturn

    try:
        TypeAdapter(PeriodReturn).validate_python(Decimal(raw))
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (bounds.return_problem(Decimal(raw)) is None), raw


@pytest.mark.parametrize("seconds", [-1.0, 0.0, 1e9, bounds.TIME_UNTIL - 1e-6, bounds.TIME_UNTIL, 5e9])
def test_the_event_models_and_the_file_readers_apply_the_same_time_window(seconds: float) -> None:
    from pydantic import TypeAdapter

    from rebal.events import Moment

    try:
        TypeAdapter(Moment).validate_python(datetime.fromtimestamp(seconds, UTC))
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (bounds.time_problem(seconds) is None), seconds
