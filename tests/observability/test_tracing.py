"""One rebalance is one trace: from the operator's span, through the planner and the executor (and the
tracker's snapshot the run asks for), exported by the real services over OTLP."""

from __future__ import annotations

import pytest

from rebal.events import OrderFilled, OrderPlaced, RebalancePlanned, RunFinished, StartRebalance
from tests.e2e.flow import PORTFOLIO
from tests.observability.conftest import Observed

pytestmark = pytest.mark.timeout(180)


def test_the_operator_span_is_exported_by_the_operator_side(observed: Observed) -> None:
    [span] = observed.operator_spans.get_finished_spans()
    assert span.name == "rebal rebalance"
    assert span.attributes is not None and span.attributes["rebal.portfolio"] == PORTFOLIO
    assert f"{span.context.trace_id:032x}" == observed.trace_id


def test_one_rebalance_is_one_trace_across_the_services(observed: Observed) -> None:
    spans = observed.receiver.snapshot()
    run = [s for s in spans if s.trace_id == observed.trace_id]
    by_name = {(s.service, s.name) for s in run}

    command = StartRebalance.topic.subject(PORTFOLIO)
    planned = RebalancePlanned.topic.subject(PORTFOLIO)
    # The planner handled the operator's command as a child of the operator's span.
    [handled] = [s for s in run if s.service == "rebal-planner" and s.name == f"{command} process"]
    assert handled.parent_id == observed.operator_span_id
    assert ("rebal-planner", f"{planned} publish") in by_name
    # The executor ran the plan in the same trace, and what it published is in it too.
    assert ("rebal-executor", f"{planned} process") in by_name
    finished = observed.finished
    assert finished.placed == finished.filled > 0
    for kind in (OrderPlaced, OrderFilled, RunFinished):
        assert ("rebal-executor", f"{kind.topic.subject(PORTFOLIO)} publish") in by_name, kind.__name__
    # The snapshot the run asks for at its end is taken by the tracker within the same trace.
    assert any(s.service == "rebal-tracker" and s.name.endswith(" process") for s in run)

    # Every span of the run's messages is in this one trace: nothing of it started a trace of its own.
    run_subjects = {planned, *(k.topic.subject(PORTFOLIO) for k in (OrderPlaced, OrderFilled, RunFinished))}
    conversation = str(finished.correlation_id)
    elsewhere = [
        s
        for s in spans
        if s.trace_id != observed.trace_id
        and s.name.rsplit(" ", 1)[0] in run_subjects
        and s.attributes.get("messaging.message.conversation_id") == conversation
    ]
    assert elsewhere == []
