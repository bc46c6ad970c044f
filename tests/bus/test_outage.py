"""Which failures are an outage (a dependency unavailable: hold the message) and which are the
message's own (retry, then dead-letter): by exception class, the chain included."""

from __future__ import annotations

import asyncpg
import nats.errors
import pytest

from rebal.outage import is_outage


def raised_while_handling(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except type(inner):
            raise outer  # noqa: B904 - the implicit context is what is tested
    except type(outer) as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        OSError(101, "Network is unreachable"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionClosedError(),
        # A transaction that cannot roll back on a connection that died (seen when Postgres is killed).
        raised_while_handling(
            asyncpg.exceptions.InterfaceError(
                "cannot call Transaction.__aexit__(): the connection is closed"
            ),
            asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            ),
        ),
    ],
)
def test_an_unavailable_dependency_is_an_outage(exc: BaseException) -> None:
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence"),
        asyncpg.exceptions.NumericValueOutOfRangeError("value out of range"),
        asyncpg.exceptions.CheckViolationError("violates check constraint"),
        asyncpg.exceptions.InterfaceError("the number of query arguments cannot exceed 32767"),
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
        ValueError("no such account"),
        RuntimeError("the tracker has not started"),
    ],
)
def test_a_failure_of_the_message_or_the_code_is_not(exc: BaseException) -> None:
    assert not is_outage(exc)
