"""Alertmanager's webhook: `POST /alerts` turns the alerts Prometheus fires (deploy/prometheus/alerts.yml)
into Rebal notifications, delivered through the same channels as the autopilot's (the signed webhook and
apprise URLs of the monitor's `notify` settings), so one configuration tells operators everything.

The body is Alertmanager's webhook payload (version 4:
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config): each alert becomes one
notification, its id derived from the alert's fingerprint, status and start, so Alertmanager's repeats
and retries are enqueued once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from rebal.events import derive_id
from rebal.notifications import Notification, enqueue
from rebal_monitor.api.deps import Authorised, Db, JsonDict, Needs, OperatorOnly

router = APIRouter(dependencies=[Authorised], tags=["alerts"])
Labels = dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=2000)]]


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Annotated[str, Field(max_length=20)]
    labels: Labels
    annotations: Labels = {}
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: Annotated[str, Field(max_length=2000)] = Field(default="", alias="generatorURL")
    fingerprint: Annotated[str, Field(max_length=200)] = ""


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    status: Annotated[str, Field(max_length=20)]
    receiver: Annotated[str, Field(max_length=200)] = ""
    alerts: Annotated[list[Alert], Field(max_length=1000)]


@router.post(
    "/alerts",
    status_code=202,
    dependencies=[OperatorOnly],
    summary="Alertmanager's webhook: alerts to the operators' channels",
)
async def alerts(payload: AlertmanagerPayload, deps: Needs, pool: Db) -> JsonDict:
    now = deps.clock()
    added = 0
    async with pool.acquire() as connection, connection.transaction():
        for alert in payload.alerts:
            added += await enqueue(connection, _notice(alert, now))
    return {"received": len(payload.alerts), "new": added}


def _notice(alert: Alert, now: datetime) -> Notification:
    name = alert.labels.get("alertname", "alert")
    summary = alert.annotations.get("summary", "")
    return Notification(
        id=derive_id(
            "notification",
            "alert",
            alert.fingerprint or sorted(alert.labels.items()),
            alert.status,
            alert.starts_at,
        ),
        kind="alert",
        portfolio_id=alert.labels.get("portfolio") or alert.labels.get("service") or "rebal",
        created_at=now,
        title=f"[{alert.status}] {name}" + (f": {summary}" if summary else ""),
        text=alert.annotations.get("description", summary),
        data={
            "status": alert.status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "starts_at": alert.starts_at.isoformat(),
            "ends_at": None if alert.ends_at is None else alert.ends_at.isoformat(),
            "generator_url": alert.generator_url,
        },
    )
