"""The dashboards and alert rules against a real Prometheus scraping the running services after a rebalance.

Every PromQL expression of deploy/grafana/dashboards/*.json and deploy/prometheus/alerts.yml must parse
and return data; an alert's condition is usually false on a healthy system, so its signal (the expression
before the threshold) must return data. Metrics that exist only once something goes wrong (an exchange
error, a retried handler) cannot have data after a clean run: for those the expression must still parse
and the metric must be one the services expose.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from typing import Any

import pytest
import yaml

from tests.observability.conftest import DEPLOY, Observed, get_json, query

pytestmark = pytest.mark.timeout(180)
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
DATASOURCE_UID = "rebal-prometheus"
PROMTOOL = "/usr/bin/promtool"
# Series that appear only when it happens, with why a clean rebalance has none.
ON_EVENT = {
    "rebal_exchange_errors_total": "a venue answered an error",
    "rebal_handler_retries_total": "a handler failed and was retried",
    "faststream_received_processed_messages_exceptions_total": "a handler raised through FastStream",
    # Set by the executor's kill switch (halt/resume, and at start once it reads the halted state).
    "rebal_trading_halted": "the executor's kill switch sets it",
    # Set from an optimizer's allocation (test_planner_metrics.py): the demo's target is a file.
    "rebal_strategy_weight_ratio": "a target allocated by the optimizer carries it",
    "rebal_leverage_ratio": "a target allocated by the optimizer carries it",
    # The operators' API (the run here goes over the bus, and scrapes are not API requests).
    "rebal_api_requests_total": "an operator called the API",
    "rebal_api_request_seconds": "an operator called the API",
    # Funds: none is defined in the demo.
    "rebal_fund_users": "a fund is defined",
    "rebal_fund_pending_flows": "a fund is defined",
    "rebal_fund_last_cycle_timestamp_seconds": "a fund ran a cycle",
}
# Selectors for what only happens when something goes wrong, with why a clean rebalance has none.
ON_EVENT_SELECTORS = {
    'status!~"completed.*"': "a run that did not complete",
    'duplicate="true"': "a redelivered trigger published its event again",
}
METRIC = re.compile(r"\b((?:rebal|faststream|process)_[a-z_]+|up)\b(?!\s*\()")
THRESHOLD = re.compile(r"^(?P<signal>.+?)\s*(?:==|!=|>=|<=|>|<)\s*[-\d.e]+\s*$", re.DOTALL)


def dashboard_expressions() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$portfolio", "demo")
                out.append((f"{path.stem}: {panel['title']} [{target['refId']}]", expr))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in ALERTS["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    labels = {m.group(1) for m in re.finditer(r"\b([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr)}
    words = {m.group(1) for m in METRIC.finditer(expr)} - labels
    return {re.sub(r"_(bucket|count|sum)$", "", word) for word in words}


def exposed(observed: Observed) -> str:
    with urllib.request.urlopen(f"{observed.services['planner'].url}/metrics", timeout=5) as response:
        return str(response.read().decode())


def assert_data(observed: Observed, what: str, expr: str) -> None:
    answer = query(observed.prometheus, expr)
    assert answer["status"] == "success", f"{what}: {expr}: {answer.get('error')}"
    names = metric_names(expr)
    if (names and names <= ON_EVENT.keys()) or any(selector in expr for selector in ON_EVENT_SELECTORS):
        text = exposed(observed)
        for name in names:
            assert f"# TYPE {name} " in text, f"{what}: {name} is not a metric the services expose"
        return
    assert answer["data"]["result"], f"{what}: no data for {expr}"


def test_promtool_accepts_the_rules_and_the_config() -> None:
    for args in (
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
    ):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_required_alerts_are_there_and_every_expression_has_a_threshold() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {
        "RebalTargetDown",
        "RebalRunFailed",
        "RebalDriftHigh",
        "RebalStrategyReturnsStale",
        "RebalConsumerLag",
        "RebalExchangeErrorRate",
    } <= rules.keys()
    assert rules["RebalDriftHigh"]["for"] == "15m"
    for rule in rules.values():
        assert THRESHOLD.match(rule["expr"].strip()), rule["alert"]


def test_the_dashboards_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert [source["uid"] for source in provisioned["datasources"]] == [DATASOURCE_UID]
    assert [path.stem for path in DASHBOARDS] == ["execution", "messaging", "overview"]
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == DATASOURCE_UID for t in panel["targets"]), panel["title"]
    assert len(uids) == len(DASHBOARDS)


def test_prometheus_scrapes_the_five_services(observed: Observed) -> None:
    targets = get_json(f"{observed.prometheus}/api/v1/targets")["data"]["activeTargets"]
    assert sorted((t["labels"]["service"], t["health"]) for t in targets) == [
        (name, "up") for name in sorted(["executor", "monitor", "optimizer", "planner", "tracker"])
    ]


def test_every_alert_rule_loads_and_evaluates_without_error(observed: Observed) -> None:
    groups = get_json(f"{observed.prometheus}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert loaded.keys() == {rule["alert"] for rule in alert_rules()}
    health = {name: (rule["health"], rule.get("lastError", "")) for name, rule in loaded.items()}
    assert health == dict.fromkeys(loaded, ("ok", ""))


@pytest.mark.parametrize(
    ("what", "expr"), dashboard_expressions(), ids=[what for what, _ in dashboard_expressions()]
)
def test_every_dashboard_expression_returns_data_after_a_rebalance(
    observed: Observed, what: str, expr: str
) -> None:
    assert_data(observed, what, expr)


@pytest.mark.parametrize("rule", alert_rules(), ids=[rule["alert"] for rule in alert_rules()])
def test_every_alert_expression_parses_and_its_signal_returns_data(
    observed: Observed, rule: dict[str, Any]
) -> None:
    expr = rule["expr"].strip()
    answer = query(observed.prometheus, expr)
    assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"
    match = THRESHOLD.match(expr)
    assert match is not None
    assert_data(observed, rule["alert"], match["signal"])


def test_after_the_rebalance_the_figures_are_the_run_s(observed: Observed) -> None:
    """What an operator reads on the overview: the run completed, the drift fell within the band."""
    runs = query(observed.prometheus, 'rebal_runs_total{portfolio="demo"}')["data"]["result"]
    assert {r["metric"]["status"]: float(r["value"][1]) for r in runs} == {observed.finished.status: 1.0}
    build = query(observed.prometheus, "rebal_build_info")["data"]["result"]
    assert sorted(r["metric"]["service"] for r in build) == [
        "executor",
        "monitor",
        "optimizer",
        "planner",
        "tracker",
    ]
    # The demo trades on the paper exchange: the executor runs live, the other services dry-run.
    modes = {r["metric"]["service"]: r["metric"]["mode"] for r in build}
    assert modes == {
        "executor": "live",
        **dict.fromkeys(["monitor", "optimizer", "planner", "tracker"], "dry_run"),
    }
    letters = query(observed.prometheus, 'rebal_messages_dead_lettered_total{service="planner"}')
    assert [float(r["value"][1]) for r in letters["data"]["result"]] == [1.0]
    returns = query(observed.prometheus, "rebal_strategy_returns_received_total")["data"]["result"]
    assert [(r["metric"]["strategy"], float(r["value"][1])) for r in returns] == [("trend", 1.0)]
    lag = query(observed.prometheus, "rebal_consumer_pending_messages")["data"]["result"]
    consumers = {(r["metric"]["service"], r["metric"]["consumer"]) for r in lag}
    assert {
        ("planner", "planner-commands"),
        ("executor", "executor-plans"),
        ("tracker", "tracker-strategy-returns"),
        ("monitor", "monitor-events"),
    } <= consumers
    assert all(consumer.startswith(f"{service}-") for service, consumer in consumers)
    value = query(observed.prometheus, 'rebal_portfolio_value{portfolio="demo"}')["data"]["result"]
    assert len(value) == 1 and float(value[0]["value"][1]) > 0
