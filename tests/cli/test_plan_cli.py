"""`rebal plan` and `rebal tree show` as a user calls them: the installed entry point, files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REBAL = Path(sys.executable).parent / "rebal"
NODE_KEYS = {
    "path",
    "name",
    "current_value",
    "desired_value",
    "diff_value",
    "current_weight",
    "desired_weight",
    "operation",
    "children",
}
WALLET_KEYS = {"asset", "current_amount", "desired_amount", "diff_amount", "locked_amount"}
ORDER_KEYS = {"account", "exchange", "symbol", "side", "amount", "est_price", "est_cost", "phase"}


def rebal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REBAL), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def plan_args(
    real: Path = EXAMPLES / "real.json",
    target: Path = EXAMPLES / "target.json",
    prices: Path = EXAMPLES / "prices.json",
) -> list[str | Path]:
    return [
        "plan",
        "--real",
        real,
        "--target",
        target,
        "--prices",
        prices,
        "--markets",
        EXAMPLES / "markets.json",
    ]


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_the_entry_point_is_installed_in_the_venv() -> None:
    assert REBAL.exists()
    assert rebal("--help").returncode == 0


def test_plan_json_follows_the_contract() -> None:
    result = rebal(*plan_args(), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"diff", "orders", "transfers", "skipped"}

    def walk(node: dict) -> None:
        assert set(node) >= NODE_KEYS
        if node["children"]:
            assert not WALLET_KEYS & set(node)
        for child in node["children"]:
            walk(child)
        if "asset" in node:
            assert set(node) >= WALLET_KEYS

    walk(out["diff"])
    assert out["orders"] and all(set(o) >= ORDER_KEYS for o in out["orders"])
    assert all({"path", "symbol", "side", "amount", "reason"} <= set(s) for s in out["skipped"])
    assert all({"asset", "from", "to", "amount"} <= set(t) for t in out["transfers"])
    # The worked example of docs/formats.md.
    first = out["orders"][0]
    assert (first["symbol"], first["side"], first["amount"], first["phase"]) == (
        "BTC/USDT",
        "sell",
        "0.15304",
        1,
    )
    assert [(o["symbol"], o["side"], o["amount"]) for o in out["orders"]][2:4] == [
        ("XYZ/BTC", "sell", "100"),
        ("BTC/USDT", "sell", "0.00083"),
    ]
    assert out["transfers"][0]["amount"] == "10530"
    assert out["skipped"] == [
        {
            "path": "alice/broker/cash-account/stocks/spy",
            "symbol": "SPY/USD",
            "side": "buy",
            "amount": "0.2192",
            "reason": "below_step",
        }
    ]


def test_the_same_input_gives_byte_identical_output() -> None:
    first, second = rebal(*plan_args(), "--json"), rebal(*plan_args(), "--json")
    assert first.stdout == second.stdout and first.stdout


def test_yaml_input_gives_the_same_plan(tmp_path: Path) -> None:
    converted = []
    for name in ("real", "target", "prices"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(json.loads((EXAMPLES / f"{name}.json").read_text())))
        converted.append(path)
    assert rebal(*plan_args(*converted), "--json").stdout == rebal(*plan_args(), "--json").stdout


def test_readable_output_shows_the_tree_and_the_orders() -> None:
    result = rebal(*plan_args())
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout and "Orders (6)" in result.stdout and "BTC/USDT" in result.stdout
    assert "Transfers (1)" in result.stdout and "below_step" in result.stdout


def bad_real(tmp_path: Path, tree: object) -> Path:
    return write(tmp_path / "real.json", tree)


def account_with(*wallets: dict) -> dict:
    return {
        "name": "root",
        "children": [
            {"name": "acc", "kind": "account", "exchange": "ex", "quote": "USDT", "children": list(wallets)}
        ],
    }


TARGET = {"name": "root", "children": [{"name": "acc", "weight": 1}]}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("malformed", ["real.json", "malformed JSON"]),
        ("negative", ["real.json", "root/acc/x", "negative amount"]),
        ("duplicate", ["real.json", "root/acc/x", "duplicate sibling name"]),
        ("lock", ["real.json", "root/acc/x", "over 100%"]),
        ("price", ["prices.json", "no price for asset DOGE", "root/acc/x"]),
        ("weights", ["target.json", "root", "sum to 90%"]),
        ("missing", ["nope.json", "file not found"]),
        ("yaml", ["real.yaml", "malformed YAML"]),
        ("outside", ["real.json", "root/x", "not under a node with kind 'account'"]),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_file_and_node(
    tmp_path: Path, case: str, expected: list[str]
) -> None:
    prices = write(tmp_path / "prices.json", {"quote": "USD", "prices": {"USDT": "1", "BTC": "10"}})
    target = write(tmp_path / "target.json", TARGET)
    real = tmp_path / "real.json"
    if case == "malformed":
        real.write_text('{"name": "root", "children": [')
    elif case == "negative":
        write(real, account_with({"name": "x", "asset": "BTC", "amount": "-1"}))
    elif case == "duplicate":
        write(
            real,
            account_with(
                {"name": "x", "asset": "BTC", "amount": "1"}, {"name": "x", "asset": "BTC", "amount": "2"}
            ),
        )
    elif case == "lock":
        write(
            real,
            account_with(
                {
                    "name": "x",
                    "asset": "BTC",
                    "amount": "1",
                    "locks": [{"owner": "bot", "share": "0.6"}, {"owner": "b2", "share": "0.5"}],
                }
            ),
        )
    elif case == "price":
        write(real, account_with({"name": "x", "asset": "DOGE", "amount": "1"}))
    elif case == "weights":
        write(real, account_with({"name": "x", "asset": "BTC", "amount": "1"}))
        write(
            target,
            {
                "name": "root",
                "children": [{"name": "acc", "weight": "50%"}, {"name": "other", "weight": "40%"}],
            },
        )
    elif case == "missing":
        real = tmp_path / "nope.json"
    elif case == "yaml":
        real = tmp_path / "real.yaml"
        real.write_text("name: root\nchildren: [\n  - {name: x\n")
    elif case == "outside":
        write(real, {"name": "root", "children": [{"name": "x", "asset": "BTC", "amount": "1"}]})
    result = rebal("plan", "--real", real, "--target", target, "--prices", prices, "--json")
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--invest", "10", "--withdraw", "5"], "cannot be used together"),
        (["--invest", "ten"], "--invest"),
        (["--withdraw", "-5"], "--withdraw"),
        (["--band", "-0.1"], "--band"),
        (["--band", "abc"], "--band"),
        (["--withdraw", "1000000"], "exceeds"),
    ],
)
def test_bad_options_exit_2(extra: list[str], fragment: str) -> None:
    result = rebal(*plan_args(), *extra)
    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_invest_grows_the_portfolio() -> None:
    result = rebal(*plan_args(), "--invest", "1200", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["diff"]["desired_value"] == "60000"


def test_tree_show_whole_and_per_owner() -> None:
    whole = rebal("tree", "show", EXAMPLES / "real.json", "--json")
    assert whole.returncode == 0, whole.stderr
    btc = json.loads(whole.stdout)["children"][0]["children"][0]["children"][0]["children"][0]
    assert (btc["amount"], btc["locked_amount"], btc["free_amount"]) == ("0.5", "0.1", "0.4")

    owner = rebal("tree", "show", EXAMPLES / "real.json", "--owner", "arb-bot", "--json")
    assert owner.returncode == 0, owner.stderr
    virtual = json.loads(owner.stdout)

    def leaves(node: dict) -> list[tuple[str, str]]:
        if "asset" in node:
            return [(node["asset"], node["amount"])]
        return [leaf for child in node.get("children", []) for leaf in leaves(child)]

    assert leaves(virtual) == [("BTC", "0.1"), ("USDT", "1000")]
    assert "broker" not in owner.stdout

    readable = rebal("tree", "show", EXAMPLES / "real.json", "--owner", "arb-bot")
    assert readable.returncode == 0 and "BTC" in readable.stdout and "SPY" not in readable.stdout

    nobody = rebal("tree", "show", EXAMPLES / "real.json", "--owner", "ghost")
    assert nobody.returncode == 2 and "ghost" in nobody.stderr


# -- futures accounts: the position orders (docs/futures.md) ----------------------------------------------

FUTURES = [
    "plan",
    *("--real", EXAMPLES / "futures" / "real.json", "--target", EXAMPLES / "futures" / "target.json"),
    *("--prices", EXAMPLES / "demo" / "prices.json"),
]


def test_a_futures_account_is_planned_with_its_contracts() -> None:
    """5240 USDT long BTC at 3x on a 10,000 USDT account, BTC marked at the prices file's 60000: one opening
    order of 0.087 after the symbol's settings (it showed no order at all before --contracts)."""
    done = rebal(*FUTURES, "--contracts", EXAMPLES / "demo" / "contracts.json", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["orders"], plan["skipped"]) == ([], [])
    assert plan["position_orders"] == [
        {
            "account": "demo/paper/futures",
            "exchange": "paper",
            "symbol": "BTC/USDT:USDT",
            "side": "buy",
            "amount": "0.087",
            "reduce_only": False,
            "est_price": "60000",
            "est_notional": "5220",
            "est_fee": "2.61",
            "phase": 2,
        }
    ]
    assert plan["position_settings"] == [
        {
            "account": "demo/paper/futures",
            "exchange": "paper",
            "symbol": "BTC/USDT:USDT",
            "leverage": 3,
            "margin_mode": "cross",
        }
    ]
    shown = rebal(*FUTURES, "--contracts", EXAMPLES / "demo" / "contracts.json")
    assert shown.returncode == 0, shown.stderr
    assert "Position orders (1)" in shown.stdout and "Position settings (1)" in shown.stdout


