"""`python -m rebal.migrate`: apply the numbered SQL migrations and exit (the compose one-shot service).

Exit codes: 0 applied (or nothing to do), 4 the database cannot be reached or a migration failed.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from rebal import db
from rebal.settings import ServiceSettings

EXIT_CONFIGURATION = 4


async def run(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return await db.migrate(connection)
    finally:
        await connection.close()


def main() -> int:
    settings = ServiceSettings()
    try:
        applied = asyncio.run(run(settings.database.url.get_secret_value()))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"migrations not applied: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    print(f"applied: {', '.join(applied)}" if applied else "migrations: nothing to apply")
    return 0


if __name__ == "__main__":
    sys.exit(main())
