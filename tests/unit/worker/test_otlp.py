"""OpenTelemetry logs and spans as the Collector's Kafka exporter writes them (OTLP protobuf and
OTLP/JSON export requests) become the audit rows the judge reads."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from agent.errors import DecodeError
from agent.expectations import KINDS, Watch
from agent.settings import OtlpSettings, Settings
from agent.worker.judge import Row
from agent.worker.otlp import LOGS, SPANS, Skipped, rows_from

T0 = 1_780_000_000_000_000_000  # ns
CORRELATION = "16dc660b-4231-455f-8337-73aab9a39e9e"
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")


def kv(key: str, value: str | int | bool | list[str]) -> KeyValue:
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, list):
        any_value = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value]))
    else:
        any_value = AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def resource(service: str, **extra: str | int) -> Resource:
    return Resource(attributes=[kv("service.name", service), *(kv(k.replace("_", "."), v) for k, v in extra.items())])


def logs(*records: LogRecord, service: str = "risk-monitor") -> bytes:
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=resource(service, service_instance_id="pod-uid-1"), scope_logs=[ScopeLogs(log_records=records)])])
    return request.SerializeToString()


def test_a_log_record_with_an_event_name_is_an_audit_row_with_its_service_instance_time_and_correlation() -> None:
    record = LogRecord(time_unix_nano=T0, event_name="service_ready",
                       severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
                       attributes=[kv("coordinator.correlation_id", CORRELATION), kv("startup_ms", 812),
                                   kv("warm", True), kv("peers", ["a", "b"])],
                       trace_id=TRACE, span_id=SPAN, body=AnyValue(string_value="ready"))
    [row] = rows_from(logs(record), LOGS, OtlpSettings())
    assert (row.service, row.event_type, row.at, row.correlation_id, row.instance) == (
        "risk-monitor", "service_ready", T0 / 1e9, CORRELATION, "pod-uid-1")
    assert row.metadata["startup_ms"] == "812" and row.metadata["warm"] == "true"
    assert json.loads(row.metadata["peers"]) == ["a", "b"]
    assert row.metadata["trace_id"] == TRACE.hex() and row.metadata["span_id"] == SPAN.hex()
    assert row.metadata["otlp.signal"] == "logs" and "status" not in row.metadata
    assert row.identity.startswith("otlp-log#")


def test_the_event_attribute_names_an_event_and_a_line_without_one_is_skipped_and_counted() -> None:
    named = LogRecord(time_unix_nano=T0, attributes=[kv("event.name", "order_lost")],
                      severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR, severity_text="ERROR")
    plain = LogRecord(time_unix_nano=T0, body=AnyValue(string_value="connected to kafka"))
    skipped = Skipped()
    [row] = rows_from(logs(named, plain), LOGS, OtlpSettings(), skipped)
    assert row.event_type == "order_lost" and row.metadata["status"] == "error" and row.metadata["severity"] == "ERROR"
    assert skipped.count == 1
    custom = LogRecord(time_unix_nano=T0, attributes=[kv("audit.type", "order_filled")])
    [row] = rows_from(logs(custom), LOGS, OtlpSettings(event_attribute="audit.type"))
    assert row.event_type == "order_filled"


def test_the_same_record_delivered_twice_has_one_identity_and_two_records_never_merge() -> None:
    one = LogRecord(time_unix_nano=T0, event_name="order_lost", attributes=[kv("order_id", "o-1")])
    two = LogRecord(time_unix_nano=T0, event_name="order_lost", attributes=[kv("order_id", "o-2")])
    first = rows_from(logs(one, two), LOGS, OtlpSettings())
    again = rows_from(logs(one), LOGS, OtlpSettings())
    assert first[0].identity == again[0].identity
    assert first[0].identity != first[1].identity
    other_service = rows_from(logs(one, service="exchange"), LOGS, OtlpSettings())
    assert other_service[0].identity != first[0].identity


def test_spans_and_their_events_are_rows_identified_by_trace_and_span() -> None:
    span = Span(trace_id=TRACE, span_id=SPAN, name="CheckOrder", start_time_unix_nano=T0,
                end_time_unix_nano=T0 + 2_500_000, status=Status(code=Status.STATUS_CODE_ERROR),
                attributes=[kv("coordinator.correlation_id", CORRELATION)],
                events=[Span.Event(name="order_rejected", time_unix_nano=T0 + 1_000_000,
                                   attributes=[kv("reason", "limit")])])
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource("risk-monitor", process_pid=4242), scope_spans=[ScopeSpans(spans=[span])])])
    spans, events = rows_from(request.SerializeToString(), SPANS, OtlpSettings())
    assert (spans.event_type, spans.at, spans.correlation_id, spans.instance) == (
        "CheckOrder", (T0 + 2_500_000) / 1e9, CORRELATION, "4242")
    assert spans.metadata["status"] == "error" and spans.metadata["duration_ms"] == "2.5"
    assert spans.identity == f"otlp-span#{TRACE.hex()}-{SPAN.hex()}"
    assert (events.event_type, events.at, events.metadata["reason"]) == ("order_rejected", (T0 + 1_000_000) / 1e9,
                                                                         "limit")
    assert events.correlation_id == CORRELATION, "a span event inherits its span's correlation id"
    assert events.identity == spans.identity + "#0"
    only_events = rows_from(request.SerializeToString(), SPANS, OtlpSettings(spans_as_events=False))
    assert [r.event_type for r in only_events] == ["order_rejected"]


def test_otlp_json_as_the_collector_writes_it_hex_ids_and_string_nanoseconds() -> None:
    body = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "trading-engine"}}]},
        "scopeLogs": [{"scope": {"name": "sim"}, "logRecords": [{
            "timeUnixNano": str(T0), "severityNumber": 17, "severityText": "ERROR", "eventName": "order_lost",
            "traceId": TRACE.hex(), "spanId": SPAN.hex(), "body": {"stringValue": "no fill within 10s"},
            "attributes": [{"key": "coordinator.correlation_id", "value": {"stringValue": CORRELATION}},
                           {"key": "order_id", "value": {"stringValue": "o-9"}}],
            "someFutureField": 1}]}]}]}
    [row] = rows_from(json.dumps(body).encode(), LOGS, OtlpSettings())
    assert (row.service, row.event_type, row.at, row.correlation_id) == ("trading-engine", "order_lost", T0 / 1e9,
                                                                         CORRELATION)
    assert row.metadata["trace_id"] == TRACE.hex() and row.metadata["status"] == "error"


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "otlp-empty"),
    (b"\xff\xff\xff", "otlp-undecodable"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "not hex"}]}]}]}', "otlp-undecodable"),
    (b'{"resourceLogs": 7}', "otlp-undecodable"),
])
def test_a_record_that_is_not_otlp_is_a_decode_error_naming_why(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        rows_from(value, LOGS, OtlpSettings())
    assert caught.value.reason == reason
    assert "ExportLogsServiceRequest" in str(caught.value)


def test_a_row_from_otlp_is_judged_like_an_audit_event() -> None:
    record = LogRecord(time_unix_nano=T0 + 800_000_000, event_name="service_ready")
    [row] = rows_from(logs(record), LOGS, OtlpSettings())
    injected = T0 / 1e9
    watch = Watch(execution_id="e", correlation_id=CORRELATION, name="ready-again", kind="appears",
                  injected_at=injected, deadline=injected + 15, event_type="service_ready", service="risk-monitor",
                  attribution="window")
    assert "appears" in KINDS
    assert watch.observe(row.observation(), 1.0)
    verdict = watch.decide(now=injected + 2, watermark=injected + 1, grace=1.0)
    assert verdict is not None and verdict.status == "PASSED", verdict
    assert "0.8" in verdict.reason, verdict.reason


def test_an_event_without_a_correlation_id_in_the_injections_trace_is_tied_to_the_injection() -> None:
    def span(trace: bytes, name: str = "take_order", correlation: str = "") -> Row:
        attributes = [kv("coordinator.correlation_id", correlation)] if correlation else []
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=resource("trading-engine"), scope_spans=[ScopeSpans(spans=[Span(
                trace_id=trace, span_id=SPAN, name=name, start_time_unix_nano=T0 + 10**8,
                end_time_unix_nano=T0 + 2 * 10**8, attributes=attributes)])])])
        [row] = rows_from(request.SerializeToString(), SPANS, OtlpSettings())
        return row

    injected = T0 / 1e9

    def watch() -> Watch:
        return Watch(execution_id="e", correlation_id=CORRELATION, name="taken", kind="appears",
                     injected_at=injected, deadline=injected + 5, event_type="take_order",
                     attribution="correlation-id", trace_id=TRACE.hex())

    assert watch().observe(span(TRACE).observation(), 1.0), "in the injection's trace, no id of its own"
    assert not watch().observe(span(bytes(16)).observation(), 1.0), "another trace"
    assert not watch().observe(span(TRACE, correlation="another-injection").observation(), 1.0), \
        "its own correlation id names another injection"
    untraced = watch()
    untraced.trace_id = ""
    assert not untraced.observe(span(TRACE).observation(), 1.0), "an injection not traced ties nothing by trace"


def test_the_agents_own_spans_are_not_audit_events() -> None:
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource(service), scope_spans=[ScopeSpans(spans=[Span(
            trace_id=TRACE, span_id=SPAN, name="inject restart risk-monitor", start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 1)])]) for service in ("chaos-coordinator", "risk-monitor")])
    rows = rows_from(request.SerializeToString(), SPANS, OtlpSettings(), ignore=frozenset({"chaos-coordinator"}))
    assert [r.service for r in rows] == ["risk-monitor"]


def test_settings_name_the_topics_and_their_signals_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_OTLP__LOGS_TOPICS", '["otlp_logs"]')
    monkeypatch.setenv("COORDINATOR_OTLP__SPANS_TOPICS", '["otlp_spans"]')
    monkeypatch.setenv("COORDINATOR_OTLP__EVENT_ATTRIBUTE", "audit.type")
    otlp = Settings().otlp
    assert otlp.topics() == ["otlp_logs", "otlp_spans"] and otlp.event_attribute == "audit.type"
    assert (otlp.signal_of("otlp_logs"), otlp.signal_of("otlp_spans"), otlp.signal_of("audit.events.v1")) == (
        "logs", "spans", None)
