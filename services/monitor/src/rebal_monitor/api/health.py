"""The health `/status` reports: the monitor's own dependencies (NATS, Postgres) and each peer service's
readiness (its /readyz), all probed together.

Probing is the costly part of `/status` (an HTTP client, four peers whose /readyz ping NATS and Postgres
in turn): `Deps.health` keeps the answer for `HEALTH_TTL_SECONDS`, so a crowd of callers costs one probe
a second, never one each.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

PEER_TIMEOUT_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 2.0
# How long a probe's answer stands: fresher than any operator reads it, and a crowd probes once.
HEALTH_TTL_SECONDS = 1.0


async def peer_health(peers: Mapping[str, Any]) -> dict[str, str]:
    """Each peer service's readiness from its /readyz, probed together: "ok", or why not."""
    if not peers:
        return {}

    async def probe(client: httpx.AsyncClient, url: str) -> str:
        try:
            response = await client.get(f"{str(url).rstrip('/')}/readyz")
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        if response.status_code == 200:
            return "ok"
        return f"not ready (HTTP {response.status_code})"

    # Straight to the services: never through an HTTP(S)_PROXY of the environment.
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT_SECONDS, trust_env=False, verify=tls()) as client:
        names = sorted(peers)
        states = await asyncio.gather(*(probe(client, peers[name]) for name in names))
    return dict(zip(names, states, strict=True))


@functools.cache
def tls() -> ssl.SSLContext:
    """The system's CA certificates, loaded once: loading them took more CPU than the probes."""
    return ssl.create_default_context()


async def own_health(checks: Mapping[str, Callable[[], Awaitable[None]]]) -> dict[str, str]:
    """Each of the monitor's own checks, run together: "ok", or the failure by name."""

    async def run(check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, by name
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    names = list(checks)
    states = await asyncio.gather(*(run(checks[name]) for name in names))
    return dict(zip(names, states, strict=True))


async def probe_all(
    checks: Mapping[str, Callable[[], Awaitable[None]]], peers: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """The monitor's own health and its peers', probed at once."""
    own, others = await asyncio.gather(own_health(checks), peer_health(peers))
    return own, others
