"""How a sim service tells what it does: audit events on Kafka (the default), OpenTelemetry logs and
spans over OTLP, or both (``SIM_TELEMETRY=audit,otel``).

With ``otel`` each audit event is also (or only) an OpenTelemetry log record, as a service
instrumented with the OpenTelemetry SDK writes one: its event name is the audit event's type, its
attributes the metadata, ``coordinator.correlation_id`` the correlation id, ERROR severity for an
``error`` status; the resource names the service (``service.name``) and its process
(``service.instance.id``, left out under the ``no_instance`` knob). The work an event belongs to is a
span (``span``), whose parent is the trace context an input record carried (``traceparent``), so a
record the coordinator injected joins the experiment's trace. Both go to an OTLP/gRPC endpoint
(``SIM_OTLP_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``), exported in batches off the event loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

AUDIT = "audit"
OTEL = "otel"
MODES = (AUDIT, OTEL)
CORRELATION_ATTRIBUTE = "coordinator.correlation_id"
#: how long a finished log record or span waits to be exported with others (ms); short, so a
#: verdict is not held up by the service's own batching
EXPORT_DELAY_MS = 200


def parse_modes(text: str | None) -> frozenset[str]:
    """``audit`` / ``otel`` / ``audit,otel``; empty means ``audit``."""
    modes = frozenset(part.strip() for part in (text or AUDIT).split(",") if part.strip())
    unknown = sorted(modes - set(MODES))
    if unknown or not modes:
        raise ValueError(f"SIM_TELEMETRY={text!r}: unknown mode(s) {', '.join(unknown) or '(none)'}; "
                         f"known: {', '.join(MODES)} (comma-separated)")
    return modes


class Otel:
    """One service's OpenTelemetry logger and tracer, exporting over OTLP/gRPC."""

    def __init__(self, service: str, instance: str, endpoint: str, *, log_exporter: Any = None,
                 span_exporter: Any = None) -> None:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {"service.name": service, "service.namespace": "sim"}
        if instance:
            attributes["service.instance.id"] = instance
        resource = Resource.create(attributes)
        if not instance:  # the SDK makes up an instance id: a process that says none must not have one
            resource = Resource({k: v for k, v in resource.attributes.items() if k != "service.instance.id"})
        insecure = not endpoint.startswith("https://")
        self.logs = LoggerProvider(resource=resource)
        self.logs.add_log_record_processor(BatchLogRecordProcessor(
            log_exporter or OTLPLogExporter(endpoint=endpoint, insecure=insecure),
            schedule_delay_millis=EXPORT_DELAY_MS))
        self.traces = TracerProvider(resource=resource)
        self.traces.add_span_processor(BatchSpanProcessor(
            span_exporter or OTLPSpanExporter(endpoint=endpoint, insecure=insecure),
            schedule_delay_millis=EXPORT_DELAY_MS))
        self.logger = self.logs.get_logger("sim")
        self.tracer = self.traces.get_tracer("sim")

    def event(self, event_type: str, correlation_id: str, status: str, metadata: dict[str, str],
              copies: int = 1) -> None:
        """The audit event as a log record; ``copies`` > 1 sends the very same record again (a
        retried export), which a reader must count once."""
        from opentelemetry._logs import SeverityNumber

        attributes: dict[str, Any] = {**metadata, "status": status}
        if correlation_id:
            attributes[CORRELATION_ATTRIBUTE] = correlation_id
        error = status == "error"
        now = time.time_ns()
        for _ in range(copies):
            self.logger.emit(timestamp=now, observed_timestamp=now, event_name=event_type, body=event_type,
                             severity_number=SeverityNumber.ERROR if error else SeverityNumber.INFO,
                             severity_text="ERROR" if error else "INFO", attributes=attributes)

    @contextlib.contextmanager
    def span(self, name: str, headers: Iterable[tuple[str, bytes | None]] | None, correlation_id: str,
             attributes: dict[str, Any]) -> Iterator[None]:
        from opentelemetry.propagate import extract

        carrier = {key: value.decode("latin-1") for key, value in headers or () if value is not None}
        span_attributes = {**attributes, **({CORRELATION_ATTRIBUTE: correlation_id} if correlation_id else {})}
        with self.tracer.start_as_current_span(name, context=extract(carrier), attributes=span_attributes):
            yield

    def flush(self, timeout_ms: int = 2000) -> None:
        self.logs.force_flush(timeout_ms)
        self.traces.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.flush()
        self.logs.shutdown()
        self.traces.shutdown()
