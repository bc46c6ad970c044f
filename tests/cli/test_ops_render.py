"""How `rebal plan --portfolio` heads a stored plan: money to the quote's cents, the band in percent."""

from __future__ import annotations

from rebal_cli.ops import _plan_header


def test_a_stored_plan_s_header_reads_as_money() -> None:
    plan = {
        "plan_id": "p1",
        "portfolio_id": "demo",
        "status": "preview",
        "orders": [],
        "skipped": [],
        "transfers": [],
        "band": "0.01",
        "expires_at": "2026-12-06T23:55:30.016131+00:00",
        "inputs": {"total_value": "98809.70058259", "prices": {"quote": "USDT", "prices": {}}},
    }
    header = _plan_header(plan)
    assert "portfolio value 98809.70, band 1.00%, expires 2026-12-06 23:55:30 UTC" in header