def test_a_position_without_its_contract_is_a_skip_not_silence() -> None:
    done = rebal(*FUTURES, "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["position_orders"] == []
    assert plan["skipped"] == [
        {
            "path": "demo/paper/futures",
            "symbol": "BTC/USDT:USDT",
            "side": "buy",
            "amount": "0",
            "reason": "no_contract",
        }
    ]


def test_a_spot_plan_keeps_the_documented_keys() -> None:
    done = rebal(*plan_args(), "--contracts", EXAMPLES / "demo" / "contracts.json", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)) == ["diff", "orders", "skipped", "transfers"]


def test_a_bad_contracts_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "contracts.json"
    bad.write_text('{"paper": {"BTC/USD:BTC": {"amount_step": "1"}}}')
    done = rebal(*FUTURES, "--contracts", bad)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: paper.BTC/USD:BTC: a contract must be a linear perpetual named BASE/QUOTE:QUOTE"
    ]


def test_a_target_asset_no_market_reaches_exits_2_naming_it_before_any_trade(tmp_path: Path) -> None:
    """Issue 11, defect 5, as the operator meets it: the plan sold other holdings to fund a buy that could
    never happen; now the target file is named with the asset and the account, and nothing is planned."""
    real = write(
        tmp_path / "real.json",
        {
            "name": "root",
            "children": [
                {
                    "name": "acc",
                    "kind": "account",
                    "exchange": "ex",
                    "quote": "USDT",
                    "children": [
                        {"name": "btc", "asset": "BTC", "amount": "1"},
                        {"name": "usdt", "asset": "USDT", "amount": "0"},
                    ],
                }
            ],
        },
    )
    target = write(
        tmp_path / "target.json",
        {
            "name": "root",
            "children": [
                {
                    "name": "acc",
                    "weight": 1,
                    "children": [
                        {"name": "btc", "asset": "BTC", "weight": 0.5},
                        {"name": "sol", "asset": "SOL", "weight": 0.5},
                    ],
                }
            ],
        },
    )
    prices = write(tmp_path / "prices.json", {"quote": "USDT", "prices": {"BTC": "100", "SOL": "10"}})
    markets = write(
        tmp_path / "markets.json",
        {"ex": {"BTC/USDT": {"amount_step": "0.0001", "min_amount": "0", "min_cost": "0", "fee_rate": "0"}}},
    )
    result = rebal(
        "plan", "--real", real, "--target", target, "--prices", prices, "--markets", markets, "--json"
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error: {target}: root/acc/sol: no market path for SOL from USDT on ex: account root/acc can never"
        " buy it (list a market for it, or leave it out of the target)"
    )
