"""Inputs at and beyond the documented limits (docs/formats.md, "Limits"): numbers float64 cannot hold,
trees deeper than writers nest, files that are not regular or too large. Each is refused with exit 2 and
one line naming the file, where and the value, before any arithmetic; nothing hangs, nothing crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rebal.io import MAX_FILE_BYTES
from rebal_cli.app import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REBAL = Path(sys.executable).parent / "rebal"


def rebal(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REBAL), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def example(name: str) -> Any:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def written(folder: Path, name: str, document: object) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


def plan(folder: Path, *options: str, **documents: Any) -> subprocess.CompletedProcess[str]:
    """`rebal plan --json` on the worked example, with some of its documents replaced."""
    files = {
        name: written(folder, name, documents[name]) if name in documents else EXAMPLES / f"{name}.json"
        for name in ("real", "target", "prices", "markets")
    }
    return rebal(
        "plan",
        *("--real", files["real"], "--target", files["target"]),
        *("--prices", files["prices"], "--markets", files["markets"]),
        "--json",
        *options,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def btc_amount(value: object) -> Any:
    real = example("real")
    real["children"][0]["children"][0]["children"][0]["children"][0]["amount"] = value
    return real


def with_price(asset: str, value: str) -> Any:
    prices = example("prices")
    prices["prices"][asset] = value
    return prices


def with_step(value: str) -> Any:
    markets = example("markets")
    markets["binance"]["BTC/USDT"]["amount_step"] = value
    return markets


BTC = "alice/binance/spot/crypto/btc"


# -- numbers float64 cannot hold (issue 19, point 7) ----------------------------------------------


@pytest.mark.parametrize(
    ("documents", "options", "fragments"),
    [
        ({"real": btc_amount("1e308")}, (), ["real.json", BTC, "1e308", "range"]),
        ({"real": btc_amount(1e308)}, (), ["real.json", BTC, "1e+308", "range"]),
        ({"real": btc_amount("1e-400")}, (), ["real.json", BTC, "1e-400", "range"]),
        ({"prices": with_price("BTC", "1e400")}, (), ["prices.json", "prices.BTC", "1e400", "range"]),
        ({"prices": with_price("BTC", "1e-400")}, (), ["prices.json", "prices.BTC", "1e-400", "range"]),
        (
            {"markets": with_step("1e-400")},
            (),
            ["markets.json", "binance.BTC/USDT.amount_step", "1e-400", "range"],
        ),
        ({}, ("--invest", "1e400"), ["--invest", "1e400", "range"]),
        ({}, ("--invest", "1e308"), ["--invest", "1e308", "range"]),
        ({}, ("--withdraw", "1e-30"), ["--withdraw", "1e-30", "range"]),
    ],
)
def test_a_number_outside_the_range_is_refused_naming_file_path_and_value(
    tmp_path: Path, documents: dict[str, Any], options: tuple[str, ...], fragments: list[str]
) -> None:
    line = one_line(plan(tmp_path, *options, **documents))
    for fragment in fragments:
        assert fragment in line, line


def test_an_order_of_more_steps_than_a_float_counts_is_refused(tmp_path: Path) -> None:
    # 1e15 BTC within the range, but at a step of 1e-8 the sell is 1e23 steps: no float counts them.
    real = btc_amount("1000000000000000")
    markets = example("markets")
    markets["binance"]["BTC/USDT"]["amount_step"] = "0.00000001"
    line = one_line(plan(tmp_path, real=real, markets=markets))
    assert BTC in line and "2**53 steps" in line and "BTC/USDT" in line


def test_the_bounds_of_the_range_are_accepted(tmp_path: Path) -> None:
    # 1e18 of a coin priced 1e-18: worth 1 USD, half of it sold in steps of 1e9.
    real = {
        "name": "root",
        "children": [
            {
                "name": "acc",
                "kind": "account",
                "exchange": "ex",
                "quote": "USDT",
                "children": [
                    {"name": "dust", "asset": "DUST", "amount": "1000000000000000000"},
                    {"name": "cash", "asset": "USDT", "amount": "0"},
                ],
            }
        ],
    }
    target = {
        "name": "root",
        "children": [
            {
                "name": "acc",
                "weight": "1",
                "children": [
                    {"name": "dust", "asset": "DUST", "weight": "50%"},
                    {"name": "cash", "asset": "USDT", "weight": "50%"},
                ],
            }
        ],
    }
    prices = {"quote": "USD", "prices": {"DUST": "0.000000000000000001", "USDT": "1"}}
    markets = {"ex": {"DUST/USDT": {"amount_step": "1000000000"}}}
    result = plan(tmp_path, real=real, target=target, prices=prices, markets=markets)
    assert result.returncode == 0, result.stderr
    [order] = json.loads(result.stdout)["orders"]
    assert (order["side"], order["amount"], order["est_cost"]) == ("sell", "500000000000000000", "0.5")


# -- deep trees (point 9) ---------------------------------------------------------------------------


def chain(depth: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A real and a desired tree whose one wallet lies `depth` levels below the root."""
    wallet: dict[str, Any] = {"name": "btc", "asset": "BTC", "amount": "1"}
    wanted: dict[str, Any] = {"name": "btc", "asset": "BTC", "weight": "1"}
    real, target = wallet, wanted
    for level in range(depth - 1, 0, -1):
        kind = {"kind": "account", "exchange": "ex", "quote": "USDT"} if level == 1 else {}
        real = {"name": f"n{level}", **kind, "children": [real]}
        target = {"name": f"n{level}", "weight": "1", "children": [target]}
    return {"name": "root", "children": [real]}, {"name": "root", "children": [target]}


