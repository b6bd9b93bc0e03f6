"""OpenTelemetry in, end to end on real parts: a service's OTLP logs and spans go to the stack's
OpenTelemetry Collector (built from its Go modules), whose Kafka exporter writes them to Kafka; the
stream worker reads them there and decides verdicts from them as from audit events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from agent._proto.coordinator.v1 import events_pb2
from agent.devstack import Stack, otelbuild
from agent.settings import Settings
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings
from tests.integration.test_worker import WORKER, _env, expectation, inject, verdicts

S = events_pb2


@pytest.fixture(scope="module")
def otel_env(stack: Stack, stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's OpenTelemetry Collector (built the first time) and a worker reading its topics."""
    stack.up(("otel",), extras=("otel",), timeout=120)
    yield {**_env(stack_env), **{k: v for k, v in stack.env().items() if k.startswith(("COORDINATOR_OTLP", "OTEL_"))}}
    stack.stop("otel")


@pytest.fixture(scope="module")
async def settings(otel_env: dict[str, str]) -> Settings:
    return await applied_settings(otel_env)


@pytest.fixture(scope="module")
def worker(otel_env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[AgentProcess]:
    process = AgentProcess(otel_env, tmp_path_factory.mktemp("worker") / "worker.log", WORKER, r"Ready")
    yield process.start(timeout=90)  # it makes the Collector's topics when missing
    process.stop()


def attribute(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def service(name: str) -> Resource:
    return Resource(attributes=[attribute("service.name", name), attribute("service.instance.id", uuid.uuid4().hex)])


def endpoint(otel_env: dict[str, str]) -> str:
    return otel_env["OTEL_EXPORTER_OTLP_ENDPOINT"].removeprefix("http://")


async def test_a_services_otlp_log_through_the_collector_decides_a_verdict(
    worker: AgentProcess, settings: Settings, otel_env: dict[str, str]
) -> None:
    cid, t0 = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS,
                                                                 event_type="service_ready", service="risk-monitor"))
    await asyncio.sleep(1.0)
    record = LogRecord(time_unix_nano=time.time_ns(), event_name="service_ready", body=AnyValue(string_value="ready"))
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=service("risk-monitor"), scope_logs=[ScopeLogs(log_records=[record])])])
    async with grpc.aio.insecure_channel(endpoint(otel_env)) as channel:  # OTLP/gRPC, as the SDKs send
        await LogsServiceStub(channel).Export(request, timeout=30)
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED, verdict.reason
    assert 0.9 < verdict.time_to_recover.ToNanoseconds() / 1e9 < 10, verdict.reason
    assert verdict.first_seen_at.ToNanoseconds() / 1e9 > t0


async def test_a_span_sent_over_otlp_http_twice_counts_once_joined_by_its_correlation_id(
    worker: AgentProcess, settings: Settings, otel_env: dict[str, str], stack: Stack
) -> None:
    once = expectation("checked-once", S.EXPECTATION_KIND_COUNT, event_type="CheckOrder", within=3.0,
                       attribution=S.ATTRIBUTION_CORRELATION_ID)
    once.min_count, once.max_count = 1, 1
    cid, t0 = await inject(settings, "risk-monitor", once)
    await asyncio.sleep(0.3)
    now = time.time_ns()
    span = Span(trace_id=uuid.uuid4().bytes, span_id=uuid.uuid4().bytes[:8], name="CheckOrder",
                start_time_unix_nano=now - 2_000_000, end_time_unix_nano=now,
                attributes=[attribute("coordinator.correlation_id", cid)])
    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=service("risk-monitor"), scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()
    http = f"http://127.0.0.1:{stack._load().ports['otel-http']}/v1/traces"  # noqa: SLF001 - the stack's port
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # a retried export: the same span again
            async with session.post(http, data=body, headers={"Content-Type": "application/x-protobuf"}) as answer:
                assert answer.status == 200, await answer.text()
    # the trail goes on past the deadline (event time), so the count is decided then
    later = LogRecord(time_unix_nano=int((t0 + 4) * 1e9), event_name="heartbeat")
    async with grpc.aio.insecure_channel(endpoint(otel_env)) as channel:
        await LogsServiceStub(channel).Export(ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=service("other-svc"), scope_logs=[ScopeLogs(log_records=[later])])]), timeout=30)
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED and verdict.count == 1, verdict.reason


def test_the_collector_is_built_into_the_cache_once(otel_env: dict[str, str]) -> None:
    binary = otelbuild.built()
    assert binary is not None and binary.is_file()
    assert Path(binary).parent.parent.name.startswith(f"otelcol-{otelbuild.COLLECTOR_VERSION}-")
