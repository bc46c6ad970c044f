"""Data and parameters no allocation can honestly come from are refused with the reason, never solved
into arbitrary weights marked optimal."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from rebal_allocation.allocation import Allocation
from rebal_allocation.methods import METHODS, make_optimizer
from rebal_allocation.optimize import BadData, MaxSharpe, MeanVariance, Mix, RiskParity, SlopeStd
from tests.allocation.cases import random_returns


@pytest.mark.parametrize(
    ("method", "parameter", "value", "message"),
    [
        ("mean_variance", "risk_aversion", math.nan, "finite number"),
        ("max_sharpe", "risk_free", math.nan, "finite number"),
        ("slope_std", "lookback", math.inf, "finite number"),
        ("mix", "return_weight", math.nan, "finite number"),
        ("slope_std", "lookback", 30.7, "lookback must be a whole number of periods of at least 3, not 30.7"),
        ("mix", "lookback", 2, "lookback must be a whole number of periods of at least 3, not 2"),
        ("mean_variance", "risk_aversion", -1, "risk_aversion must be positive"),
    ],
)
def test_a_parameter_that_is_not_a_finite_number_of_its_kind_is_refused(
    method: str, parameter: str, value: float, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Allocation(method=method, parameters={parameter: value})  # type: ignore[arg-type]
    # And by the methods themselves (what the service builds from settings it was handed).
    with pytest.raises(ValueError, match=message):
        METHODS[method](3, **{parameter: value})


def test_non_finite_options_are_refused() -> None:
    for field in ("target_volatility", "max_leverage", "halflife", "min_weight"):
        with pytest.raises(ValidationError, match="finite number"):
            Allocation(**{field: math.nan})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="finite number"):
        Allocation(target_volatility=math.inf)


def test_a_built_allocation_with_a_nan_parameter_is_refused_when_the_optimizer_is_made() -> None:
    # Settings that skipped validation (model_construct): make_optimizer still refuses them.
    allocation = Allocation.model_construct(
        **{**Allocation().model_dump(), "method": "mean_variance", "parameters": {"risk_aversion": math.nan}}
    )
    with pytest.raises(ValueError, match="risk_aversion must be a finite number"):
        make_optimizer(allocation, ("a", "b"))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_strategy_flat_is_refused_by_every_method(method: str) -> None:
    flat = np.full((60, 2), 0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = METHODS[method](2).solve(flat)
    assert isinstance(result, BadData), result
    assert result.columns == (0, 1)
    described = result.describe(["trend", "arb"])
    assert described.startswith("trend, arb: constant returns over the last 60 periods")


def test_one_flat_strategy_is_named() -> None:
    returns = random_returns(3, periods=100)
    returns[:, 1] = 0.0
    for optimizer in (RiskParity(3), MaxSharpe(3), SlopeStd(3), MeanVariance(3), Mix(3)):
        result = optimizer.solve(returns)
        assert isinstance(result, BadData) and result.columns == (1,), (optimizer, result)
