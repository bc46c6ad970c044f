"""docker-compose.yml and the Dockerfile, checked offline against the code (no Docker engine here)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from faststream.nats import NatsBroker
from pydantic import BaseModel

from rebal import service
from rebal.settings import PORTS, ServiceSettings
from rebal_devstack.nats import find_nats_server
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
OBSERVABILITY = {"prometheus", "alertmanager", "grafana", "otel-collector", "jaeger"}
# The standard OpenTelemetry variables the SDK reads itself (rebal.telemetry).
OTEL_VARIABLES = {"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"}
AUTH_USER = re.compile(r"\{user: ([a-z-]+), password: \$([A-Z_]+)")
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
    assert set(COMPOSE["services"]) == {*SERVICES, "nats", "postgres", "migrate", *OBSERVABILITY}
    for name, spec in COMPOSE["services"].items():
        assert spec.get("profiles") == (["observability"] if name in OBSERVABILITY else None), name


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
        if key in OTEL_VARIABLES:
            continue
        assert key.startswith("REBAL__"), key
        assert settings_field(model, key.removeprefix("REBAL__").lower().split("__")), f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_settings_load_from_that_environment(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://rebal:secret@postgres:5432/rebal\n")
    nats_password = tmp_path / "nats_password"
    nats_password.write_text("nats-secret\n")
    api_token = tmp_path / "api_token"
    api_token.write_text("t" * 40 + "\n")
    files = {
        "REBAL__DATABASE__URL_FILE": secret,
        "REBAL__NATS__PASSWORD_FILE": nats_password,
        "REBAL__API__TOKEN_FILE": api_token,
    }
    for key, raw in env_of(name).items():
        value = VARIABLE.sub(lambda m: m.group(2) or "", raw)  # the compose defaults
        monkeypatch.setenv(key, str(files[key]) if key in files else value)
    settings = SERVICES[name]()
    assert settings.database.url.get_secret_value() == "postgresql://rebal:secret@postgres:5432/rebal"
    assert settings.http.port == PORTS[name]
    assert settings.nats.user == name
    assert settings.nats.password is not None and settings.nats.password.get_secret_value() == "nats-secret"
    assert "secret@" not in repr(settings) and "nats-secret" not in repr(settings)  # never shown


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
    for name in ("nats", "postgres", *OBSERVABILITY):
        assert COMPOSE["services"][name]["healthcheck"]["test"], name


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


def test_every_nats_user_has_a_secret_and_each_service_connects_as_its_own() -> None:
    users = dict(AUTH_USER.findall((ROOT / "deploy" / "nats" / "auth.conf").read_text()))
    nats = COMPOSE["services"]["nats"]
    mounted = {volume.split(":")[1] for volume in nats["volumes"]}
    assert {"/etc/nats/nats.conf", "/etc/nats/auth.conf"} <= mounted
    assert "include ./auth.conf" in (ROOT / "deploy" / "nats" / "nats.conf").read_text()
    script = " ".join(nats["command"])
    for user, variable in users.items():
        secret = f"nats_{user.replace('-', '_')}_password"
        assert secret in nats["secrets"] and secret in COMPOSE["secrets"], user
        # The entry point exports each secret file as the variable auth.conf reads.
        assert variable == f"{user.replace('-', '_').upper()}_PASSWORD"
    assert "/run/secrets/nats_$${user}_password" in script and "_PASSWORD=" in script
    assert set(script.split("for user in ")[1].split(";")[0].split()) == {u.replace("-", "_") for u in users}
    for name in SERVICES:
        spec = COMPOSE["services"][name]
        assert {"source": f"nats_{name}_password", "target": "nats_password"} in spec["secrets"]
        assert env_of(name)["REBAL__NATS__USER"] == name and name in users
        assert env_of(name)["REBAL__NATS__PASSWORD_FILE"] == "/run/secrets/nats_password"


def test_the_compose_nats_configuration_is_one_nats_server_accepts(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    text = (ROOT / "deploy" / "nats" / "nats.conf").read_text().replace("/data", str(tmp_path / "js"))
    config.write_text(text)
    (tmp_path / "auth.conf").write_text((ROOT / "deploy" / "nats" / "auth.conf").read_text())
    users = dict(AUTH_USER.findall((ROOT / "deploy" / "nats" / "auth.conf").read_text()))
    env = {"PATH": "/usr/bin:/bin", **dict.fromkeys(users.values(), "pw")}
    checked = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_the_five_services_by_their_compose_names() -> None:
    prometheus = COMPOSE["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    targets = {static["labels"]["service"]: static["targets"] for static in job["static_configs"]}
    assert targets == {name: [f"{name}:{port}"] for name, port in PORTS.items()}


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = COMPOSE["services"]["grafana"]
    volumes = dict(
        volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"] if volume.startswith("./")
    )
    assert volumes == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/rebal.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()


def test_services_send_spans_to_the_collector_which_forwards_them() -> None:
    collector = COMPOSE["services"]["otel-collector"]
    [mount] = collector["volumes"]
    source, target, _ = mount.split(":")
    assert collector["command"] == [f"--config={target}"]
    config = yaml.safe_load((ROOT / source).read_text())
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    for exporter in config["service"]["pipelines"]["traces"]["exporters"]:
        host = config["exporters"][exporter]["endpoint"].split(":")[0]
        assert host in COMPOSE["services"], exporter
    for name in SERVICES:
        env = env_of(name)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http.rsplit(':', 1)[1]}"
        assert VARIABLE.fullmatch(env["OTEL_TRACES_EXPORTER"]).group(2) == "none"  # type: ignore[union-attr]


def test_the_monitor_reports_the_four_other_services_at_their_compose_names() -> None:
    peers = MonitorSettings.model_validate(
        {"api": {"peers": yaml.safe_load(env_of("monitor")["REBAL__API__PEERS"])}}
    ).api.peers
    assert {name: str(url) for name, url in peers.items()} == {
        name: f"http://{name}:{port}/" for name, port in PORTS.items() if name != "monitor"
    }


def test_prometheus_sends_its_alerts_to_alertmanager_which_hands_them_to_the_monitor() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [manager] = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    [receiver] = config["receivers"]
    [hook] = receiver["webhook_configs"]
    assert config["route"]["receiver"] == receiver["name"]
    assert hook["url"] == f"http://monitor:{PORTS['monitor']}/alerts"
    token = hook["http_config"]["authorization"]["credentials_file"]
    assert token == "/run/secrets/api_token" == env_of("monitor")["REBAL__API__TOKEN_FILE"]
    assert "api_token" in COMPOSE["services"]["alertmanager"]["secrets"]
    assert "api_token" in COMPOSE["services"]["monitor"]["secrets"]
