"""`rebal plan --network` as a user calls it: the worked example of docs/formats.md ("Where to trade"),
its blocks (marked ``<!-- where: NAME -->``) run as they are written, and a bad network file refused in
one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REBAL = Path(sys.executable).parent / "rebal"
DOC = (ROOT / "docs" / "formats.md").read_text()
BLOCKS: dict[str, Any] = {
    name: json.loads(text)
    for name, text in re.findall(r"<!-- where: ([\w-]+) -->\n```json\n(.*?)\n```", DOC, flags=re.DOTALL)
}
INPUTS = ("real", "target", "prices", "markets", "network")


def network(fee: str) -> Any:
    """The documented network file with binance's BTC-network fee set to `fee`."""
    doc = json.loads(json.dumps(BLOCKS["network"]))
    doc["withdrawals"]["binance"]["BTC"]["networks"]["BTC"]["fee"] = fee
    return doc


def plan(
    tmp_path: Path, *extra: str, net: Any = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args: list[str] = ["plan"]
    for name in INPUTS:
        doc = BLOCKS[name] if name != "network" or net is None else net
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
    assert set(BLOCKS) == {*INPUTS, "plan"}
    done = plan(tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    del out["diff"]
    assert out == BLOCKS["plan"]
    # What the document says of it: BSC is cheaper, but coinbase takes no BTC deposits on it; the sell
    # waits for the transfer.
    (transfer,) = out["transfers"]
    assert (transfer["asset"], transfer["network"], transfer["fee"]) == ("BTC", "BTC", "0.0002")
    assert out["orders"][0]["after_transfer"] == 0
    # The tables for people show the same plan, money to the cent (it printed 232.2210465).
    shown = plan(tmp_path, env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "to_best_bid" in shown.stdout and "232.22 " in shown.stdout and "232.2210465" not in shown.stdout
    assert "-227.65" in shown.stdout


def test_a_dear_network_leaves_the_btc_where_it_is_and_sells_it_in_place(tmp_path: Path) -> None:
    out = json.loads(plan(tmp_path, "--json", net=network("0.005")).stdout)
    assert out["transfers"] == []
    assert [(o["account"], o["amount"], o["reason"], o["est_saving"]) for o in out["orders"]] == [
        ("alice/binance", "0.5", "in_place", "-38.71125"),
        ("alice/coinbase", "0.5", "best_bid", "116.13375"),
    ]


def test_a_bad_network_file_is_refused_in_one_line_naming_the_file_and_the_field(tmp_path: Path) -> None:
    done = plan(tmp_path, "--json", net='{"withdrawals": {"binance": {"BTC": {"fee": "-1"}}}}')
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "network.json" in done.stderr and "withdrawals.binance.BTC.fee" in done.stderr


def test_the_documented_example_buy_only_sells_nothing_with_or_without_the_network(tmp_path: Path) -> None:
    # Alice holds no dollars: a buy-only rebalance has nothing to spend and sells nothing, where the pool
    # would sell 1 BTC (with the network, 0.9998 after a move), as with plain weights.
    with_network = plan(tmp_path, "--json", "--buy-only")
    args = [str(arg) for arg in with_network.args]
    at = args.index("--network")
    without = subprocess.run(
        args[:at] + args[at + 2 :], capture_output=True, text=True, timeout=120, check=False
    )
    for done in (with_network, without):
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert (out["orders"], out["transfers"], out["skipped"]) == ([], [], [])
