"""OpenTelemetry out: every execution is a trace.

The run is the root span (``run <scenario>``); each journal entry (a step, a probe, a rollback, a
revert) is a child span with the entry's own start and end; each injection is a live child span
(``inject <fault> <target>``), current while the fault goes in, so the chaos event says
``traceparent`` and a relay fault stamps it on every record it touches (the system's own spans then
join the experiment's trace); each verdict is a child of its injection's span, from the injection
to the decision. Attributes carry the execution and correlation ids, scenario, target and fault.

Off unless ``settings.tracing.endpoint`` is set: then the global tracer provider of this process
exports in batches over OTLP/gRPC, off the event loop. Off, every call here is a no-op of the
OpenTelemetry API and no header is added.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, Status, StatusCode

from agent.constants import TRACEPARENT
from agent.logs import get_logger
from agent.settings import TracingSettings

log = get_logger("agent.tracing")
_provider: Any = None


def configure(settings: TracingSettings, instance_id: str) -> bool:
    """Export this process's spans to ``settings.endpoint``; False when tracing is off."""
    global _provider  # noqa: PLW0603 - one provider per process, as OpenTelemetry has it
    if not settings.enabled or _provider is not None:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": settings.service_name, "service.instance.id": instance_id})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=settings.endpoint, insecure=not settings.endpoint.startswith("https://"))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=settings.export_delay * 1000))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing: executions are traces", endpoint=settings.endpoint, service=settings.service_name)
    return True


def shutdown() -> None:
    """Export what is left (bounded) and stop."""
    global _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.force_flush(5000)
        _provider.shutdown()
        _provider = None


def tracer() -> trace.Tracer:
    return trace.get_tracer("coordinator")


def headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers (``traceparent``, ``tracestate``); none when off."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def traceparent() -> str:
    """The current span's ``traceparent``, or empty."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def ids(span: Span) -> tuple[str, str]:
    """A span's trace and span id in hex, or empty when it records nothing."""
    context = span.get_span_context()
    if not context.is_valid:
        return "", ""
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def current_ids() -> tuple[str, str]:
    """The current span's trace and span id in hex, or empty."""
    return ids(trace.get_current_span())


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class RunTrace:
    """The spans of one execution."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.context = trace.set_span_in_context(span)
        self.trace_id, _ = ids(span)
        #: correlation id -> the context of its injection's span, for its verdicts
        self._injections: dict[str, otel_context.Context] = {}

    @classmethod
    def start(cls, execution_id: str, scenario: str, request_id: str, requester: str, started: float) -> RunTrace:
        return cls(tracer().start_span(f"run {scenario}", start_time=_ns(started), attributes={
            "coordinator.execution_id": execution_id, "coordinator.request_id": request_id,
            "coordinator.scenario": scenario, "coordinator.requester": requester}))

    @classmethod
    def off(cls) -> RunTrace:
        """Spans of nothing: before the run starts."""
        return cls(trace.INVALID_SPAN)

    def enter(self) -> object:
        """Make the run's span the current one (events published meanwhile carry its context);
        ``leave`` with what this returns, in the same task."""
        return otel_context.attach(self.context)

    @staticmethod
    def leave(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    def injection(self, step: str, fault: str, target: str) -> Span:
        return tracer().start_span(f"inject {fault} {target}", context=self.context, attributes={
            "coordinator.step": step, "coordinator.fault": fault, "coordinator.target": target})

    @contextlib.contextmanager
    def injecting(self, span: Span) -> Iterator[None]:
        """``span`` current while a task that injects is created (a task copies the context)."""
        token = otel_context.attach(trace.set_span_in_context(span, self.context))
        try:
            yield
        finally:
            otel_context.detach(token)

    def injected(self, span: Span, correlation_id: str, error: str = "") -> None:
        if correlation_id:
            span.set_attribute("coordinator.correlation_id", correlation_id)
            self._injections[correlation_id] = trace.set_span_in_context(span, self.context)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def entry(self, phase: str, name: str, ok: bool, started: float, ended: float, error: str = "",
              **attributes: str) -> None:
        span = tracer().start_span(f"{phase} {name}", context=self.context, start_time=_ns(started),
                                   attributes={"coordinator.phase": phase, **attributes})
        if not ok:
            span.set_status(Status(StatusCode.ERROR, error or "failed"))
        span.end(end_time=_ns(max(ended, started)))

    def verdict(self, correlation_id: str, name: str, status: str, reason: str, started: float,
                decided: float, failed: bool) -> None:
        parent = self._injections.get(correlation_id, self.context)
        span = tracer().start_span(f"verdict {name}", context=parent, start_time=_ns(started), attributes={
            "coordinator.correlation_id": correlation_id, "coordinator.expectation": name,
            "coordinator.verdict": status, "coordinator.reason": reason[:500]})
        if failed:
            span.set_status(Status(StatusCode.ERROR, reason[:200]))
        span.end(end_time=_ns(max(decided, started)))

    def end(self, status: str, reason: str, failed: bool) -> None:
        self.span.set_attribute("coordinator.status", status)
        self.span.set_attribute("coordinator.reason", reason[:500])
        if failed:
            self.span.set_status(Status(StatusCode.ERROR, reason[:200]))
        self.span.end()
