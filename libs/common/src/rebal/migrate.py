"""`python -m rebal.migrate`: apply the numbered SQL migrations, declare the JetStream streams (creating
them, or bringing their configuration up to date), and exit (the compose one-shot service, the Kubernetes
Job). On a secured bus it connects as the ``migrate`` user, the only one allowed to update a stream
(`deploy/nats/auth.conf`).

Exit codes: 0 done (or nothing to do), 4 the database or NATS cannot be reached, or a migration failed.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import nats.errors

from rebal import bus, db, service
from rebal.settings import EXIT_CONFIGURATION, ServiceSettings

# A service's broker reconnects forever; the one-shot migration gives up after this (NATS is started and
# healthy before it in compose; a Kubernetes Job is retried).
NATS_TIMEOUT_SECONDS = 30.0


async def run(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return await db.migrate(connection)
    finally:
        await connection.close()


async def declare(settings: ServiceSettings) -> None:
    broker = service.make_broker(settings, "migrate")
    await broker.connect()
    try:
        await bus.declare_streams(broker, settings.nats.stream_replicas, update=True)
    finally:
        await broker.stop()


def main() -> int:
    settings = ServiceSettings()
    try:
        applied = asyncio.run(run(settings.database.url.get_secret_value()))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"migrations not applied: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    print(f"applied: {', '.join(applied)}" if applied else "migrations: nothing to apply")
    try:
        asyncio.run(asyncio.wait_for(declare(settings), NATS_TIMEOUT_SECONDS))
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer from {settings.nats.url}"
        print(f"streams not declared: {why}", file=sys.stderr)
        return EXIT_CONFIGURATION
    print(f"streams: {', '.join(spec.name for spec in bus.STREAMS)} declared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
