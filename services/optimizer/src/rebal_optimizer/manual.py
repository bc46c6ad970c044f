"""The operators' targets (`rebal target set`, `PUT /portfolio/targets`): the latest version of each
portfolio, published as its target, and the base tree an allocation applies its weights to.

Precedence: a portfolio's latest manual version replaces its target file (`targets.files`); for a
portfolio with an allocation, the optimizer keeps setting the strategy nodes' weights, within the manual
tree, at its next solve. The monitor's API stores each version in Postgres (`rebal.target_store`) and
sends `SetTarget`; this publishes the version at once (its `TargetWeightsComputed` id derived from the
portfolio and the version, so a redelivered command, a restart and the API name the same event) and reads
the versions back at start and on every target tick, so a version set while the optimizer was away is
published when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rebal import bus, service, target_store
from rebal.events import Event, SetTarget, TargetWeightsComputed, new_event

log = logging.getLogger("rebal.optimizer")


@dataclass
class ManualTargets:
    database: service.Database
    publisher: bus.EventSink
    history: bus.History
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    versions: dict[str, target_store.Version] = field(default_factory=dict)

    def base(self, portfolio: str) -> dict[str, Any] | None:
        """The portfolio's manual tree in force, or None (its target file applies)."""
        found = self.versions.get(portfolio)
        return None if found is None else found.tree

    async def refresh(self) -> None:
        """Read the versions in force back from Postgres."""
        pool = await self.database.open()
        self.versions = await target_store.current_all(pool)

    async def on_set(self, command: SetTarget) -> None:
        """Publish the version the command carries, unless a later one is in force already."""
        held = self.versions.get(command.portfolio_id)
        if held is not None and held.version > command.target_version:
            log.info("target v%d of %s is older than v%d: not published", command.target_version,
                     command.portfolio_id, held.version)  # fmt: skip
            return
        version = target_store.Version(
            command.portfolio_id, command.target_version, command.tree, command.author, command.note, None,
            command.event_id, command.occurred_at,
        )  # fmt: skip
        self.versions[command.portfolio_id] = version
        await self.publisher.publish(self.event(version, cause=command))
        log.info("published the operators' target v%d of %s", command.target_version, command.portfolio_id)

    async def publish_if_missing(self, portfolio: str) -> bool:
        """Publish the version in force when the stream's latest target of the portfolio is no manual
        target or the optimizer's (a version set while the optimizer was away). True when published."""
        version = self.versions[portfolio]
        event = self.event(version)
        latest = await self.history.latest(TargetWeightsComputed, portfolio)
        if latest is not None and (
            latest.event_id == event.event_id or latest.occurred_at >= version.created_at
        ):
            return False
        return await self.publisher.publish(event)

    def event(self, version: target_store.Version, cause: Event | None = None) -> TargetWeightsComputed:
        return new_event(
            TargetWeightsComputed,
            key=target_store.event_key(version.version),
            now=self.clock(),
            portfolio_id=version.portfolio_id,
            tree=version.tree,
            source=version.source,
            causation_id=None if cause is None else cause.event_id,
        )
