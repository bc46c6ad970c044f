"""What the API computes from events with the pure core: staleness of a plan, cursors (worked numbers)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rebal_monitor.views import BadCursor, Tolerances, decode_cursor, encode_cursor, staleness

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo"
ONE_PERCENT = Tolerances(price=0.01, balance=0.01)
TRADED = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def snapshot() -> dict[str, Any]:
    return {
        "tree": json.loads((EXAMPLES / "real.json").read_text()),
        "prices": json.loads((EXAMPLES / "prices.json").read_text()),
    }


def with_usdt(amount: str) -> dict[str, Any]:
    moved = copy.deepcopy(snapshot())
    cash = moved["tree"]["children"][0]["children"][0]["children"][1]["children"][0]
    assert cash["asset"] == "USDT"
    cash["amount"] = amount
    return moved


def test_a_plan_on_unchanged_inputs_is_fresh() -> None:
    assert staleness(snapshot(), snapshot(), TRADED, ONE_PERCENT) is None


def test_balances_moved_beyond_the_tolerance_make_a_plan_stale() -> None:
    # The portfolio is worth 100000: 500 USDT more is 0.5% (fresh), 5000 more is 5% (stale).
    assert staleness(snapshot(), with_usdt("22500"), TRADED, ONE_PERCENT) is None
    why = staleness(snapshot(), with_usdt("27000"), TRADED, ONE_PERCENT)
    assert why == "balances moved by 5.00% of the portfolio's value since the plan was made (tolerance 1.00%)"


def test_prices_of_traded_markets_moved_beyond_the_tolerance_make_a_plan_stale() -> None:
    moved = snapshot()
    moved["prices"]["prices"]["ETH"] = "3020"  # +0.67%: within 1%
    assert staleness(snapshot(), moved, TRADED, ONE_PERCENT) is None
    moved["prices"]["prices"]["SOL"] = "160"  # +6.67%
    assert staleness(snapshot(), moved, TRADED, ONE_PERCENT) == (
        "prices moved more than 1.00% since the plan was made: SOL 150 -> 160 (6.67%)"
    )
    # A market the plan does not trade may move.
    assert staleness(snapshot(), moved, ["BTC/USDT"], ONE_PERCENT) is None


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    at, key = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(at, key)) == (at, key)
    for bad in ("garbage!", "", encode_cursor(at, key)[:-4], "MjAyNi0xMS0yMVQxMjowMDowMHx4"):
        with pytest.raises(BadCursor, match="is not one this API gave out"):
            decode_cursor(bad)
