"""Writes history.csv and strategies.csv (generated, not market data). Run it again to reproduce both:

    .venv/bin/python examples/backtest/generate.py

history.csv: six years of daily closes (2019-2024, UTC midnights) for BTC, ETH, SOL, LINK and PAXG:
geometric Brownian motion with one market factor and regime changes (bull, crash, sideways, recovery),
seed 15. strategies.csv: four years of four strategies' daily returns (trend, meanrev, arb, carry; seed
16) whose means and volatilities change halfway, for the optimizer's walk forward.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

SEED = 15
START, END = date(2019, 1, 1), date(2024, 12, 31)
ASSETS = ("BTC", "ETH", "SOL", "LINK", "PAXG")
FIRST = np.array([3800.0, 140.0, 2.0, 0.35, 1280.0])
BETA = np.array([1.0, 1.2, 1.5, 1.3, -0.05])  # exposure to the market factor
OWN_VOL = np.array([0.35, 0.45, 0.80, 0.70, 0.12])  # idiosyncratic, annualised
# Regimes: (days, market drift a year, market volatility a year).
REGIMES = (
    (400, 0.9, 0.55),
    (120, -1.6, 0.95),
    (500, 0.1, 0.35),
    (450, 1.1, 0.6),
    (300, -0.4, 0.5),
    (422, 0.5, 0.45),
)


def main() -> None:
    rng = np.random.default_rng(SEED)
    days = (END - START).days + 1
    assert sum(length for length, _, _ in REGIMES) == days
    step = 1 / 365.25
    market = np.concatenate(
        [rng.normal((mu - vol**2 / 2) * step, vol * np.sqrt(step), length) for length, mu, vol in REGIMES]
    )
    own = rng.normal(-(OWN_VOL**2) / 2 * step, OWN_VOL * np.sqrt(step), (days, len(ASSETS)))
    gold = np.zeros((days, len(ASSETS)))
    gold[:, -1] = 0.05 * step  # PAXG drifts like gold, barely with the market
    log_returns = market[:, None] * BETA + own + gold
    log_returns[0] = 0.0
    prices = FIRST * np.exp(np.cumsum(log_returns, axis=0))
    lines = ["date," + ",".join(ASSETS)]
    for k in range(days):
        day = datetime.combine(START + timedelta(days=k), datetime.min.time(), UTC).date().isoformat()
        lines.append(day + "," + ",".join(f"{value:.6g}" for value in prices[k]))
    (Path(__file__).parent / "history.csv").write_text("\n".join(lines) + "\n")
    strategies()


STRATEGIES = ("trend", "meanrev", "arb", "carry")
# Per half: daily mean and volatility of each strategy.
HALVES = (
    (np.array([0.0012, 0.0004, 0.0003, 0.0005]), np.array([0.025, 0.012, 0.004, 0.010])),
    (np.array([-0.0002, 0.0006, 0.0002, 0.0001]), np.array([0.030, 0.010, 0.005, 0.015])),
)


def strategies() -> None:
    rng = np.random.default_rng(SEED + 1)
    days = 4 * 365
    common = rng.normal(0, 1, days)
    rows = []
    for half, (mean, vol) in enumerate(HALVES):
        part = slice(half * days // 2, (half + 1) * days // 2)
        noise = rng.normal(0, 1, (days // 2, len(STRATEGIES)))
        mixed = 0.4 * common[part, None] + np.sqrt(1 - 0.4**2) * noise
        rows.append(mean + vol * mixed)
    returns = np.concatenate(rows)
    lines = ["date," + ",".join(STRATEGIES)]
    for k in range(days):
        day = (date(2021, 1, 1) + timedelta(days=k)).isoformat()
        lines.append(day + "," + ",".join(f"{value:.6f}" for value in returns[k]))
    (Path(__file__).parent / "strategies.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
