"""Autopilot policies in Postgres (migration 0070): versions with who set them, when and what changed, and
what the autopilot last decided — written by the API and the planner, read by both and the dashboard.

A policy belongs to a portfolio (`PORTFOLIO`: the autopilot policy of docs/formats.md) or to a fund
(`FUND`: its cycle schedule). Each `add` is a new version; the latest one is in force. `changes` lists, key
by key (nested keys joined with dots: ``bands.alice/spot/sol.drift_absolute``), what differs from the
version before: ``{"key", "from", "to"}`` with ``None`` for a key that was not set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from rebal.db import Connection

OwnerKind = Literal["portfolio", "fund"]
PORTFOLIO: OwnerKind = "portfolio"
FUND: OwnerKind = "fund"
Pool = asyncpg.Pool | Connection
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Version:
    owner_kind: OwnerKind
    owner_id: str
    version: int
    document: JsonDict
    author: str
    note: str
    changes: list[JsonDict]
    created_at: datetime

    def json(self) -> JsonDict:
        return {
            "version": self.version,
            "author": self.author,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "changes": self.changes,
        }


def changes(before: JsonDict | None, after: JsonDict) -> list[JsonDict]:
    """What differs between two documents, key by key (nested mappings flattened with dots)."""
    old, new = _flat(before or {}), _flat(after)
    return [
        {"key": key, "from": old.get(key), "to": new.get(key)}
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _flat(document: JsonDict, prefix: str = "") -> JsonDict:
    flat: JsonDict = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


COLUMNS = "owner_kind, owner_id, version, document::text, author, note, changes::text, created_at"


def _version(row: asyncpg.Record) -> Version:
    return Version(
        row["owner_kind"],
        row["owner_id"],
        row["version"],
        json.loads(row["document"]),
        row["author"],
        row["note"],
        json.loads(row["changes"]),
        row["created_at"],
    )


async def add(
    pool: asyncpg.Pool,
    kind: OwnerKind,
    owner: str,
    document: JsonDict,
    *,
    author: str,
    note: str,
    at: datetime,
) -> Version:
    """Store `document` as the owner's next version (versions of one owner are added one at a time)."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext('policy|' || $1 || '|' || $2))", kind, owner
        )
        before = await current(connection, kind, owner)
        number = 1 if before is None else before.version + 1
        row = await connection.fetchrow(
            "INSERT INTO policy_versions (owner_kind, owner_id, version, document, author, note, changes,"
            f" created_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7::jsonb, $8) RETURNING {COLUMNS}",
            kind,
            owner,
            number,
            json.dumps(document),
            author,
            note,
            json.dumps(changes(None if before is None else before.document, document)),
            at,
        )
    assert row is not None
    return _version(row)


async def current(pool: Pool, kind: OwnerKind, owner: str) -> Version | None:
    """The version in force (the latest), or None when none was ever set."""
    row = await pool.fetchrow(
        f"SELECT {COLUMNS} FROM policy_versions WHERE owner_kind = $1 AND owner_id = $2"
        " ORDER BY version DESC LIMIT 1",
        kind,
        owner,
    )
    return None if row is None else _version(row)


async def history(pool: Pool, kind: OwnerKind, owner: str, limit: int) -> list[Version]:
    rows = await pool.fetch(
        f"SELECT {COLUMNS} FROM policy_versions WHERE owner_kind = $1 AND owner_id = $2"
        " ORDER BY version DESC LIMIT $3",
        kind,
        owner,
        limit,
    )
    return [_version(row) for row in rows]


async def in_force(pool: Pool, kind: OwnerKind) -> list[Version]:
    """Every owner's version in force, by owner."""
    rows = await pool.fetch(
        f"SELECT DISTINCT ON (owner_id) {COLUMNS} FROM policy_versions WHERE owner_kind = $1"
        " ORDER BY owner_id, version DESC",
        kind,
    )
    return [_version(row) for row in rows]


@dataclass(frozen=True)
class Decided:
    """What the autopilot decided for a portfolio, as the planner recorded it (`decision`: JSON)."""

    decided_at: datetime
    decision: JsonDict


async def latest_decision(pool: Pool, portfolio: str) -> Decided | None:
    row = await pool.fetchrow(
        "SELECT decided_at, decision::text FROM autopilot_state"
        " WHERE portfolio_id = $1 AND decision IS NOT NULL",
        portfolio,
    )
    return None if row is None else Decided(row["decided_at"], json.loads(row["decision"]))


async def recent_decisions(pool: Pool, portfolio: str, limit: int) -> Sequence[Decided]:
    """The decisions that changed something, newest first."""
    rows = await pool.fetch(
        "SELECT decided_at, decision::text FROM autopilot_decisions WHERE portfolio_id = $1"
        " ORDER BY decided_at DESC LIMIT $2",
        portfolio,
        limit,
    )
    return [Decided(row["decided_at"], json.loads(row["decision"])) for row in rows]
