"""docker-compose.yml and the Dockerfile, checked offline against the code (no Docker engine here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from faststream.nats import NatsBroker
from pydantic import BaseModel

from rebal import service
from rebal.settings import PORTS, ServiceSettings
from rebal_executor.settings import ExecutorSettings
from rebal_monitor.settings import MonitorSettings
from rebal_optimizer.settings import OptimizerSettings
from rebal_planner.settings import PlannerSettings
from rebal_tracker.settings import TrackerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, type[ServiceSettings]] = {
    "tracker": TrackerSettings,
    "optimizer": OptimizerSettings,
    "planner": PlannerSettings,
    "executor": ExecutorSettings,
    "monitor": MonitorSettings,
}
VARIABLE = re.compile(r"\$\{([A-Z_]+)(?::-([^}]*))?\}")
PUBLISHED = re.compile(
    r"(?P<bind>\$\{REBAL_BIND:-[^}]+\}):\$\{[A-Z_]+:-(?P<default>\d+)\}:(?P<container>\d+)"
)


def settings_field(model: type[BaseModel], path: list[str]) -> bool:
    """Whether REBAL__A__B names a field a.b of the settings."""
    fields = model.model_fields
    head, *rest = path
    if head not in fields:
        return False
    if not rest:
        return True
    annotation = fields[head].annotation
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and settings_field(annotation, rest)
    )


def env_of(name: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (COMPOSE["services"][name].get("environment") or {}).items()}


def test_the_five_services_and_the_infrastructure_are_there() -> None:
    assert set(COMPOSE["services"]) == {*SERVICES, "nats", "postgres", "migrate"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_image_runs_an_entry_point_that_exists(name: str) -> None:
    spec = COMPOSE["services"][name]
    assert spec["build"]["args"]["SERVICE"] == name
    assert "command" not in spec  # the image's CMD: python -m rebal_<SERVICE>
    assert importlib.util.find_spec(f"rebal_{name}.__main__") is not None


def test_migrations_run_once_before_the_services() -> None:
    migrate = COMPOSE["services"]["migrate"]
    assert migrate["command"] == ["python", "-m", "rebal.migrate"]
    assert importlib.util.find_spec("rebal.migrate") is not None
    assert migrate["restart"] == "no"
    for name in SERVICES:
        depends = COMPOSE["services"][name]["depends_on"]
        assert depends == {
            "nats": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }


@pytest.mark.parametrize("name", [*sorted(SERVICES), "migrate"])
def test_every_environment_variable_is_a_setting_the_service_knows(name: str) -> None:
    model = SERVICES.get(name, ServiceSettings)
    for key in env_of(name):
        assert key.startswith("REBAL__"), key
        assert settings_field(model, key.removeprefix("REBAL__").lower().split("__")), f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_settings_load_from_that_environment(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://rebal:secret@postgres:5432/rebal\n")
    for key, raw in env_of(name).items():
        value = VARIABLE.sub(lambda m: m.group(2) or "", raw)  # the compose defaults
        monkeypatch.setenv(key, str(secret) if key.endswith("URL_FILE") else value)
    settings = SERVICES[name]()
    assert settings.database.url.get_secret_value() == "postgresql://rebal:secret@postgres:5432/rebal"
    assert settings.http.port == PORTS[name]
    assert "secret@" not in repr(settings)  # the password never shows


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_ports_are_the_services_own_and_published_on_loopback(name: str) -> None:
    spec = COMPOSE["services"][name]
    [published] = spec["ports"]
    match = PUBLISHED.fullmatch(published)
    assert match is not None, published
    assert match["bind"] == "${REBAL_BIND:-127.0.0.1}"
    assert (
        int(match["default"])
        == int(match["container"])
        == PORTS[name]
        == int(env_of(name)["REBAL__HTTP__PORT"])
    )


def test_every_published_port_is_bound_to_loopback_by_default() -> None:
    for name, spec in COMPOSE["services"].items():
        for published in spec.get("ports", []):
            assert published.startswith("${REBAL_BIND:-127.0.0.1}:"), (name, published)


def test_healthchecks_ask_paths_the_services_serve() -> None:
    app = service.build("any", NatsBroker(), ServiceSettings())
    served = {path for path, _ in app.routes}
    assert {"/livez", "/readyz", "/metrics"} <= served
    for name in SERVICES:
        test = " ".join(COMPOSE["services"][name]["healthcheck"]["test"])
        assert "/readyz" in test
    for name in ("nats", "postgres"):
        assert COMPOSE["services"][name]["healthcheck"]["test"]


def test_secrets_are_files_with_examples_and_not_in_git() -> None:
    for secret in COMPOSE["secrets"].values():
        path = ROOT / secret["file"]
        assert path.parent.is_dir() and (path.parent / f"{path.name}.example").is_file(), path
    assert "/deploy/secrets/*.txt" in (ROOT / ".gitignore").read_text()


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    used = set(VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    listed = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {name for name, _ in used} <= listed


def test_the_image_recipe_is_multi_stage_non_root_and_installs_from_the_lock_like_make() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2
    assert "ARG SERVICE" in dockerfile and re.search(r"^USER rebal$", dockerfile, re.M)
    assert 'uv sync --frozen --no-dev --no-editable --package "rebal-${SERVICE}"' in dockerfile
    assert "sync --frozen" in (ROOT / "Makefile").read_text()  # the same lock, the same way
