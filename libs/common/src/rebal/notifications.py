"""Notifications to operators, as an outbox in Postgres (migration 0070): what to tell, written in the
transaction that decided it (the planner's decision, the monitor's journal), delivered by the monitor's
notifier to every configured channel (a signed webhook, apprise URLs), retried, each channel once.

A notification's payload is the JSON the webhook receives (docs/autopilot.md):
``{"id", "kind", "portfolio_id", "created_at", "title", "text", "data"}``. Its id is derived from what
caused it, so a redelivered cause enqueues it once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from rebal.db import Connection

Kind = Literal[
    "breach",  # nodes left their bands (a new set of breaching nodes)
    "rebalance_triggered",  # the autopilot fired (auto: it trades; notify: operators decide)
    "approval_needed",  # a plan waits for an operator's approval
    "run_finished",  # a run completed
    "run_failed",  # a run ended without completing (cancelled, halted mid-run, error, timed out)
    "halted",  # trading was halted
    "transfer_task",  # a transfer to or from a bank account waits for an operator (`rebal transfer confirm`)
    "transfer_expired",  # such a task was not confirmed in time: its run ended partial
    "alert",  # a Prometheus alert, through Alertmanager (POST /alerts)
]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True)
class Notification:
    id: uuid.UUID
    kind: Kind
    portfolio_id: str
    created_at: datetime
    title: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "kind": self.kind,
            "portfolio_id": self.portfolio_id,
            "created_at": self.created_at.isoformat(),
            "title": self.title,
            "text": self.text,
            "data": self.data,
        }


async def enqueue(connection: Connection, notification: Notification) -> bool:
    """Add the notification (once: the same id again adds nothing); True when it is new."""
    added = await connection.fetchval(
        "INSERT INTO notifications (notification_id, kind, portfolio_id, created_at, payload)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (notification_id) DO NOTHING RETURNING true",
        notification.id,
        notification.kind,
        notification.portfolio_id,
        notification.created_at,
        json.dumps(notification.payload()),
    )
    return bool(added)
