"""The latest snapshots and targets the planner saw, parsed once each and kept by event id: the planner's
previews and plans and the autopilot's decisions read them from here (the stream stays the record of
which is the latest)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rebal import bus
from rebal.core.errors import InputError
from rebal.core.networks import Networks
from rebal.core.tree import Tree
from rebal.events import BalanceSnapshotTaken, TargetWeightsComputed
from rebal_planner.planning import ParsedSnapshot, parse_snapshot, parse_target, parsed_or_error

# Parsed inputs kept per event id: a few snapshots and targets per portfolio is plenty.
PARSED_CACHE_SIZE = 16
K = TypeVar("K", BalanceSnapshotTaken, TargetWeightsComputed)
P = TypeVar("P", ParsedSnapshot, Tree)


@dataclass(frozen=True)
class Known(Generic[P]):
    """An event's id and its parsed form (or why it does not parse): the payload itself is not kept."""

    event_id: uuid.UUID
    parsed: P | InputError


@dataclass
class Parsed(Generic[K, P]):
    """Parsed events of one kind, by event id (the stream stays the record of which is the latest)."""

    parse: Callable[[K], P]
    entries: OrderedDict[uuid.UUID, Known[P]] = field(default_factory=OrderedDict)

    async def add(self, event: K) -> Known[P]:
        """Parse (off the event loop) and keep a few."""
        known = self.entries.get(event.event_id)
        if known is None:
            known = Known(event.event_id, await asyncio.to_thread(parsed_or_error, self.parse, event))
            self.entries[event.event_id] = known
            while len(self.entries) > PARSED_CACHE_SIZE:
                self.entries.popitem(last=False)
        return known

    async def latest(self, history: bus.History, kind: type[K], portfolio: str) -> Known[P] | None:
        """The latest event of the stream, parsed; only its id is read when it is already known."""
        latest_id = await history.latest_id(kind, portfolio)
        if latest_id is not None and latest_id in self.entries:
            self.entries.move_to_end(latest_id)
            return self.entries[latest_id]
        event = await history.latest(kind, portfolio)
        return None if event is None else await self.add(event)


def snapshot_cache(networks: Networks | None = None) -> Parsed[BalanceSnapshotTaken, ParsedSnapshot]:
    """Snapshots parsed with the networks assets move on between their venues (the planner's file)."""
    return Parsed(functools.partial(parse_snapshot, networks=networks))


def target_cache() -> Parsed[TargetWeightsComputed, Tree]:
    return Parsed(parse_target)