def test_a_tree_at_the_depth_limit_plans_in_every_output(tmp_path: Path) -> None:
    real, target = chain(100)
    prices = {"quote": "USD", "prices": {"BTC": "10", "USDT": "1"}}
    files = (
        *("--real", written(tmp_path, "real", real), "--target", written(tmp_path, "target", target)),
        *("--prices", written(tmp_path, "prices", prices)),
    )
    readable = rebal("plan", *files)
    assert readable.returncode == 0, readable.stderr[-2000:]
    assert "Orders (0)" in readable.stdout
    result = rebal("plan", *files, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    node, depth = json.loads(result.stdout)["diff"], 0
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert (depth, node["path"].count("/"), node["current_amount"]) == (100, 100, "1")


def test_a_tree_deeper_than_the_limit_is_refused_with_one_line(tmp_path: Path) -> None:
    real, target = chain(150)
    prices = {"quote": "USD", "prices": {"BTC": "10", "USDT": "1"}}
    result = rebal(
        "plan",
        *("--real", written(tmp_path, "real", real), "--target", written(tmp_path, "target", target)),
        *("--prices", written(tmp_path, "prices", prices), "--json"),
    )
    line = one_line(result)
    assert "real.json" in line and "deeper than 100 levels" in line and "root/n1/n2" in line


# -- files that are not regular or too large (point 10) --------------------------------------------


def test_a_fifo_is_refused_instead_of_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "real.json"
    os.mkfifo(fifo)
    line = one_line(
        rebal(
            "plan",
            *("--real", fifo, "--target", EXAMPLES / "target.json"),
            *("--prices", EXAMPLES / "prices.json", "--json"),
            timeout=20,
        )
    )
    assert str(fifo) in line and "FIFO" in line


@pytest.mark.parametrize("given", ["real", "prices"])
def test_a_directory_is_refused_in_one_line_not_a_traceback(tmp_path: Path, given: str) -> None:
    files = {name: EXAMPLES / f"{name}.json" for name in ("real", "target", "prices")}
    files[given] = tmp_path  # Linux opens a directory for reading: the file object then refused it
    done = rebal("plan", *(f"--{name}={path}" for name, path in files.items()), "--json")
    assert done.returncode == 2
    assert one_line(done) == f"error: {tmp_path}: is a directory, expected a file"


def test_a_device_is_refused_instead_of_read_until_memory_runs_out() -> None:
    line = one_line(
        rebal(
            "plan",
            *("--real", EXAMPLES / "real.json", "--target", EXAMPLES / "target.json"),
            *("--prices", "/dev/zero", "--json"),
            timeout=20,
        )
    )
    assert "/dev/zero" in line and "character device" in line


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "real.json"
    with huge.open("wb") as file:  # sparse: the size is there, the disk blocks are not
        file.truncate(MAX_FILE_BYTES + 1)
    line = one_line(
        rebal(
            "plan",
            *("--real", huge, "--target", EXAMPLES / "target.json"),
            *("--prices", EXAMPLES / "prices.json", "--json"),
            timeout=20,
        )
    )
    assert str(huge) in line and "1024 MiB" in line


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("date,return\n12345678901234567890,0.01\n", ["line 2, column date", "12345678901234567890"]),
        ("date,return\n2024-01-01," + "1" * (130 * 1024) + "\n", ["line 2", "field larger than field limit"]),
    ],
)
def test_a_returns_file_the_parsers_cannot_hold_is_refused(
    tmp_path: Path, content: str, fragments: list[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = CliRunner().invoke(
        app,
        ["backfill", str(bad), "--portfolio", "fund", "--strategy", "s", "--nats-url", "nats://127.0.0.1:1"],
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    line = result.stderr.replace("\n", "")
    assert line.startswith(f"error: {bad}: ")
    for fragment in fragments:
        assert fragment in line


def test_a_returns_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "returns.csv"
    os.mkfifo(fifo)
    args = ("backfill", fifo, "--portfolio", "fund", "--strategy", "s", "--nats-url", "nats://127.0.0.1:1")
    line = one_line(rebal(*args, timeout=20))
    assert str(fifo) in line and "FIFO" in line
