"""Fakes for the ports, shared by the component tests (fakes over mocks: they behave like the real ones)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TypeVar

from rebal.events import Event, RebalancePlanned
from rebal.payloads import Body

E = TypeVar("E", bound=Event)


@dataclass
class RecordingPublisher:
    """`bus.EventSink` in memory; like the bus, it drops an event id it has already seen."""

    published: list[Event] = field(default_factory=list)
    # The ids in `published` (scanning it for each event made a 100k-order run quadratic), made again
    # when a test changed the list (cleared it, appended to it).
    _ids: set[uuid.UUID] = field(default_factory=set, repr=False)
    _count: int = field(default=0, repr=False)

    async def publish(self, event: Event, body: Body | None = None) -> bool:
        if self._count != len(self.published):
            self._ids = {e.event_id for e in self.published}
        if event.event_id in self._ids:
            return False
        self._ids.add(event.event_id)
        self.published.append(event if body is None else body.attach(event))
        self._count = len(self.published)
        return True


@dataclass
class FakeHistory:
    """`bus.History` in memory: the latest event of a kind for a portfolio is the last one added."""

    events: list[Event] = field(default_factory=list)

    async def latest(self, kind: type[E], key: str) -> E | None:
        found = [e for e in self.events if isinstance(e, kind) and e.portfolio_id == key]
        return found[-1] if found else None

    async def latest_id(self, kind: type[Event], key: str) -> uuid.UUID | None:
        event = await self.latest(kind, key)
        return None if event is None else event.event_id


@dataclass
class FakePreviews:
    """`rebal_planner.approvals.Previews` in memory: the plans the journal would hold, by id."""

    plans: list[RebalancePlanned] = field(default_factory=list)

    async def preview(self, plan_id: uuid.UUID) -> RebalancePlanned | None:
        return next((plan for plan in self.plans if plan.event_id == plan_id), None)
