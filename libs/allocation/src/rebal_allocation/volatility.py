"""Volatility targeting and the `portfolio_config.json` document.

Leverage is ``target volatility / realised annualised volatility`` of the weighted portfolio, capped at
``max_leverage``; a portfolio with no realised volatility gets the cap. Realised volatility is the sample
standard deviation (``ddof=1``) of the portfolio's period returns ``R w`` (weights held fixed) over the
returns given, times ``sqrt(periods_per_year)`` — the convention of ``rebal.core.performance``.

``portfolio_config`` returns the document that tools reading ``portfolio_config.json`` expect (the strategy
manager's workflow, docs/strategies.md): exactly these keys first, in this order (extra keys may follow;
none do today), volatilities in percent:

    {
      "account_value": 10000.0,                 # the capital the allocation applies to
      "weights": {"btc_ti_24h": 0.6, "btc_ti_24h_short": 0.4},  # by strategy id, sorted; sum 1, long-only
      "ann_volatility_pct": 11.45,              # the weighted portfolio's annualised volatility, percent
      "target_vol_pct": 30.0,                   # the target, percent
      "leverage": 2.62                          # min(target / realised, max_leverage)
    }

Numbers are JSON floats rounded to ``DIGITS`` decimals (so 0.3 x 100 is 30.0, not 30.000000000000004).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rebal.core.performance import DAYS_PER_YEAR, annualised_volatility

Floats = NDArray[np.float64]
DIGITS = 10  # decimals kept in portfolio_config.json: float noise gone, precision far below any use


@dataclass(frozen=True)
class PortfolioConfig:
    account_value: float
    weights: dict[str, float]
    realised_volatility: float
    target_volatility: float
    leverage: float


def leverage_for(realised_volatility: float, target_volatility: float, max_leverage: float) -> float:
    """``target / realised`` at most ``max_leverage`` (``math.inf``: no cap); a portfolio with no realised
    volatility gets the cap, and with no cap either, a ``ValueError``."""
    if not (target_volatility >= 0 and math.isfinite(target_volatility)) or not max_leverage > 0:
        raise ValueError(
            "the target volatility must be a finite non-negative number and the leverage cap positive"
        )
    if not math.isfinite(realised_volatility) or realised_volatility <= 0:
        if not math.isfinite(max_leverage):
            raise ValueError(
                "the portfolio has no realised volatility to scale to the target, and no leverage cap"
            )
        return max_leverage
    return min(target_volatility / realised_volatility, max_leverage)


def target_volatility(
    names: list[str],
    weights: Floats,
    returns: Floats,
    account_value: float,
    target: float,
    max_leverage: float,
    periods_per_year: float = DAYS_PER_YEAR,
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
    realised = config.realised_volatility
    return {
        "account_value": config.account_value,
        "weights": {name: round(weight, DIGITS + 2) for name, weight in config.weights.items()},
        "ann_volatility_pct": round(realised * 100, DIGITS) if math.isfinite(realised) else None,
        "target_vol_pct": round(config.target_volatility * 100, DIGITS),
        "leverage": round(config.leverage, DIGITS),
    }
