"""docs/backtest.md's worked example, reproduced: the files in the document, run through `rebal
backtest`, print exactly the JSON block that follows them (money to the cent)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from typer.testing import CliRunner

from rebal_cli.app import app

DOC = (Path(__file__).resolve().parents[2] / "docs" / "backtest.md").read_text()
FILES = {
    "--prices": "history.csv",
    "--target": "target.json",
    "--markets": "markets.json",
    "--policy": "band.toml",
}
BLOCKS = dict(re.findall(r"<!-- backtest-example: ([\w.-]+) -->\n```\w*\n(.*?)\n```", DOC, flags=re.DOTALL))


def test_the_worked_example_prints_the_documented_figures(tmp_path: Path) -> None:
    for name in FILES.values():
        (tmp_path / name).write_text(BLOCKS[name] + "\n")
    files = {option: str(tmp_path / name) for option, name in FILES.items()}
    args = [part for option, path in files.items() for part in (option, path)]
    result = CliRunner().invoke(app, ["backtest", *args, "--initial", "10000", "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == orjson.loads(BLOCKS["output"])


def test_the_worked_examples_trade_is_the_one_the_document_describes(tmp_path: Path) -> None:
    """The rebalance on 3 January: 0.0125 BTC sold, 0.2736 ETH bought, 1,079.04016 USDT left."""
    from rebal.core.backtest import History, replay
    from rebal.core.backtest.start import at_target
    from rebal.core.market import Markets
    from rebal.core.policy import Bands, Policy
    from rebal.core.tree import parse_tree
    from rebal_cli.backtest_files import read_history

    (tmp_path / "history.csv").write_text(BLOCKS["history.csv"] + "\n")
    table = read_history(tmp_path / "history.csv")
    history = History(table.times, table.assets, table.prices, "USDT")
    target_doc = orjson.loads(BLOCKS["target.json"])
    target = parse_tree(target_doc, "target")
    start = at_target(target_doc, target, 10_000, history.row_prices(0), "binance")
    run = replay(
        history,
        start,
        target,
        Markets.parse(orjson.loads(BLOCKS["markets.json"])),
        Policy(bands=Bands(absolute=0.05)),
        last_rebalance=int(history.times[0]),
        record=True,
    )
    (trade,) = run.trades
    assert trade.row == 2 and trade.after is not None
    held = {w["asset"]: w["amount"] for w in trade.after["children"][0]["children"]}
    assert float(held["BTC"]) == 0.1125
    assert float(held["ETH"]) == 0.2736 + 2
    assert round(float(held["USDT"]), 8) == 1079.04016
    assert round(float(run.fees.sum()), 8) == 1.11984
