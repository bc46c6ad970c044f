"""How `rebal fund show` tells a cycle: what it planned and what really traded."""

from __future__ import annotations

from rebal_cli.funds import cycle_line


def test_a_cycle_that_traded_nothing_says_so() -> None:
    """`rebal fund show` said "done ... 2 orders" for a cycle whose two orders all failed."""
    report = {
        "orders": 2,
        "user_orders": 3,
        "fees": "0E-8",
        "reasons": ["leg 0 BTC/USDT buy failed: no USDT"],
    }
    done = {"cycle_id": "c1", "status": "done", "phase": 2, "report": report}
    assert cycle_line({**done, "traded": {"orders": 0, "fills": 0}}, "USDT") == (
        "cycle c1: done (phase 2), nothing traded: 2 orders planned, none filled for 3 user legs,"
        " fees 0.00 USDT; leg 0 BTC/USDT buy failed: no USDT"
    )
    assert "2 of 2 orders filled" in cycle_line({**done, "traded": {"orders": 2, "fills": 3}}, "USDT")
    nothing = {**done, "report": {**report, "orders": 0, "reasons": []}, "traded": {"orders": 0}}
    assert "nothing to trade" in cycle_line(nothing, "USDT")
