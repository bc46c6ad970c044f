"""What a run asks its journal per leg stays constant as the plan grows (bench/executor.py runs a 100k-order
plan): the run's sent notional, a sum over all its orders, is asked only when a run limit needs it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import pytest

from rebal_executor.execution import Journal
from tests.executor.test_executor import DEMO_ORDERS, plan
from tests.executor.test_safety import finished_of, setup

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Counting:
    """The journal, with the sum over a run's orders counted."""

    def __init__(self, inner: Journal) -> None:
        self._inner = inner
        self.sums = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def sent_notional(self, plan_id: uuid.UUID) -> Decimal:
        self.sums += 1
        return await self._inner.sent_notional(plan_id)


@pytest.mark.parametrize(("limit", "sums"), [(None, 0), ("100000", len(DEMO_ORDERS))])
async def test_the_run_s_sum_is_asked_only_under_a_run_limit(
    pool: asyncpg.Pool, journal: Journal, limit: str | None, sums: int
) -> None:
    counting = Counting(journal)
    executor, recorder, _ = await setup(pool, journal=counting, execution={"max_run_notional": limit})  # type: ignore[arg-type]
    await executor.on_plan(plan(*DEMO_ORDERS))
    assert finished_of(recorder).status == "completed"
    assert counting.sums == sums
