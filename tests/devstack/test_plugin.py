"""How the fixtures pick where a server comes from."""

from __future__ import annotations

import time

import pytest

from rebal_devstack.pytest_plugin import docker_available, resolve_backend


def _no_docker() -> bool:
    return False


def _docker() -> bool:
    return True


def test_an_env_url_wins_over_everything() -> None:
    assert resolve_backend("nats://10.0.0.1:4222", "docker", _docker) == "env"


def test_auto_uses_docker_only_when_a_daemon_answers() -> None:
    assert resolve_backend(None, None, _docker) == "docker"
    assert resolve_backend("", "auto", _no_docker) == "local"


def test_forced_backends_skip_the_probe() -> None:
    def probe() -> bool:
        raise AssertionError("probed")

    assert resolve_backend(None, "local", probe) == "local"
    assert resolve_backend(None, "Docker", probe) == "docker"
    with pytest.raises(ValueError, match="auto, local or docker"):
        resolve_backend(None, "podman", probe)


def test_the_docker_probe_is_quick_and_says_no_without_a_daemon() -> None:
    t0 = time.monotonic()
    answer = docker_available()
    assert isinstance(answer, bool)
    assert time.monotonic() - t0 < 5.0
