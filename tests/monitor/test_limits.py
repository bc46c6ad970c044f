"""The API's limits on the real monitor: bodies over the limit (413, before the token is checked), bodies
that do not arrive (408), and a token over its rate (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx

from rebal_devstack.pytest_plugin import FreshDatabase
from tests.monitor.running import TOKEN, monitor_settings, running_monitor

VIEWER = "v" * 40
LIMIT = 4096


async def test_a_body_over_the_limit_is_refused_before_the_token_is_checked(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, max_body_bytes=LIMIT)
    async with running_monitor(settings) as monitor, httpx.AsyncClient(base_url=monitor.url) as anonymous:
        announced = await anonymous.post("/halt", content=b"x" * (LIMIT + 1))
        assert announced.status_code == 413
        assert announced.json()["detail"] == (
            f"the request body ({LIMIT + 1} bytes) is over the {LIMIT} bytes limit"
        )

        # No Content-Length: chunked, growing past the limit (written at once, as a raw request: a client
        # still sending after the answer may see the connection reset before it reads the answer).
        chunk = b"%x\r\n%s\r\n" % (LIMIT // 4, b"y" * (LIMIT // 4))
        head, body = await raw(monitor.url, b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 5 + b"0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert json.loads(body)["detail"] == f"the request body is over the {LIMIT} bytes limit"
        # Within the limit, the request goes on as before: to the token check, then to the route.
        assert (await anonymous.post("/halt", json={"reason": "x" * 100})).status_code == 401
        long = await monitor.client.post("/halt", json={"reason": "x" * (LIMIT - 100)})
        assert long.status_code == 422 and long.json()["errors"][0]["field"] == "body.reason"


async def test_a_body_that_does_not_arrive_is_refused_with_408(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, body_timeout_seconds=0.5)
    async with running_monitor(settings) as monitor:
        head, body = await raw(monitor.url, b'Content-Length: 100\r\n\r\n{"reason"')
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert json.loads(body)["detail"] == "the request body did not arrive within 0.5 s"


async def raw(url: str, rest: bytes) -> tuple[bytes, bytes]:
    """POST /halt with the operator's token over a plain socket, the headers' end and the body being
    `rest`: the answer's head and body (the monitor answers, then closes)."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        writer.write(
            b"POST /halt HTTP/1.1\r\nHost: monitor\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + rest
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


async def test_a_token_over_its_rate_gets_429_with_retry_after_and_others_go_on(
    nats_url: str, database: FreshDatabase
) -> None:
    settings = monitor_settings(nats_url, database.dsn, viewer_token=VIEWER, rate_limit_per_second=1)
    async with running_monitor(settings) as monitor:
        answers = await asyncio.gather(*(monitor.client.get("/session") for _ in range(10)))
        refused = [answer for answer in answers if answer.status_code == 429]
        assert refused and all(answer.status_code in (200, 429) for answer in answers)
        assert all(int(answer.headers["retry-after"]) >= 1 for answer in refused)
        assert refused[0].json()["detail"] == "too many requests with this token (at most 1 a second)"
        # Another token has its own allowance; a request without a valid token is refused as before.
        viewer = await monitor.client.get("/session", headers={"authorization": f"Bearer {VIEWER}"})
        assert viewer.status_code == 200
        wrong = await monitor.client.get("/session", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
