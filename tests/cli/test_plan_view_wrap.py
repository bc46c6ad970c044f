"""`rebal plan`'s view (no --json) never breaks a number across lines, at 80, 100 or 120 columns: a routed
plan (1000 ABC through ETH and BTC, prices of 8 places) read `0.003298` over `90` at 80 columns, and at
100; a transfer's why column `3890` over `.20`. The tables take the first layout whose numbers keep their
width: the text columns fold first, then the orders go one table per account with their notes in one
column, then their numbers are stacked two to a column (issue 14's third review)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rebal.core.display import money_text, price_text
from rebal_cli.render import number

REBAL = Path(sys.executable).parent / "rebal"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Doc = dict[str, Any]
WIDTHS = (80, 100, 120)
# A number as the view writes it (a leg's `after #0` too): never part of a longer one.
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d.]*")


def run(args: list[str], columns: int | None = None) -> str:
    env = {"COLUMNS": str(columns)} if columns else {}
    done = subprocess.run(
        [str(REBAL), "plan", *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def written(tmp_path: Path, **docs: Doc) -> list[str]:
    args = []
    for name, doc in docs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        args += [f"--{name}", str(path)]
    return args


def shown_numbers(plan: Doc, valuation: str) -> set[str]:
    """Every number the view's tables show of `plan` (`rebal plan --json`), as the renderer writes it."""
    shown: set[str] = set()
    for order in plan["orders"]:
        quote = order["symbol"].split("/")[1].split(":")[0]
        shown |= {
            str(order["phase"]),
            number(order["amount"]),
            price_text(order["est_price"], quote),
            money_text(order["est_cost"], quote),
            money_text(order["est_fee"], quote),
        }
        if order.get("reason") is not None:
            shown.add(money_text(order["est_saving"], valuation))
            if order["after_transfer"] is not None:
                shown.add(str(order["after_transfer"]))
    for index, transfer in enumerate(plan["transfers"]):
        shown |= {number(transfer["amount"]), money_text(transfer["est_value"], valuation)}
        if transfer.get("reason") is not None:  # a where-mode transfer's index, fee and saving
            shown |= {str(index), number(transfer["fee"]), money_text(transfer["est_saving"], valuation)}
    shown |= {number(skip["amount"]) for skip in plan["skipped"]}
    if "costs" in plan:
        parts = [money_text(plan["costs"][key], valuation) for key in ("fees", "spread", "withdrawal_fees")]
        shown |= {*parts, money_text(sum(map(Decimal, parts), Decimal(0)), valuation)}
    return shown


def assert_numbers_whole(text: str, plan: Doc, valuation: str, columns: int) -> None:
    """Every number of the tables is on one line, whole: the numbers read in their rows are exactly those
    of the plan (a broken `0.00329890` reads `0.003298` and `90`), and each of those is there."""
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= columns
    rows = [line for line in text.splitlines() if line.startswith("│") and line.endswith("│")]
    read = {found for line in rows for found in NUMBER.findall(line)}
    expected = shown_numbers(plan, valuation)
    assert read == expected, (sorted(read - expected), sorted(expected - read))


