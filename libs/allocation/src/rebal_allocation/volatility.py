"""Volatility targeting and the `portfolio_config.json` document.

Leverage is ``target volatility / realised annualised volatility`` of the weighted portfolio, capped at
``max_leverage``; a portfolio with no realised volatility gets the cap. Realised volatility is the sample
standard deviation (``ddof=1``) of the portfolio's period returns ``R w`` (weights held fixed) over the
returns given, times ``sqrt(periods_per_year)`` — the convention of ``rebal.core.performance``.

``portfolio_config`` returns the document that tools reading ``portfolio_config.json`` expect; the keys
chosen here (all numbers are JSON floats, the weights by strategy id, sorted):

    {
      "account_value": 100000.0,       # the capital the allocation applies to, in the account's currency
      "weights": {"arb": 0.5, "trend": 0.5},   # fully invested, long-only, sum 1 (before leverage)
      "realised_volatility": 0.2,     # annualised, of the weighted portfolio
      "target_volatility": 0.1,       # annualised
      "leverage": 0.5                 # min(target / realised, max_leverage); notional = value * leverage
    }
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rebal.core.performance import annualised_volatility

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class PortfolioConfig:
    account_value: float
    weights: dict[str, float]
    realised_volatility: float
    target_volatility: float
    leverage: float


def leverage_for(realised_volatility: float, target_volatility: float, max_leverage: float) -> float:
    if target_volatility < 0 or max_leverage <= 0:
        raise ValueError("the target volatility must be non-negative and the leverage cap positive")
    if not math.isfinite(realised_volatility) or realised_volatility <= 0:
        return max_leverage
    return min(target_volatility / realised_volatility, max_leverage)


def target_volatility(
    names: list[str],
    weights: Floats,
    returns: Floats,
    account_value: float,
    target: float,
    max_leverage: float,
    periods_per_year: float = 365.0,
) -> PortfolioConfig:
    """The allocation scaled to the volatility target (see the module doc)."""
    if len(names) != weights.shape[0] or returns.shape[1] != weights.shape[0]:
        raise ValueError("one name and one return column per weight")
    realised = float(annualised_volatility(returns @ weights, periods_per_year))
    return PortfolioConfig(
        account_value=account_value,
        weights={name: float(weight) for name, weight in sorted(zip(names, weights, strict=True))},
        realised_volatility=realised,
        target_volatility=target,
        leverage=leverage_for(realised, target, max_leverage),
    )


def portfolio_config(config: PortfolioConfig) -> dict[str, object]:
    """The `portfolio_config.json` document (keys in the module doc)."""
    return {
        "account_value": config.account_value,
        "weights": dict(config.weights),
        "realised_volatility": config.realised_volatility,
        "target_volatility": config.target_volatility,
        "leverage": config.leverage,
    }
