"""The services read the NATS credentials and the database URL (with its password) from files, as
docker-compose and Kubernetes mount them, work under their own NATS users through a live rebalance, and
never show a secret: not in their logs, not in /readyz, not in /metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

from rebal_devstack.stack import SERVICES
from tests.observability.conftest import Observed


def page(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def test_the_run_completed_under_the_services_own_users(observed: Observed) -> None:
    assert observed.finished.status.startswith("completed"), observed.finished
    assert observed.finished.filled == observed.finished.placed > 0


def test_no_secret_shows_in_a_log_in_readyz_or_in_metrics(observed: Observed) -> None:
    shown = {f"{name} log": (observed.log_dir / f"{name}.log").read_text() for name in SERVICES}
    for child in observed.services:
        for path in ("/readyz", "/metrics"):
            shown[f"{child.name} {path}"] = page(f"{child.url}{path}")
    assert all(len(text) > 100 for where, text in shown.items() if where.endswith("log")), "empty logs"
    assert all('"status": "ok"' in text for where, text in shown.items() if where.endswith("/readyz"))
    leaks = [
        (where, name)
        for where, text in shown.items()
        for name, secret in observed.secrets.items()
        if secret in text
    ]
    assert leaks == []
