"""A phase's legs run per account: each account's legs in plan order, the accounts side by side.

Venues limit orders per account (Binance: its ORDERS limits are counted per account), so a plan spread
over many accounts is bounded by its busiest account, not by the sum, only when the accounts' legs run
concurrently. Nothing a leg does reads another account: a sell sizes from its own account's holdings, a
buy from its own account's free quote and fills; what crosses accounts (transfers, the sells that wait
for them, operators' bank transfers, positions) stays in the run's sequential steps (`runs`).

Each leg keeps its journal transitions (its order is written before it is sent). The first `Stop` of any
account stops every account before its next leg; the legs in flight end as they would alone, so the run's
stop path finds each leg either done or resolvable. A failure (an exception) does the same and is then
raised; the process dying (a `BaseException`: cancelled, interrupted) ends every account's task at once,
as a crash would, and the journal resumes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from rebal.events import PlannedOrder
from rebal_executor.execution.outcomes import Stop

Step = Callable[[int, PlannedOrder], Awaitable[Stop | None]]


def by_account(legs: Iterable[tuple[int, PlannedOrder]]) -> list[list[tuple[int, PlannedOrder]]]:
    """The legs grouped by (exchange, account), each group in plan order, the groups in order of their
    first leg."""
    groups: dict[tuple[str, str], list[tuple[int, PlannedOrder]]] = {}
    for leg, order in legs:
        groups.setdefault((order.exchange, order.account), []).append((leg, order))
    return list(groups.values())


async def each_account(legs: Iterable[tuple[int, PlannedOrder]], step: Step) -> Stop | None:
    """`step` over `legs`, one account's legs after another's in plan order, the accounts concurrently;
    the first `Stop` (in time) stops them all before their next leg and is returned."""
    stops: list[Stop] = []
    errors: list[Exception] = []

    async def one(group: list[tuple[int, PlannedOrder]]) -> None:
        for leg, order in group:
            if stops or errors:
                return
            try:
                stop = await step(leg, order)
            except Exception as error:  # noqa: BLE001 - raised below, once the legs in flight ended
                errors.append(error)
                return
            if stop is not None:
                stops.append(stop)
                return

    groups = by_account(legs)
    if len(groups) == 1:  # one account: no task, in the caller's frame, as before accounts ran apart
        await one(groups[0])
    elif groups:
        tasks = [asyncio.ensure_future(one(group)) for group in groups]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            raise
    if errors:
        raise errors[0]
    return stops[0] if stops else None
