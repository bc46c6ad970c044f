"""Tracing: one trace per rebalance, from the operator's request through the planner and the executor to
the venue calls.

- When tracing is on, every broker carries FastStream's `NatsTelemetryMiddleware` (see
  `rebal.service.make_broker`; off, it is left out: it would cost ~0.14 ms per message for nothing): a
  consumed message continues the trace named in its ``traceparent`` header, and what a handler publishes
  carries the handler's span on. Nothing else is needed in the services' handlers.
- The operator's side starts the trace: the CLI and the API wrap the command they publish in
  `operator_span` and, when they publish with a bare nats client rather than a FastStream broker, add
  `inject(headers)` to the message headers.
- Venue calls get a span each: `traced_venue(venue)` wraps any venue where venues are opened.
- Work that continues after its handler returned (the executor's worker running a journaled plan) keeps
  the trace with `carrier()` (kept with the work) and `continued_span(name, carried)` around it.

The exporter is chosen by the standard ``OTEL_TRACES_EXPORTER`` variable: ``otlp`` (HTTP/protobuf, to
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``console``, or ``none``; unset
means ``none`` (tracing is off outside docker-compose). Spans leave through a batch processor on a
background thread, so a collector that is down never blocks start-up nor a handler. The other ``OTEL_*``
variables (endpoint, headers, ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_SERVICE_NAME``) are read by the SDK itself.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind

log = logging.getLogger("rebal.telemetry")
TRACER_NAME = "rebal"
EXPORTERS = ("otlp", "console", "none")
V = TypeVar("V")
# Venue call arguments recorded on their spans (bounded, and no secrets: venues take no keys per call).
VENUE_ATTRIBUTES = ("account", "symbol", "side", "client_order_id")


class TelemetryConfigError(ValueError):
    """``OTEL_TRACES_EXPORTER`` names an exporter Rebal does not know."""


def exporters_from(environ: Mapping[str, str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for (comma-separated, as the OTel spec allows)."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "none")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise TelemetryConfigError(
            f"OTEL_TRACES_EXPORTER={raw!r}: unknown exporter {', '.join(unknown)} "
            f"(choose from {', '.join(EXPORTERS)})"
        )
    return [name for name in names if name != "none"]


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        # Imported only when chosen: the HTTP exporter pulls in requests and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return ConsoleSpanExporter()


def configure(service: str, environ: Mapping[str, str]) -> TracerProvider | None:
    """Install the process's tracer provider for `service` as the environment asks; None when tracing is
    off. Nothing here connects anywhere: the exporters send from a background thread."""
    names = exporters_from(environ)
    if not names:
        return None
    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or f"rebal-{service}"})
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    log.info("tracing %s to %s", service, ", ".join(names))
    return provider


def shutdown(provider: TracerProvider | None) -> None:
    """Send what is buffered (bounded by the processor's export timeout) and stop the exporters."""
    if provider is not None:
        provider.shutdown()


@contextmanager
def session(service: str, environ: Mapping[str, str]) -> Iterator[TracerProvider | None]:
    """Tracing for a short-lived process (the CLI): configured on entry, flushed on exit."""
    provider = configure(service, environ)
    try:
        yield provider
    finally:
        shutdown(provider)


def tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """Rebal's tracer from `provider`, or from the process's provider (`configure`)."""
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


@contextmanager
def operator_span(
    name: str, *, provider: trace.TracerProvider | None = None, **attributes: str | int | float | bool
) -> Iterator[Span]:
    """The root of a rebalance's trace: an operator's request (``rebal rebalance``, ``POST
    /portfolio/rebalance``). Whatever is published inside it through a FastStream broker carries it on;
    a bare nats publish adds `inject(headers)`. Attributes are recorded as ``rebal.<key>``."""
    with tracer(provider).start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes={f"rebal.{k}": v for k, v in attributes.items()}
    ) as span:
        yield span


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current trace context (``traceparent``) to message headers, and return them."""
    propagate.inject(headers)
    return headers


def carrier() -> dict[str, str]:
    """The current trace context as a small dict of headers, to keep with work done later (a run the
    executor's worker picks up after the handler that received its plan has returned)."""
    return dict(inject({}))


@contextmanager
def continued_span(
    name: str,
    carried: Mapping[str, str] | None,
    *,
    provider: trace.TracerProvider | None = None,
    **attributes: str | int | float | bool,
) -> Iterator[Span]:
    """A span in the trace `carried` names (from `carrier`; a new trace when there is none): what is
    published and every venue call inside it belong to that trace."""
    context = propagate.extract(dict(carried or {}))
    with tracer(provider).start_as_current_span(
        name, context=context, attributes={f"rebal.{k}": v for k, v in attributes.items()}
    ) as span:
        yield span


class TracedVenue:
    """A venue whose every coroutine method runs in a client span ``venue <method>``, a child of the
    handler's span, with the venue, account, symbol, side and client order id as attributes; a venue
    error is recorded on the span and raised unchanged. Works for any venue (paper, ccxt) behind the
    port, whatever methods the port grows; other attributes pass through."""

    def __init__(self, venue: Any, provider: trace.TracerProvider | None = None) -> None:
        self._venue = venue
        self._tracer = tracer(provider)

    @property
    def name(self) -> str:
        return str(self._venue.name)

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._venue, attribute)
        if not inspect.iscoroutinefunction(target):
            return target
        signature = inspect.signature(target)

        @functools.wraps(target)
        async def call(*args: Any, **kwargs: Any) -> Any:
            attributes: dict[str, str] = {"rebal.venue": self.name, "rebal.venue.method": attribute}
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = {}
            for key in VENUE_ATTRIBUTES:
                if isinstance(bound.get(key), str):
                    attributes[f"rebal.{key}"] = bound[key]
            # An exception is recorded on the span (status ERROR) and raised unchanged.
            with self._tracer.start_as_current_span(
                f"venue {attribute}", kind=SpanKind.CLIENT, attributes=attributes
            ):
                return await target(*args, **kwargs)

        return call

    def __repr__(self) -> str:
        return f"TracedVenue({self._venue!r})"


def traced_venue(venue: V, provider: trace.TracerProvider | None = None) -> V:
    """`venue` with a span around each call (apply where venues are opened)."""
    return cast(V, TracedVenue(venue, provider))


def traced_venues(venues: Mapping[str, V]) -> dict[str, V]:
    """Every venue of a ``{exchange: venue}`` mapping, traced (what the executor and tracker open)."""
    return {name: traced_venue(venue) for name, venue in venues.items()}
