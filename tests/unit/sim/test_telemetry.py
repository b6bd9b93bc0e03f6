"""The sim's OpenTelemetry: what a service instrumented with the SDK would send, read back from the
SDK's in-memory exporters (the OTLP path itself is tested against a real Collector in
tests/integration/test_otel.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sim.telemetry import AUDIT, OTEL, Otel, parse_modes

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def otel() -> Iterator[tuple[Otel, InMemoryLogRecordExporter, InMemorySpanExporter]]:
    logs, spans = InMemoryLogRecordExporter(), InMemorySpanExporter()
    telemetry = Otel("risk-monitor", "4242", "unused", log_exporter=logs, span_exporter=spans)
    yield telemetry, logs, spans
    telemetry.shutdown()


def test_modes_are_audit_otel_or_both_and_a_wrong_one_is_named() -> None:
    assert parse_modes(None) == {AUDIT}
    assert parse_modes("otel") == {OTEL}
    assert parse_modes("audit, otel") == {AUDIT, OTEL}
    with pytest.raises(ValueError, match="unknown mode\\(s\\) otlp; known: audit, otel"):
        parse_modes("otlp")


def test_an_audit_event_is_a_log_record_with_its_type_as_event_name(otel: tuple) -> None:
    telemetry, logs, _ = otel
    telemetry.event("order_lost", "cid-1", "error", {"order_id": "o-1"})
    telemetry.flush()
    [record] = logs.get_finished_logs()
    assert record.log_record.event_name == "order_lost"
    assert dict(record.log_record.attributes) == {"order_id": "o-1", "status": "error",
                                                  "coordinator.correlation_id": "cid-1"}
    assert record.log_record.severity_number == SeverityNumber.ERROR
    assert record.resource.attributes["service.name"] == "risk-monitor"
    assert record.resource.attributes["service.instance.id"] == "4242"


def test_a_repeated_event_is_the_very_same_record_twice(otel: tuple) -> None:
    telemetry, logs, _ = otel
    telemetry.event("service_ready", "", "ok", {}, copies=2)
    telemetry.flush()
    first, second = (r.log_record for r in logs.get_finished_logs())
    assert (first.timestamp, first.event_name, dict(first.attributes)) == (
        second.timestamp, second.event_name, dict(second.attributes))
    assert "coordinator.correlation_id" not in first.attributes
    assert first.severity_number == SeverityNumber.INFO


def test_work_on_an_injected_record_is_a_child_of_the_trace_its_traceparent_names(otel: tuple) -> None:
    telemetry, logs, spans = otel
    headers = [("traceparent", f"00-{TRACE}-{PARENT}-01".encode()), ("correlation-id", b"cid-2")]
    with telemetry.span("take_order", headers, "cid-2", {"messaging.kafka.offset": 7}):
        telemetry.event("order_duplicate_ignored", "cid-2", "ok", {})
    telemetry.flush()
    [span] = spans.get_finished_spans()
    assert span.name == "take_order"
    assert f"{span.context.trace_id:032x}" == TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT
    assert span.attributes["coordinator.correlation_id"] == "cid-2"
    [record] = logs.get_finished_logs()
    assert record.log_record.trace_id == span.context.trace_id  # the log record is in the span


def test_without_a_traceparent_a_span_starts_its_own_trace(otel: tuple) -> None:
    telemetry, _, spans = otel
    with telemetry.span("take_order", [("correlation-id", b"x")], "", {}):
        pass
    telemetry.flush()
    [span] = spans.get_finished_spans()
    assert span.parent is None and "coordinator.correlation_id" not in span.attributes


def test_an_instance_left_out_is_not_in_the_resource() -> None:
    logs = InMemoryLogRecordExporter()
    telemetry = Otel("exchange", "", "unused", log_exporter=logs, span_exporter=InMemorySpanExporter())
    telemetry.event("service_started", "", "ok", {})
    telemetry.shutdown()
    [record] = logs.get_finished_logs()
    assert "service.instance.id" not in record.resource.attributes


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--telemetry", "otel"], {}, "telemetry 'otel' needs an OTLP endpoint: set SIM_OTLP_ENDPOINT"),
    ([], {"SIM_TELEMETRY": "audit,logs"}, "unknown mode(s) logs; known: audit, otel"),
])
def test_sim_run_refuses_telemetry_it_cannot_send(args: list[str], env: dict[str, str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "sim", "run", "exchange", "--grpc-port", "1", "--http-port", "2",
                           *args], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert "sim run exchange: " in done.stderr and message in done.stderr, done.stderr
