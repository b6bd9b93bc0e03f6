"""OpenTelemetry in: the logs and spans a system already emits, read as audit events.

The OpenTelemetry Collector's Kafka exporter writes one OTLP export request per record (``otlp_proto``
encoding by default, or ``otlp_json``): a logs topic carries ``ExportLogsServiceRequest``s, a traces
topic ``ExportTraceServiceRequest``s. Both have the same wire shape, so a topic's signal is declared
(``OtlpSettings.logs_topics`` / ``spans_topics``), never guessed. Each log record, span and span event
becomes one ``Row`` for the judge:

- service: the resource's ``service.name``
- event type: a log record's ``event_name`` (OTLP 1.5), else its ``event_attribute`` (``event.name``);
  a span's ``event_attribute``, else its name; a span event's name. A log record with neither is not
  an audit event and is skipped (counted, not dead-lettered: most log lines are not events).
- instance: the first of ``instance_attributes`` on the resource (``service.instance.id``, the pod uid,
  the process id)
- correlation id: the ``correlation_attribute`` (``coordinator.correlation_id``) on the record, the
  span or the resource
- time: the record's time (else its observed time); a span's end; a span event's own time
- trace: ``trace_id`` in the metadata; an event without a correlation id in the trace an injection's
  span is in is tied to that injection (``Watch.trace_id``)
- identity: a span is its trace and span id; a span event adds its index; a log record is a digest of
  its bytes and its service: a record delivered twice counts once, two records never merge
- metadata: the record's attributes as text, with ``otlp.signal``, ``trace_id``, ``span_id``, the
  severity (``status: error`` from ERROR up) or the span's status (``status: error``) and duration.

A record that is not OTLP of its topic's signal raises ``DecodeError``: the worker dead-letters it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from agent.errors import DecodeError
from agent.settings import LOGS, SPANS, OtlpSettings
from agent.worker.judge import Row

#: OTLP/JSON writes these bytes fields as hex; protobuf's JSON mapping reads bytes as base64
_HEX_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})
_ERROR_SEVERITY = SeverityNumber.SEVERITY_NUMBER_ERROR


class Skipped:
    """Log records without an event name, counted (a log line is not an event)."""

    def __init__(self) -> None:
        self.count = 0


def rows_from(value: bytes | None, signal: str, settings: OtlpSettings, skipped: Skipped | None = None,
              ignore: frozenset[str] = frozenset()) -> list[Row]:
    """The audit rows of one OTLP record of ``signal`` (``logs`` or ``spans``); none from the services
    in ``ignore`` (the agent's own spans: they tell of the experiment, not of the system)."""
    request = _parse(value, ExportLogsServiceRequest() if signal == LOGS else ExportTraceServiceRequest())
    if isinstance(request, ExportLogsServiceRequest):
        rows = list(_log_rows(request, settings, skipped or Skipped()))
    else:
        rows = list(_span_rows(request, settings))
    return [row for row in rows if row.service not in ignore] if ignore else rows


def _parse(value: bytes | None, message: Any) -> Any:
    name = type(message).__name__
    if not value:
        raise DecodeError(f"an empty record where OTLP {name} was expected", reason="otlp-empty")
    if value.lstrip()[:1] == b"{":
        try:
            body = json.loads(value)
            json_format.ParseDict(_hex_ids_to_base64(body), message, ignore_unknown_fields=True)
        except (ValueError, json_format.ParseError) as exc:
            raise DecodeError(f"not OTLP/JSON {name}: {exc}", reason="otlp-undecodable") from exc
        return message
    try:
        message.ParseFromString(value)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"not OTLP/protobuf {name}: {exc}", reason="otlp-undecodable") from exc
    return message


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (_b64_of_hex(v) if k in _HEX_FIELDS and isinstance(v, str) else _hex_ids_to_base64(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def _b64_of_hex(text: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(text)).decode()
    except ValueError as exc:
        raise ValueError(f"trace or span id {text!r} is not hex") from exc


def _log_rows(request: ExportLogsServiceRequest, settings: OtlpSettings, skipped: Skipped) -> Iterator[Row]:
    for resource_logs in request.resource_logs:
        resource, service, instance = _resource(resource_logs.resource, settings)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                attributes = _attributes(record.attributes)
                event_type = record.event_name or attributes.get(settings.event_attribute, "")
                if not event_type:
                    skipped.count += 1
                    continue
                nanos = record.time_unix_nano or record.observed_time_unix_nano
                digest = hashlib.sha256(service.encode() + record.SerializeToString(deterministic=True))
                metadata = {**attributes, "otlp.signal": LOGS}
                if record.severity_text or record.severity_number:
                    metadata["severity"] = record.severity_text or SeverityNumber.Name(record.severity_number)
                if record.severity_number >= _ERROR_SEVERITY:
                    metadata.setdefault("status", "error")
                _ids(metadata, record.trace_id, record.span_id)
                yield Row(service, event_type, nanos / 1e9, _correlation(settings, attributes, resource),
                          metadata, f"otlp-log#{digest.hexdigest()[:32]}", instance)


def _span_rows(request: ExportTraceServiceRequest, settings: OtlpSettings) -> Iterator[Row]:
    for resource_spans in request.resource_spans:
        resource, service, instance = _resource(resource_spans.resource, settings)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _attributes(span.attributes)
                correlation = _correlation(settings, attributes, resource)
                identity = f"otlp-span#{span.trace_id.hex()}-{span.span_id.hex()}"
                if settings.spans_as_events:
                    metadata = {**attributes, "otlp.signal": SPANS, "span.name": span.name,
                                "duration_ms": f"{(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6:g}"}
                    if span.status.code == Status.STATUS_CODE_ERROR:
                        metadata.setdefault("status", "error")
                    _ids(metadata, span.trace_id, span.span_id)
                    yield Row(service, attributes.get(settings.event_attribute) or span.name,
                              (span.end_time_unix_nano or span.start_time_unix_nano) / 1e9, correlation, metadata,
                              identity, instance)
                for index, event in enumerate(span.events):
                    own = _attributes(event.attributes)
                    metadata = {**own, "otlp.signal": SPANS, "span.name": span.name}
                    _ids(metadata, span.trace_id, span.span_id)
                    yield Row(service, event.name, event.time_unix_nano / 1e9,
                              own.get(settings.correlation_attribute) or correlation, metadata,
                              f"{identity}#{index}", instance)


def _resource(resource: Resource, settings: OtlpSettings) -> tuple[dict[str, str], str, str]:
    """A resource's attributes, its service and the incarnation they name."""
    attributes = _attributes(resource.attributes)
    return (attributes, attributes.get("service.name", "unknown_service"),
            _first(attributes, settings.instance_attributes))


def _correlation(settings: OtlpSettings, *scopes: dict[str, str]) -> str:
    return _first_of(scopes, settings.correlation_attribute)


def _first_of(scopes: Iterable[dict[str, str]], key: str) -> str:
    for scope in scopes:
        if scope.get(key):
            return scope[key]
    return ""


def _first(attributes: dict[str, str], keys: list[str]) -> str:
    for key in keys:
        if attributes.get(key):
            return attributes[key]
    return ""


def _ids(metadata: dict[str, str], trace_id: bytes, span_id: bytes) -> None:
    if trace_id:
        metadata["trace_id"] = trace_id.hex()
    if span_id:
        metadata["span_id"] = span_id.hex()


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, str]:
    return {kv.key: _text(kv.value) for kv in attributes}


def _text(value: AnyValue) -> str:
    """An attribute's value as the text audit metadata holds."""
    which = value.WhichOneof("value")
    if which is None:
        return ""
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return f"{value.double_value:g}"
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "array_value":
        return json.dumps([_text(v) for v in value.array_value.values])
    return json.dumps({kv.key: _text(kv.value) for kv in value.kvlist_value.values})
