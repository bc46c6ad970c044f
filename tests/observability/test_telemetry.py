"""rebal.telemetry and the planner's figures, piece by piece: the exporter choice, the venue spans (on the
real paper exchange), a collector that is down, and the weights and drift with worked numbers."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Protocol, runtime_checkable

import asyncpg
import pytest
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rebal import service, telemetry
from rebal.core.diff import diff_trees
from rebal.core.market import Prices
from rebal.core.tree import parse_tree
from rebal.venue import InsufficientFunds, Venue
from rebal_devstack import _proc
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_devstack.stack import Child
from rebal_planner.planning import Weights
from rebal_planner.settings import PlannerSettings
from rebal_venues.paper import PaperVenue
from tests.paper_support import EXCHANGE, MARKETS, PRICES, STILL, Clock, migrated_pool

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
ACCOUNT = "demo/paper/spot"


@pytest.mark.parametrize(
    ("value", "exporters"),
    [
        (None, []),
        ("none", []),
        ("otlp", ["otlp"]),
        ("console", ["console"]),
        (" OTLP, console ", ["otlp", "console"]),
    ],
)
def test_the_exporter_is_what_otel_traces_exporter_says_and_off_when_unset(
    value: str | None, exporters: list[str]
) -> None:
    environ = {} if value is None else {"OTEL_TRACES_EXPORTER": value}
    assert telemetry.exporters_from(environ) == exporters
    if not exporters:
        assert telemetry.configure("planner", environ) is None  # no provider: tracing is off


@pytest.mark.parametrize(
    ("value", "traced"), [(None, False), ("none", False), ("otlp", True), ("bogus", False)]
)
def test_brokers_carry_the_telemetry_middleware_only_when_tracing_is_on(
    value: str | None, traced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    broker = service.make_broker(PlannerSettings(), "planner")
    kinds = [type(m) for m in broker.config.broker_middlewares]
    assert (NatsTelemetryMiddleware in kinds) is traced
    assert NatsPrometheusMiddleware in kinds


def test_an_unknown_exporter_is_named_with_the_choices() -> None:
    with pytest.raises(telemetry.TelemetryConfigError) as error:
        telemetry.exporters_from({"OTEL_TRACES_EXPORTER": "otlp,jaeger"})
    assert str(error.value) == (
        "OTEL_TRACES_EXPORTER='otlp,jaeger': unknown exporter jaeger (choose from otlp, console, none)"
    )


@runtime_checkable
class Cancels(Protocol):
    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> object: ...


@runtime_checkable
class Transfers(Protocol):
    async def transfer_between_worlds(self) -> None: ...


@pytest.fixture
async def pool(database: FreshDatabase) -> AsyncIterator[asyncpg.Pool]:
    async for opened in migrated_pool(database.dsn):
        yield opened


@pytest.mark.asyncio(loop_scope="session")
async def test_every_venue_call_is_a_child_span_of_the_handler_and_errors_pass_unchanged(
    pool: asyncpg.Pool,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    paper = PaperVenue.from_documents(EXCHANGE, pool, MARKETS, PRICES, Clock(), **STILL)
    assert await paper.seed(ACCOUNT, {"USDT": Decimal(1000)})
    venue: Venue = telemetry.traced_venue(paper, provider)
    assert venue.name == EXCHANGE
    # Capability checks by protocol (the executor's `Cancels`) see through the wrapper.
    assert isinstance(venue, Cancels) and not isinstance(venue, Transfers)

    with provider.get_tracer("test").start_as_current_span("handler") as handler:
        filled = await venue.place_order(ACCOUNT, "buy-1", "ETH/USDT", "buy", Decimal("0.1"))
        with pytest.raises(InsufficientFunds):
            await venue.place_order(ACCOUNT, "buy-2", "BTC/USDT", "buy", Decimal("1"))
        balances = await venue.balances(ACCOUNT)

    assert filled.status == "filled" and balances.free["ETH"] == Decimal("0.1")
    spans: list[ReadableSpan] = [s for s in exporter.get_finished_spans() if s.name != "handler"]
    assert [s.name for s in spans] == ["venue place_order", "venue place_order", "venue balances"]
    parent = handler.get_span_context()
    assert all(s.parent is not None and s.parent.span_id == parent.span_id for s in spans)
    assert all(s.kind == SpanKind.CLIENT for s in spans)
    placed, refused, read = spans
    assert dict(placed.attributes or {}) == {
        "rebal.venue": EXCHANGE,
        "rebal.venue.method": "place_order",
        "rebal.account": ACCOUNT,
        "rebal.client_order_id": "buy-1",
        "rebal.symbol": "ETH/USDT",
        "rebal.side": "buy",
    }
    assert placed.status.status_code == StatusCode.UNSET
    assert refused.status.status_code == StatusCode.ERROR
    assert [event.name for event in refused.events] == ["exception"]
    assert read.attributes is not None and read.attributes["rebal.account"] == ACCOUNT


def test_a_service_whose_collector_is_down_starts_and_serves(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    """Spans leave from a background thread: nothing waits for a collector at start or at stop."""
    dead = _proc.free_port()
    env = {
        "PYTHONUNBUFFERED": "1",
        "PATH": "/usr/bin:/bin",
        "REBAL__NATS__URL": nats_url,
        "REBAL__DATABASE__URL": database.dsn,
        "REBAL__HTTP__HOST": "127.0.0.1",
        "REBAL__HTTP__PORT": str(_proc.free_port()),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{dead}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")})
    planner = Child(
        "planner", ["-m", "rebal_planner"], env, tmp_path / "planner.log", ROOT, int(env["REBAL__HTTP__PORT"])
    )
    planner.start()
    try:
        planner.wait_ready(timeout=60)
        assert planner.readyz() == 200
    finally:
        planner.stop(timeout=30)  # generous: this machine is shared, and a SIGKILL would hide the answer
    log = (tmp_path / "planner.log").read_text()
    assert "tracing planner to otlp" in log
    # Stopped cleanly (the shutdown hooks, the last export attempt included, ran to their end).
    assert "Traceback" not in log, log
    assert "FastStream app shut down gracefully" in log, log


def demo_diff(target: dict[str, object]) -> Weights:
    real = parse_tree(json.loads((DEMO / "real.json").read_text()), "real")
    prices = Prices.parse(json.loads((DEMO / "prices.json").read_text()))
    return Weights.of(diff_trees(real, parse_tree(target, "target"), prices))


def test_the_weights_and_drift_of_the_demo_portfolio() -> None:
    """BTC 0.8 x 60000 = 48000, ETH 5 x 3000 = 15000, SOL 100 x 150 = 15000, USDT 22000: 100000.
    The target says crypto 70% (BTC half of it: 35%), cash 30%: BTC is 13 points over."""
    weights = demo_diff(json.loads((DEMO / "target.json").read_text()))
    assert weights.value == 100000.0
    assert weights.actual == {
        "paper": 1.0,
        "paper/spot": 1.0,
        "paper/spot/crypto": 0.78,
        "paper/spot/cash": 0.22,
    }
    assert weights.target == {
        "paper": 1.0,
        "paper/spot": 1.0,
        "paper/spot/crypto": 0.7,
        "paper/spot/cash": 0.3,
    }
    assert weights.drift == pytest.approx(0.13)


def test_no_drift_when_the_target_is_what_is_held() -> None:
    held = {
        "name": "demo",
        "children": [
            {
                "name": "paper",
                "weight": "100%",
                "children": [
                    {
                        "name": "spot",
                        "weight": "100%",
                        "children": [
                            {
                                "name": "crypto",
                                "weight": "78%",
                                "children": [
                                    {
                                        "name": name,
                                        "weight": value / 78000,
                                        "children": [{"name": asset.lower(), "asset": asset, "weight": 1}],
                                    }
                                    for name, asset, value in (
                                        ("trend", "BTC", 48000),
                                        ("meanrev", "ETH", 15000),
                                        ("arb", "SOL", 15000),
                                    )
                                ],
                            },
                            {
                                "name": "cash",
                                "weight": "22%",
                                "children": [{"name": "usdt", "asset": "USDT", "weight": "100%"}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    weights = demo_diff(held)
    assert weights.actual == pytest.approx(weights.target)
    assert weights.drift == pytest.approx(0.0, abs=1e-12)


def test_work_continued_after_its_handler_stays_in_the_handler_s_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("handler") as handler:
        kept = telemetry.carrier()
    assert set(kept) == {"traceparent"}
    with telemetry.continued_span("run", kept, provider=provider, run="r-1") as run:
        pass
    assert run.get_span_context().trace_id == handler.get_span_context().trace_id
    [finished] = [s for s in exporter.get_finished_spans() if s.name == "run"]
    assert finished.parent is not None and finished.parent.span_id == handler.get_span_context().span_id
    assert dict(finished.attributes or {}) == {"rebal.run": "r-1"}
    with telemetry.continued_span("orphan", None, provider=provider) as orphan:
        pass
    assert orphan.get_span_context().trace_id != handler.get_span_context().trace_id
