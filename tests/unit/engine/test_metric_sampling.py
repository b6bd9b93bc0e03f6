"""The agent samples a metric expectation's query after the injection and publishes each answer as
an audit event for the worker (the engine with in-memory fakes of our interfaces; the query answered
by a stand-in for the Prober's PromQL call; the real Prometheus path is in
tests/integration/test_prometheus.py)."""

from __future__ import annotations

import pytest

from agent._proto.coordinator.v1 import events_pb2 as S
from agent.engine import Engine
from agent.errors import ProbeError
from tests.unit.engine.test_toy_driver import run_inline

SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: dim-and-measure}
spec:
  targets:
    hall: {driver: lamps, selector: {lamp: hall}}
  steps:
    - {name: dim, fault: dim, target: hall, duration: 0.5s, parameters: {level: 10}}
  expectations:
    - name: light-back
      after: dim
      metric:
        query: 'avg(lamp_brightness)'
        tolerance: {range: {min: 50}}
        within: 1s
        interval: 0.1s
"""


async def test_each_answer_is_a_sample_event_until_the_first_accepted_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([10.0, 30.0, 80.0, 90.0])
    asked: list[str] = []

    async def promql(query: str, url: str | None, timeout: float) -> float:
        asked.append(query)
        return next(answers)

    monkeypatch.setattr(engine.prober, "promql", promql)
    publisher = await run_inline(engine, SCENARIO)
    [injected] = [e for e in publisher.chaos_events if e.type == S.CHAOS_EVENT_TYPE_INJECTED]
    samples = [(e.metadata["value"], e.metadata["accepted"]) for e, _ in publisher.audit_events]
    assert samples == [("10", "false"), ("30", "false"), ("80", "true")], "no more once recovered"
    assert asked == ["avg(lamp_brightness)"] * 3
    for event, source in publisher.audit_events:
        assert (event.event_type, event.service_name, event.correlation_id) == (
            "metric_sample", "hall", injected.correlation_id)
        assert event.metadata["expectation"] == "light-back" and event.metadata["platform"] == "prometheus"
        assert source == "/coordinator/metrics/agent-a/1" and event.id
    assert "observed 10.0, expected within [50.0, None]" in publisher.audit_events[0][0].metadata["reason"]
    [message] = injected.expectations
    assert message.kind_name == "metric" and message.rule["query"] == "avg(lamp_brightness)"


async def test_a_query_that_fails_is_said_once_in_the_journal_and_sends_no_sample(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def promql(query: str, url: str | None, timeout: float) -> float:
        raise ProbeError("no Prometheus to ask: give prometheus.url in the probe or set COORDINATOR_PROMETHEUS_URL")

    monkeypatch.setattr(engine.prober, "promql", promql)
    publisher = await run_inline(engine, SCENARIO)
    assert publisher.audit_events == []
    [result] = publisher.results
    entries = [j for j in result.journal if j.phase == "metrics"]
    assert [(j.name, j.status) for j in entries] == [("light-back", S.JOURNAL_ENTRY_STATUS_FAILED)]
    assert "COORDINATOR_PROMETHEUS_URL" in entries[0].error