def routed() -> Doc:
    """1000 ABC on binance, to be BTC: binance lists no ABC/BTC, only ABC/ETH and ETH/BTC (and
    BTC/USDT), at bids and asks of their own: prices of 8 places in ETH and BTC."""
    account = {"name": "bn", "kind": "account", "exchange": "binance", "quote": "USDT"}
    real = {
        "name": "alice",
        "children": [
            {
                **account,
                "children": [
                    {"name": "abc", "asset": "ABC", "amount": "1000"},
                    {"name": "btc", "asset": "BTC", "amount": "0"},
                ],
            }
        ],
    }
    target = {
        "name": "alice",
        "children": [
            {"name": "bn", "weight": "100%", "children": [{"name": "btc", "asset": "BTC", "weight": "100%"}]}
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
    markets = {
        "binance": {
            "ABC/ETH": {"amount_step": "0.01", "fee_rate": "0.001"},
            "ETH/BTC": {"amount_step": "0.0001", "fee_rate": "0.001"},
            "BTC/USDT": {"amount_step": "0.00001", "fee_rate": "0.001"},
        }
    }
    return {"real": real, "target": target, "prices": prices, "markets": markets, "network": {}}


def moved() -> Doc:
    """docs/formats.md's worked example with more BTC, 8-place steps and a fee of 0.00012345 BTC: 12.3117
    BTC moved from binance to coinbase (long account names) and 12.8116 sold there."""
    market = {"amount_step": "0.00000001", "min_amount": "0.0001", "min_cost": "5", "fee_rate": "0.001"}
    real = {
        "name": "alice",
        "children": [
            {
                "name": f"{exchange}-main-account",
                "kind": "account",
                "exchange": exchange,
                "quote": "USDT",
                "children": [{"name": "btc", "asset": "BTC", "amount": amount}],
            }
            for exchange, amount in (("binance", "25.12345678"), ("coinbase", "0.5"))
        ],
    }
    prices = {
        "quote": "USD",
        "prices": {"BTC": "60000", "USDT": "1"},
        "venues": {
            "binance": {"BTC": {"bid": "59990", "ask": "60010"}},
            "coinbase": {"BTC": {"bid": "60300", "ask": "60320"}},
        },
    }
    network = {
        "withdrawals": {"binance": {"BTC": {"fee": "0.00012345", "min_amount": "0.001"}}},
        "deposits": {"coinbase": {"BTC": {}}},
    }
    return {
        "real": real,
        "target": {"name": "alice", "pool": {"BTC": "50%", "USDT": "50%"}},
        "prices": prices,
        "markets": {"binance": {"BTC/USDT": market}, "coinbase": {"BTC/USDT": market}},
        "network": network,
    }


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_routed_plans_numbers_are_never_broken(tmp_path: Path, columns: int) -> None:
    args = written(tmp_path, **routed())
    plan = json.loads(run([*args, "--json"]))
    assert {order["symbol"] for order in plan["orders"]} >= {"ABC/ETH", "ETH/BTC"}
    text = run(args, columns)
    assert_numbers_whole(text, plan, "USD", columns)
    assert "0.00329890" in text


def test_at_80_columns_a_routed_plan_stacks_amount_over_price_and_cost_over_fee(tmp_path: Path) -> None:
    text = run(written(tmp_path, **routed()), 80)
    lines = text.splitlines()
    header = next(at for at, line in enumerate(lines) if line.startswith("┏"))
    assert [cell.strip() for cell in lines[header + 1].split("┃")][4:6] == ["amount", "est. cost"]
    assert [cell.strip() for cell in lines[header + 2].split("┃")][4:7] == ["est. price", "est. fee", "why"]
    first = lines.index(next(line for line in lines if "ABC/ETH" in line))
    assert [cell.strip() for cell in lines[first].split("│")][4:7] == ["1000", "3.29890040", "cheapest_route"]
    assert [cell.strip() for cell in lines[first + 1].split("│")][4:7] == [
        "0.00329890",
        "0.00329890",
        "saving 0.00",
    ]


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_plan_with_a_transfer_keeps_its_numbers_whole(tmp_path: Path, columns: int) -> None:
    args = written(tmp_path, **moved())
    plan = json.loads(run([*args, "--json"]))
    assert plan["transfers"] and plan["orders"][0]["after_transfer"] == 0
    text = run(args, columns)
    assert_numbers_whole(text, plan, "USD", columns)


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_plain_plan_keeps_its_numbers_whole(tmp_path: Path, columns: int) -> None:
    """The examples' plan (orders in two accounts, a route, a transfer), with 51234.56789123 BTC."""
    real = json.loads((EXAMPLES / "real.json").read_text())
    btc = real["children"][0]["children"][0]["children"][0]["children"][0]
    assert btc["asset"] == "BTC"
    btc["amount"] = "51234.56789123"
    names = ("target", "prices", "markets")
    args = written(
        tmp_path, real=real, **{name: json.loads((EXAMPLES / f"{name}.json").read_text()) for name in names}
    )
    plan = json.loads(run([*args, "--json"]))
    assert plan["transfers"] and "costs" not in plan
    text = run(args, columns)
    assert_numbers_whole(text, plan, "USD", columns)


@pytest.mark.parametrize("columns", WIDTHS)
def test_futures_orders_keep_their_numbers_whole(tmp_path: Path, columns: int) -> None:
    """The futures example's position order read `60000.` over `00` at 80 columns."""
    files = {
        "real": EXAMPLES / "futures" / "real.json",
        "target": EXAMPLES / "futures" / "target.json",
        "prices": EXAMPLES / "demo" / "prices.json",
        "markets": EXAMPLES / "demo" / "markets.json",
        "contracts": EXAMPLES / "demo" / "contracts.json",
    }
    args = [part for name, path in files.items() for part in (f"--{name}", str(path))]
    plan = json.loads(run([*args, "--json"]))
    text = run(args, columns)
    expected: set[str] = set()
    for order in plan["position_orders"]:
        quote = "USDT"
        expected |= {
            str(order["phase"]),
            number(order["amount"]),
            price_text(order["est_price"], quote),
            money_text(order["est_notional"], quote),
            money_text(order["est_fee"], quote),
        }
    at = text.index("Position orders (")
    rows = [line for line in text[at:].splitlines() if line.startswith("│") and line.endswith("│")]
    read = {found for line in rows for found in NUMBER.findall(line)} - {"3"}  # the settings' leverage, 3x
    assert read == expected
