"""The kustomize overlays render with `kubectl kustomize` and have the shape the services need."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebal.settings import PORTS

ROOT = Path(__file__).resolve().parents[2]
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
    config = next(doc for doc in render("prod") if doc["kind"] == "ConfigMap")
    assert config["data"]["REBAL__NATS__URL"].startswith("tls://")
    assert config["data"]["REBAL__NATS__STREAM_REPLICAS"] == "3"
