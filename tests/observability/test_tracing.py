"""One rebalance is one trace: from the operator's span through the planner to the executor, exported by
the real services over OTLP to a receiver of the test's own."""

from __future__ import annotations

import pytest

from rebal.events import OrderFilled, OrderPlaced, RebalancePlanned, RunFinished, StartRebalance
from tests.e2e.flow import PORTFOLIO
from tests.observability.conftest import Observed
from tests.observability.otlp import ReceivedSpan

pytestmark = pytest.mark.timeout(180)
COMMAND = StartRebalance.topic.subject(PORTFOLIO)
PLANNED = RebalancePlanned.topic.subject(PORTFOLIO)


def of_the_run(observed: Observed) -> list[ReceivedSpan]:
    return [s for s in observed.receiver.snapshot() if s.trace_id == observed.trace_id]


def test_the_operator_span_is_exported_by_the_operator_side(observed: Observed) -> None:
    [span] = observed.operator_spans.get_finished_spans()
    assert span.name == "rebal rebalance"
    assert span.attributes is not None and span.attributes["rebal.portfolio"] == PORTFOLIO
    assert f"{span.context.trace_id:032x}" == observed.trace_id


def test_the_operator_s_request_the_plan_and_the_executor_are_one_trace(observed: Observed) -> None:
    run = of_the_run(observed)
    names = {(s.service, s.name) for s in run}
    # The planner handled the operator's command as a child of the operator's span ...
    [handled] = [s for s in run if s.service == "rebal-planner" and s.name == f"{COMMAND} process"]
    assert handled.parent_id == observed.operator_span_id
    # ... published the plan from within it (FastStream: a "create" span, then its "publish") ...
    # (the run's closing snapshot makes the planner publish a preview later in the same trace: the plan
    # of the command is the one created under its handling)
    [created] = [
        s
        for s in run
        if s.service == "rebal-planner" and s.name == f"{PLANNED} create" and s.parent_id == handled.span_id
    ]
    [published] = [
        s
        for s in run
        if s.service == "rebal-planner" and s.name == f"{PLANNED} publish" and s.parent_id == created.span_id
    ]
    assert published.trace_id == created.trace_id
    # ... and the executor received that plan in the same trace.
    assert ("rebal-executor", f"{PLANNED} process") in names
    # No span of the plan's delivery started a trace of its own.
    elsewhere = [
        s
        for s in observed.receiver.snapshot()
        if s.trace_id != observed.trace_id
        and s.name.startswith(PLANNED)
        and s.attributes.get("messaging.message.conversation_id") == str(observed.finished.correlation_id)
    ]
    assert elsewhere == []


def test_the_run_its_orders_and_its_venue_calls_are_in_the_trace(observed: Observed) -> None:
    names = {(s.service, s.name) for s in of_the_run(observed)}
    for kind in (OrderPlaced, OrderFilled, RunFinished):
        assert ("rebal-executor", f"{kind.topic.subject(PORTFOLIO)} publish") in names, kind.__name__
    assert ("rebal-executor", "venue place_order") in names
    # The snapshot the run asks for at its end is taken by the tracker within the same trace.
    assert any(service == "rebal-tracker" and name.endswith(" process") for service, name in names)
