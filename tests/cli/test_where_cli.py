"""`rebal plan --network` as a user calls it: the worked example of docs/formats.md ("Where to trade"),
byte for byte, and a bad network file refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REBAL = Path(sys.executable).parent / "rebal"
Doc = dict[str, Any]

REAL = {
    "name": "alice",
    "children": [
        {
            "name": "binance",
            "kind": "account",
            "exchange": "binance",
            "quote": "USDT",
            "children": [{"name": "btc", "asset": "BTC", "amount": "1.5"}],
        },
        {
            "name": "coinbase",
            "kind": "account",
            "exchange": "coinbase",
            "quote": "USDT",
            "children": [{"name": "btc", "asset": "BTC", "amount": "0.5"}],
        },
    ],
}
TARGET = {"name": "alice", "pool": {"BTC": "50%", "USDT": "50%"}}
PRICES = {
    "quote": "USD",
    "prices": {"BTC": "60000", "USDT": "1"},
    "venues": {
        "binance": {"BTC": {"bid": "59990", "ask": "60010"}},
        "coinbase": {"BTC": {"bid": "60300", "ask": "60320"}},
    },
}
MARKET = {"amount_step": "0.0001", "min_amount": "0.0001", "min_cost": "5", "fee_rate": "0.001"}
MARKETS = {"binance": {"BTC/USDT": MARKET}, "coinbase": {"BTC/USDT": MARKET}}


def network(fee: str) -> Doc:
    return {
        "withdrawals": {
            "binance": {
                "BTC": {
                    "networks": {
                        "BTC": {"fee": fee, "min_amount": "0.001"},
                        "BSC": {"fee": "0.00001", "min_amount": "0.001"},
                    }
                }
            }
        },
        "deposits": {
            "coinbase": {"BTC": {"networks": {"BTC": {"enabled": True}, "BSC": {"enabled": False}}}}
        },
    }


def plan(
    tmp_path: Path, net: Doc | str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    files = {"real": REAL, "target": TARGET, "prices": PRICES, "markets": MARKETS, "network": net}
    args: list[str] = ["plan"]
    for name, doc in files.items():
        path = tmp_path / f"{name}.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        args += [f"--{name}", str(path)]
    return subprocess.run(
        [str(REBAL), *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_documented_example_moves_btc_to_the_better_bid_and_sells_it_after_the_transfer(
    tmp_path: Path,
) -> None:
    done = plan(tmp_path, network("0.0002"), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["orders"] == [
        {
            "account": "alice/coinbase",
            "exchange": "coinbase",
            "symbol": "BTC/USDT",
            "side": "sell",
            "amount": "0.9998",
            "est_price": "60300",
            "est_cost": "60287.94",
            "est_fee": "60.28794",
            "phase": 1,
            "reason": "best_bid",
            "est_saving": "232.2210465",
            "after_transfer": 0,
        }
    ]
    # BSC is cheaper, but coinbase takes no BTC deposits on it.
    assert out["transfers"] == [
        {
            "asset": "BTC",
            "from": "alice/binance",
            "to": "alice/coinbase",
            "amount": "0.5",
            "est_value": "30000",
            "network": "BTC",
            "fee": "0.0002",
            "reason": "to_best_bid",
            "est_saving": "-12",
        }
    ]
    assert out["skipped"] == []
    assert out["costs"] == {
        "fees": "60.28794",
        "spread": "-299.94",
        "withdrawal_fees": "12",
        "total": "-227.65206",
    }
    # The tables for people show the same plan, money to the cent (it printed 232.2210465).
    shown = plan(tmp_path, network("0.0002"), env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "to_best_bid" in shown.stdout and "232.22 " in shown.stdout and "232.2210465" not in shown.stdout
    assert "-227.65" in shown.stdout


def test_a_dear_network_leaves_the_btc_where_it_is_and_sells_it_in_place(tmp_path: Path) -> None:
    out = json.loads(plan(tmp_path, network("0.005"), "--json").stdout)
    assert out["transfers"] == []
    assert [(o["account"], o["amount"], o["reason"], o["est_saving"]) for o in out["orders"]] == [
        ("alice/binance", "0.5", "in_place", "-38.71125"),
        ("alice/coinbase", "0.5", "best_bid", "116.13375"),
    ]


def test_a_bad_network_file_is_refused_in_one_line_naming_the_file_and_the_field(tmp_path: Path) -> None:
    done = plan(tmp_path, '{"withdrawals": {"binance": {"BTC": {"fee": "-1"}}}}', "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "network.json" in done.stderr and "withdrawals.binance.BTC.fee" in done.stderr
