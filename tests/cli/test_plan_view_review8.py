"""`rebal plan`'s view (no --json) shows a where-mode plan's costs and savings in the prices' quote to its
precision, whatever the orders' symbols (a route's are in several quotes): issue 14's second review."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REBAL = Path(sys.executable).parent / "rebal"


def view(tmp_path: Path, **docs: Any) -> str:
    args = [str(REBAL), "plan"]
    for name, doc in docs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        args += [f"--{name}", str(path)]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=120, check=False, env={"COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def costs_row(text: str) -> list[str]:
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "Estimated costs" in line)
    row = next(line for line in lines[at:] if line.startswith("│"))
    return [cell.strip() for cell in row.strip("│").split("│")]


ACCOUNT = {"name": "bn", "kind": "account", "exchange": "binance", "quote": "USDT"}


def test_a_routed_plan_shows_its_costs_in_the_valuation_currency_to_two_places(tmp_path: Path) -> None:
    """1000 ABC sold through ETH and BTC (symbols quoted in ETH, BTC and USDT): fees 3.3300666 x 3000 ...
    were shown with 8 places (29.64883627); in USD they are 2 places, and the total the parts' sum."""
    real = {
        "name": "alice",
        "children": [
            {
                **ACCOUNT,
                "children": [
                    {"name": "abc", "asset": "ABC", "amount": "1000"},
                    {"name": "usdt", "asset": "USDT", "amount": "0"},
                ],
            }
        ],
    }
    target = {
        "name": "alice",
        "children": [
            {
                "name": "bn",
                "weight": "100%",
                "children": [{"name": "usdt", "asset": "USDT", "weight": "100%"}],
            }
        ],
    }
    prices = {
        "quote": "USD",
        "prices": {"ABC": "10", "ETH": "3000", "BTC": "60000", "USDT": "1"},
        "venues": {
            "binance": {
                "ABC": {"bid": "9.9", "ask": "10.1"},
                "ETH": {"bid": "2999", "ask": "3001"},
                "BTC": {"bid": "59990", "ask": "60010"},
            }
        },
    }
    step = {"amount_step": "0.000001", "fee_rate": "0.001"}
    markets = {"binance": {"ABC/ETH": step, "ETH/BTC": step, "BTC/USDT": step}}
    text = view(tmp_path, real=real, target=target, prices=prices, markets=markets, network={})
    fees, spread, withdrawal, total = costs_row(text)
    assert (fees, spread, withdrawal, total) == ("29.65", "109.89", "0.00", "139.54")
    # Each leg's saving (none: the plain route is this one) in USD too (was "0", all its digits).
    legs = [line for line in text.splitlines() if "cheapest_route" in line]
    assert [[cell.strip() for cell in line.strip("│").split("│")][-2] for line in legs] == ["0.00"] * 3
