"""Infrastructure failures: a dependency (Postgres, NATS) that is unavailable, told apart from a message
that is bad on its own content, by exception class (never by message text).

A consumer whose handler fails with one of these does not count it against the message: it holds the
message and tries again when the dependency is back (`rebal.bus`), for as long as the stream keeps it.
Anything else is the message's (or the handler's) fault: retried with backoff, then dead-lettered.
"""

from __future__ import annotations

import asyncpg
import nats.errors
import nats.js.errors

OUTAGES: tuple[type[BaseException], ...] = (
    # Connections refused, reset, unreachable or timed out (asyncio's and nats-py's timeouts are
    # TimeoutErrors): OSErrors, but not those about files (`FILE_ERRORS`).
    OSError,
    # Postgres: the connection failed or was lost (class 08), the server is starting, shutting down or
    # crashed (57P01-57P03), out of resources (53: disk full, too many connections), or is a standby
    # that cannot write (25006, during a failover).
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InsufficientResourcesError,
    asyncpg.ReadOnlySQLTransactionError,
    # NATS: the connection is closed, reconnecting or stale, its buffer is full while it reconnects,
    # JetStream does not answer (no responders) or is temporarily unavailable (503).
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.js.errors.ServiceUnavailableError,
)


# OSErrors that are about a file, not a connection: a missing or unreadable file does not come back.
FILE_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc`, or the exception it was raised from or while handling, says a dependency is
    unavailable: asyncpg's ``InterfaceError`` "the underlying connection is closed", raised when a
    transaction cannot roll back on a connection that died, carries the ``ConnectionDoesNotExistError``
    that killed it as its context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OUTAGES) and not isinstance(current, FILE_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
