"""OpenTelemetry out: an execution is a trace, its injections' context goes out with what they send
(the engine with in-memory fakes of our own interfaces and the SDK's in-memory span exporter; the
OTLP path to a real Collector is tested in tests/integration/test_otel.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agent._proto.coordinator.v1 import events_pb2 as S
from agent.drivers.base import FaultRequest
from agent.engine import Engine
from tests.unit.engine.test_toy_driver import SCENARIO, LampDriver, run_inline

EXPORTED = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> Iterator[None]:
    """This process's tracer provider (OpenTelemetry allows one), exporting to memory."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    current.add_span_processor(SimpleSpanProcessor(EXPORTED))
    yield


@pytest.fixture(autouse=True)
def _clear() -> None:
    EXPORTED.clear()


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def test_a_run_is_one_trace_with_a_span_per_injection_step_revert_and_rollback(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[FaultRequest] = []
    inject = LampDriver.inject

    async def spying(self: LampDriver, request: FaultRequest) -> dict[str, Any]:
        seen.append(request)
        return await inject(self, request)

    monkeypatch.setattr(LampDriver, "inject", spying)
    publisher = await run_inline(engine, SCENARIO)
    [result] = publisher.results
    assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
    spans = {s.name: s for s in EXPORTED.get_finished_spans()}
    root = spans["run dim-the-hall"]
    trace_id, root_id = _hex(root)
    assert result.trace_id == trace_id and len(trace_id) == 32
    assert root.parent is None and root.attributes["coordinator.status"] == "PASSED"
    assert root.attributes["coordinator.execution_id"] == result.execution_id
    assert {"inject dim hall", "inject blink hall", "steps dim", "steps flash", "revert dim", "revert flash",
            "rollbacks back-on"} <= set(spans), sorted(spans)
    for span in spans.values():
        assert _hex(span)[0] == trace_id, f"{span.name} is in the run's trace"
        assert span is root or (span.parent is not None and f"{span.parent.span_id:016x}" == root_id), span.name

    injected = {e.step_name: e for e in publisher.chaos_events if e.type == S.CHAOS_EVENT_TYPE_INJECTED}
    for step, fault in (("dim", "dim"), ("flash", "blink")):
        span = spans[f"inject {fault} hall"]
        assert span.attributes["coordinator.correlation_id"] == injected[step].correlation_id
        assert (injected[step].trace_id, injected[step].span_id) == _hex(span), "the chaos event names its span"
    # what the driver sends into the system carries the injection's span as parent
    assert [r.traceparent[:-3] for r in seen] == [f"00-{trace_id}-{injected[s].span_id}" for s in ("dim", "flash")]



async def test_a_failed_injection_and_the_run_it_ends_are_error_spans_with_the_reason(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: LampDriver, request: FaultRequest) -> dict[str, Any]:
        from agent.errors import ActionError

        raise ActionError("the bulb is gone")

    monkeypatch.setattr(LampDriver, "inject", broken)
    publisher = await run_inline(engine, SCENARIO)
    [result] = publisher.results
    assert result.status == S.EXECUTION_STATUS_ERROR
    spans = {s.name: s for s in EXPORTED.get_finished_spans()}
    failed = spans["inject dim hall"]
    assert failed.status.status_code == StatusCode.ERROR and "the bulb is gone" in (failed.status.description or "")
    assert "coordinator.correlation_id" not in failed.attributes
    root = spans["run dim-the-hall"]
    assert root.status.status_code == StatusCode.ERROR and root.attributes["coordinator.status"] == "ERROR"
    assert "the bulb is gone" in root.attributes["coordinator.reason"]
