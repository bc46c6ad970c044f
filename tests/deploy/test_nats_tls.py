"""NATS over TLS, as in the prod overlay: a service trusts the cluster's CA (``REBAL__NATS__TLS_CA_FILE``)
and connects with its own user; a client that does not trust the CA is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from pydantic import ValidationError

from rebal import service, subjects
from rebal_devstack.nats import NatsServer
from rebal_planner.settings import PlannerSettings
from tests.messaging import auth_users, started

ROOT = Path(__file__).resolve().parents[2]
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def certificates(directory: Path) -> None:
    """A CA, and a server certificate it signed for 127.0.0.1 (what cert-manager makes for the chart)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=rebal-test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=nats", "-keyout", "server.key",
            "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.pem", cwd=directory)  # fmt: skip


@pytest.fixture
def tls_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    certificates(certs)
    base = tmp_path / "nats"
    base.mkdir()
    shutil.copy(ROOT / "deploy" / "nats" / "auth.conf", base / "auth.conf")
    for user, variable in auth_users().items():
        monkeypatch.setenv(variable, f"pw-{user.replace('-', '_')}")
    tls = f'tls {{\n  cert_file: "{certs / "server.pem"}"\n  key_file: "{certs / "server.key"}"\n}}'
    with NatsServer(base / "jetstream", extra_config=f"include ./auth.conf\n{tls}") as server:
        yield server.url.replace("nats://", "tls://"), certs / "ca.pem"


async def test_a_service_connects_over_tls_trusting_the_cluster_ca(tls_nats: tuple[str, Path]) -> None:
    url, ca = tls_nats
    settings = PlannerSettings(
        nats={"url": url, "user": "planner", "password": "pw-planner", "tls_ca_file": ca}
    )
    broker = service.make_broker(settings, "planner")
    async with started(broker):
        assert await broker.ping(timeout=2.0)
        js = broker.config.connection_state.stream
        assert (await js.stream_info(subjects.EVENTS_STREAM)).config.name == subjects.EVENTS_STREAM
        assert broker.config.connection_state.connection.connected_url.scheme == "tls"  # type: ignore[union-attr]


async def test_without_the_ca_the_server_is_not_trusted(tls_nats: tuple[str, Path]) -> None:
    url, _ = tls_nats
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await nats.connect(
            url, user="planner", password="pw-planner", allow_reconnect=False, connect_timeout=2
        )


def test_a_missing_ca_file_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"nats.tls_ca_file .*missing\.pem: no such file"):
        PlannerSettings(nats={"url": "tls://nats:4222", "tls_ca_file": tmp_path / "missing.pem"})
