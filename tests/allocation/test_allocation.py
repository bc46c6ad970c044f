"""An allocation's options and the optimizer they make: one registry of methods, the same for the
optimizer service and the offline `rebal optimize`."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from rebal_allocation.allocation import METHOD_PARAMETERS, Allocation, GroupSettings, Method
from rebal_allocation.methods import METHODS, make_optimizer
from rebal_allocation.optimize import MeanVariance, RiskParity
from rebal_optimizer.settings import AllocationSettings


def test_every_method_is_named_once_with_its_parameters() -> None:
    assert set(get_args(Method)) == set(METHODS) == set(METHOD_PARAMETERS)


def test_groups_are_resolved_from_strategy_ids_to_indices() -> None:
    allocation = Allocation(
        method="mean_variance",
        parameters={"risk_aversion": 4},
        max_weight=0.8,
        groups={"fast": GroupSettings(members=["arb", "gone"], cap=0.3)},
        estimator="sample",
    )
    optimizer = make_optimizer(allocation, ("trend", "arb"))
    assert isinstance(optimizer, MeanVariance)
    assert optimizer.count == 2
    assert optimizer.constraints.max_weight == 0.8
    assert [(group.members, group.cap) for group in optimizer.constraints.groups] == [((1,), 0.3)]


def test_a_parameter_the_method_does_not_take_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="risk_parity takes no parameter risk_aversion"):
        Allocation(parameters={"risk_aversion": 2})
    with pytest.raises(ValidationError, match="min_weight is above max_weight"):
        Allocation(min_weight=0.6, max_weight=0.5)


def test_the_service_settings_are_an_allocation_with_the_same_checks() -> None:
    settings = AllocationSettings(method="risk_parity", strategies={"trend": "crypto/trend"})
    assert isinstance(make_optimizer(settings, ("trend",)), RiskParity)
    with pytest.raises(ValidationError, match="mean_variance takes no parameter lookback"):
        AllocationSettings(method="mean_variance", parameters={"lookback": 5})
