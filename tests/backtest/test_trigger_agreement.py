"""The backtest and the live trigger agree on the same path: at every row, the portfolio the replay held
is read back as `rebal trigger` reads its files (parse the documents, `evaluate_trees`, the documented
JSON), and it asks for a rebalance exactly at the rows where the replay rebalanced, for the same reasons.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rebal.core.backtest import History, Run, replay
from rebal.core.backtest.start import with_cash_wallets
from rebal.core.market import Prices
from rebal.core.policy import evaluate_trees
from rebal.core.tree import parse_tree
from rebal.policy import parse_policy
from rebal.trigger import decision_json
from tests.backtest.paths import MARKETS, TARGET_DOC, history, real, target

POLICIES: dict[str, dict[str, Any]] = {
    "absolute band": {"drift_absolute": 0.05},
    "relative band, cooldown": {"drift_relative": 0.25, "cooldown": "5d"},
    "weekly in Berlin": {"schedule": "0 9 * * MON", "timezone": "Europe/Berlin"},
    "breaching scope": {"drift_absolute": 0.04, "scope": "breaching"},
    "band and cash": {"drift_absolute": 0.08, "invest_cash_above": "300"},
}
START = real({"BTC": "4", "ETH": "3", "SOL": "2", "USDT": "1500"})


def trigger_answer(
    real_doc: dict[str, Any], history: History, row: int, policy: dict[str, Any], last: int | None
) -> dict[str, object]:
    """What `rebal trigger --json` prints for these inputs (the documents as its files would hold them)."""
    prices = {
        "quote": history.quote,
        "prices": {a: repr(p) for a, p in zip(history.assets, history.prices[row].tolist(), strict=True)},
    }
    decision = evaluate_trees(
        parse_tree(orjson.loads(orjson.dumps(real_doc)), "real"),
        parse_tree(TARGET_DOC, "target"),
        Prices.parse(prices),
        policy,
        now=int(history.times[row]),
        last_rebalance=last,
    )
    return decision_json(decision)


def amounts(doc: dict[str, Any]) -> dict[str, float]:
    tree = parse_tree(doc, "real")
    return {tree.path(node): float(tree.amount[node]) for node in range(len(tree)) if tree.wallet[node]}


def holdings_by_row(run: Run, start: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """The real tree each row was decided on: the start, then what each rebalance left."""
    held, trades = [], {trade.row: trade for trade in run.trades}
    current = start
    for row in range(rows):
        held.append(current)
        if row in trades:
            after = trades[row].after
            assert after is not None
            current = after
    return held


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_row_decides_as_rebal_trigger_does(name: str) -> None:
    path = history(rows=150, seed=11)
    policy = parse_policy(POLICIES[name]).to_policy()  # read once, as the file would be
    start = with_cash_wallets(START, "USDT")
    run = replay(path, start, target(), MARKETS, policy, record=True)
    assert run.rebalances >= 2, "the path must make the policy act"
    trades = {trade.row: trade for trade in run.trades}
    last = None
    for row, real_doc in enumerate(holdings_by_row(run, start, len(path))):
        answer = trigger_answer(real_doc, path, row, policy, last)
        assert answer["rebalance"] == (row in trades), (row, answer)
        if row in trades:
            assert answer == decision_json(trades[row].decision)
            assert trades[row].before is not None
            assert amounts(trades[row].before) == amounts(real_doc)
            last = int(path.times[row])
