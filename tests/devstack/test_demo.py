"""`make run`'s demo: the optimizer allocates the demo portfolio across the demo bot's strategies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebal.core.strategy_targets import find_strategy_nodes, set_strategy_weights
from rebal.core.tree import parse_tree
from rebal_devstack.demo_bot import STRATEGIES
from rebal_devstack.stack import PORTFOLIO, demo_allocation, demo_settings
from rebal_optimizer.settings import OptimizerSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_allocation_is_valid_and_every_bot_strategy_has_a_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {**demo_settings(ROOT)["optimizer"], **demo_allocation(bot=True)}.items():
        monkeypatch.setenv(key, value)
    settings = OptimizerSettings()
    assert settings.allocations[PORTFOLIO].method == "risk_parity"
    base = json.loads(settings.targets.files[PORTFOLIO].read_text())
    names = [strategy.name for strategy in STRATEGIES]
    nodes, missing = find_strategy_nodes(base, names)
    assert missing == []
    # An allocation keeps crypto at 70% and splits all of it among the three (BTC, ETH, SOL one each).
    allocated = set_strategy_weights(base, nodes, {"trend": 0.2, "meanrev": 0.3, "arb": 0.5})
    tree = parse_tree(allocated, "target")
    assert tree is not None
    crypto = allocated["children"][0]["children"][0]["children"][0]
    assert crypto["name"] == "crypto" and crypto["weight"] == "70%"
    assert [c["weight"] for c in crypto["children"]] == ["0.2", "0.3", "0.5"]


def test_without_the_bot_the_target_file_stands() -> None:
    assert demo_allocation(bot=False) == {}
