"""`make run`'s demo: the optimizer allocates the demo portfolio across the demo bot's strategies."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats
import numpy as np
import pytest
from faststream.nats import NatsBroker

from rebal.core.strategy_stats import Series, strategy_stats
from rebal.core.strategy_targets import find_strategy_nodes, set_strategy_weights
from rebal.core.tree import parse_tree
from rebal.events import StrategyReturnReported
from rebal_devstack.demo_bot import DAY, SIMULATION_START, STRATEGIES, reports, run, simulated_day
from rebal_devstack.stack import PORTFOLIO, demo_allocation, demo_settings
from rebal_optimizer.settings import OptimizerSettings
from tests.messaging import started

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


MINUTE_OF_DAYS = 60  # a minute of `make run`'s bot: one simulated day a second


def test_a_minute_of_the_demo_bot_gives_plausible_daily_statistics() -> None:
    # The days the bot reports in its first minute, through the tracker's statistics: daily data, so a
    # volatility of a few percent to tens of percent a year and a Sharpe near 1 (it reported a return
    # every second, annualised to 827% volatility and Sharpes of +132, -72 and 576).
    equity: dict[str, Decimal] = {}
    events = []
    for index in range(MINUTE_OF_DAYS):
        events += reports(simulated_day(index), equity, portfolio=PORTFOLIO, now=datetime.now(UTC))
    series = [
        Series(
            name,
            np.array([e.timestamp.timestamp() for e in events if e.strategy_id == name]),
            np.array([float(e.period_return) for e in events if e.strategy_id == name]),
        )
        for name in sorted({e.strategy_id for e in events})
    ]
    for stats in strategy_stats(series, []):
        figures = stats.performance
        assert figures.frequency == "daily" and figures.periods == MINUTE_OF_DAYS
        assert 0.005 < figures.annualised_volatility < 1.0, (stats.strategy_id, figures)
        assert abs(figures.sharpe) < 6.0, (stats.strategy_id, figures)
        # Sixty days are not a year: no annualised return, and the reason instead.
        assert math.isnan(figures.annualised_return)
        assert figures.not_annualised["annualised_return"].startswith("needs a year of returns")
    assert [e.timestamp for e in events[:: len(STRATEGIES)][:2]] == [SIMULATION_START, SIMULATION_START + DAY]


@pytest.mark.asyncio
async def test_the_bot_reports_simulated_days_and_a_restart_resumes_after_the_last(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    async with started(broker):
        for _ in range(2):
            stop = asyncio.Event()
            running = asyncio.create_task(run(nats_url, interval=0.05, portfolio=PORTFOLIO, stop=stop))
            await asyncio.sleep(0.6)
            stop.set()
            assert await running > 0
        client = await nats.connect(nats_url)
        try:
            # Every strategy's days follow each other from the start, across the restart: nothing again.
            js = client.jetstream()
            subscription = await js.pull_subscribe(StrategyReturnReported.topic.subject("trend"), "check")
            messages = await subscription.fetch(1000, timeout=2)
            days = [StrategyReturnReported.model_validate_json(m.data).timestamp for m in messages]
        finally:
            await client.drain()
    assert days == [SIMULATION_START + i * DAY for i in range(len(days))]
    assert len(days) >= 4
