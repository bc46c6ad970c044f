"""Policies replayed side by side (`replay_all`, whose screens scan their rows together) come out as each
replayed alone, to the bit; the first failing policy's error is raised, naming it."""

from __future__ import annotations

import numpy as np
import pytest

from rebal.core.backtest import Overdrawn, Run, replay, replay_all
from rebal.core.backtest.start import with_cash_wallets
from rebal.core.tree import parse_tree
from rebal.policy import parse_policy
from tests.backtest.paths import history
from tests.backtest.test_screen import CASES, KRAKEN, TWO_ACCOUNTS_REAL, TWO_ACCOUNTS_TARGET


def _same(one: Run, other: Run) -> bool:
    columns = ("value", "flow", "fees", "traded", "orders", "drift", "kind")
    return all(getattr(one, c).tobytes() == getattr(other, c).tobytes() for c in columns) and (
        one.evaluations == other.evaluations
    )


@pytest.mark.parametrize("seed", [3, 5])
def test_policies_side_by_side_are_each_replayed_as_alone(seed: int) -> None:
    path = history(rows=240, seed=seed)
    flows = np.zeros(len(path))
    flows[[30, 90, 150]] = [800.0, -400.0, 1200.0]
    policies = [(name, parse_policy(CASES[name]).to_policy()) for name in sorted(CASES)]
    policies += [("weekly", parse_policy({"schedule": "0 0 * * MON"}).to_policy())]
    start = with_cash_wallets(TWO_ACCOUNTS_REAL, "USDT")
    target = parse_tree(TWO_ACCOUNTS_TARGET, "target")
    runs = replay_all(path, start, target, KRAKEN, policies, flows=flows)
    alone = [replay(path, start, target, KRAKEN, policy, flows=flows) for _, policy in policies]
    assert len(runs) == len(policies)
    assert all(run.rebalances > 0 for run in runs)
    assert all(_same(run, each) for run, each in zip(runs, alone, strict=True))


def test_the_first_policy_that_cannot_pay_a_withdrawal_is_named() -> None:
    path = history(rows=120, seed=3)
    flows = np.zeros(len(path))
    flows[100] = -1e9
    start = with_cash_wallets(TWO_ACCOUNTS_REAL, "USDT")
    policies = [(name, parse_policy(CASES[name]).to_policy()) for name in ("monthly", "absolute")]
    with pytest.raises(Overdrawn) as refused:
        replay_all(path, start, parse_tree(TWO_ACCOUNTS_TARGET, "target"), KRAKEN, policies, flows=flows)
    assert refused.value.row == 100 and refused.value.name == "monthly"
