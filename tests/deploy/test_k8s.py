"""The kustomize overlays render with `kubectl kustomize` and have the shape the services need."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebal.settings import PORTS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NATS_USERS = re.findall(
    r"\{user: ([a-z-]+), password: \$([A-Z_]+)", (DEPLOY / "nats" / "auth.conf").read_text()
)
OVERLAYS = ("dev", "prod")
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def render(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_a_hardened_deployment_with_probes_on_its_port(overlay: str) -> None:
    docs = render(overlay)
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {f"rebal-{name}" for name in PORTS}
    for name, port in PORTS.items():
        spec = deployments[f"rebal-{name}"]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        [container] = spec["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["REBAL__HTTP__PORT"] == str(port)
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert all(doc["metadata"].get("namespace") for doc in docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_monitors_and_the_migration_job(overlay: str) -> None:
    docs = render(overlay)
    services, monitors = of_kind(docs, "Service"), of_kind(docs, "ServiceMonitor")
    for name, port in PORTS.items():
        assert services[f"rebal-{name}"]["spec"]["ports"][0]["port"] == port
        assert monitors[f"rebal-{name}"]["spec"]["endpoints"][0]["path"] == "/metrics"
    [job] = of_kind(docs, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "rebal.migrate"]


def test_the_executor_is_a_single_writer_and_prod_scales_the_stateless_services() -> None:
    for overlay in OVERLAYS:
        executor = of_kind(render(overlay), "Deployment")["rebal-executor"]["spec"]
        assert executor["replicas"] == 1 and executor["strategy"]["type"] == "Recreate"
    prod = of_kind(render("prod"), "Deployment")
    assert prod["rebal-planner"]["spec"]["replicas"] >= 2 and prod["rebal-tracker"]["spec"]["replicas"] >= 2
    config = of_kind(render("prod"), "ConfigMap")["rebal-config"]
    assert config["data"]["REBAL__NATS__URL"].startswith("tls://")
    assert config["data"]["REBAL__NATS__STREAM_REPLICAS"] == "3"


def named(docs: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    """The one `kind` whose name starts with `prefix` (generated ConfigMaps get a hash suffix)."""
    [doc] = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"].startswith(prefix)]
    return doc


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grafana_dashboards_are_config_maps_equal_to_deploy_grafana(overlay: str) -> None:
    dashboards = named(render(overlay), "ConfigMap", "rebal-grafana-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {
        path.name: path.read_text() for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    }
    assert dashboards["data"] == files
    assert all(json.loads(text)["uid"].startswith("rebal-") for text in files.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_alerts_are_a_prometheus_rule_equal_to_deploy_prometheus(overlay: str) -> None:
    rule = of_kind(render(overlay), "PrometheusRule")["rebal"]
    assert rule["spec"] == yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_as_its_own_nats_user_with_a_password_from_a_secret(overlay: str) -> None:
    deployments = of_kind(render(overlay), "Deployment")
    users = {user for user, _ in NATS_USERS}
    for name in PORTS:
        spec = deployments[f"rebal-{name}"]["spec"]["template"]["spec"]
        [container] = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["REBAL__NATS__USER"] == name and name in users
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        password_file = Path(env["REBAL__NATS__PASSWORD_FILE"])
        volume = next(n for n, path in mounts.items() if Path(path) == password_file.parent)
        sources = [source["secret"] for source in volumes[volume]["projected"]["sources"]]
        assert {"name": "rebal-nats-users", "items": [{"key": name, "path": password_file.name}]} in sources
        # No password in the manifests themselves.
        assert not any(
            "PASSWORD" in e["name"] and "value" in e and not e["name"].endswith("_FILE")
            for e in container["env"]
        )


def test_prod_trusts_the_nats_ca_over_tls_and_dev_does_not_need_it() -> None:
    prod, dev = of_kind(render("prod"), "Deployment"), of_kind(render("dev"), "Deployment")
    for name in PORTS:
        spec = prod[f"rebal-{name}"]["spec"]["template"]["spec"]
        [container] = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        ca = Path(env["REBAL__NATS__TLS_CA_FILE"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = {v["name"]: v for v in spec["volumes"]}[mounts[str(ca.parent)]]
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": ca.name}]
        [dev_container] = dev[f"rebal-{name}"]["spec"]["template"]["spec"]["containers"]
        assert "REBAL__NATS__TLS_CA_FILE" not in {e["name"] for e in dev_container["env"]}


def test_the_nats_chart_values_carry_auth_conf_and_every_user_s_password_from_the_secret() -> None:
    values = yaml.safe_load((DEPLOY / "k8s" / "helm" / "nats-values.yaml").read_text())
    assert values["config"]["nats"]["tls"]["enabled"] is True
    assert values["config"]["merge"]["$include"] == "auth.conf"
    assert values["configMap"]["merge"]["data"]["auth.conf"] == (DEPLOY / "nats" / "auth.conf").read_text()
    env = values["container"]["env"]
    for user, variable in NATS_USERS:
        assert env[variable] == {
            "valueFrom": {"secretKeyRef": {"name": "rebal-nats-users", "key": user.replace("-", "_")}}
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors_label_targets_as_the_dashboards_expect(overlay: str) -> None:
    monitors = of_kind(render(overlay), "ServiceMonitor")
    for name in PORTS:
        [endpoint] = monitors[f"rebal-{name}"]["spec"]["endpoints"]
        labels = {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]}
        assert labels == {"job": "rebal", "service": name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitor_reports_the_other_services_through_their_services(overlay: str) -> None:
    docs = render(overlay)
    services = of_kind(docs, "Service")
    [container] = of_kind(docs, "Deployment")["rebal-monitor"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    peers = json.loads(env["REBAL__API__PEERS"])
    assert set(peers) == set(PORTS) - {"monitor"}
    for name, url in peers.items():
        service = services[f"rebal-{name}"]
        assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_alertmanager_routes_rebal_s_alerts_to_the_monitor_with_the_api_token(overlay: str) -> None:
    docs = render(overlay)
    [config] = of_kind(docs, "AlertmanagerConfig").values()
    [receiver] = config["spec"]["receivers"]
    [hook] = receiver["webhookConfigs"]
    assert config["spec"]["route"]["receiver"] == receiver["name"]
    assert hook["url"].endswith("rebal-monitor:8105/alerts")
    assert hook["httpConfig"]["authorization"]["credentials"] == {"name": "rebal-api-token", "key": "token"}
    [monitor] = [d for name, d in of_kind(docs, "Deployment").items() if name.endswith("rebal-monitor")]
    env = {e["name"]: e.get("value") for e in monitor["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REBAL__API__TOKEN_FILE"] == "/run/secrets/rebal/api_token"
