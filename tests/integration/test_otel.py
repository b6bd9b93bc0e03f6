"""OpenTelemetry in, end to end on real parts: a service's OTLP logs and spans go to the stack's
OpenTelemetry Collector (built from its Go modules), whose Kafka exporter writes them to Kafka; the
stream worker reads them there and decides verdicts from them as from audit events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

from agent import client
from agent._proto.coordinator.v1 import events_pb2
from agent.devstack import Stack, otelbuild
from agent.settings import Settings
from sim.launch import Sim, SimInfo, SimOptions
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, read_all
from tests.integration.test_flagship import FLAGSHIP, PARAMS, _processes, _restart, flagship_env
from tests.integration.test_worker import WORKER, _env, expectation, inject, verdicts

S = events_pb2


@pytest.fixture(scope="module")
def otel_env(stack: Stack, stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's OpenTelemetry Collector (built the first time) and a worker reading its topics."""
    stack.up(("otel",), extras=("otel",), timeout=120)
    yield {**_env(stack_env), **{k: v for k, v in stack.env().items()
                                 if k.startswith(("COORDINATOR_OTLP", "COORDINATOR_TRACING", "OTEL_"))}}
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


# -- the flagship judged from OpenTelemetry alone --------------------------------------------------
# the sim's services send no audit event at all: their OTLP logs and spans go to the Collector, whose
# Kafka exporter writes them where the worker reads (sim -> OTLP -> Collector -> Kafka -> worker)


@pytest.fixture(scope="module")
def otel_sim(otel_env: dict[str, str], stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Sim, SimInfo]]:
    sim = Sim(tmp_path_factory.mktemp("otel-sim"))
    sfx = uuid.uuid4().hex[:8]
    info = sim.up(SimOptions(kafka=stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
                             # the SDK's export beside each order costs CPU: a little more time than the
                             # flagship's sim before an order counts as lost (still inside its 10 s lossWindow)
                             redis_url=stack_env["COORDINATOR_REDIS_URL"], rate=20, order_timeout=6, loss_timeout=7,
                             audit_topic=f"test.{sfx}.audit", orders_topic=f"test.{sfx}.orders", telemetry="otel",
                             otlp_endpoint=otel_env["OTEL_EXPORTER_OTLP_ENDPOINT"]))
    yield sim, info
    sim.down()


@pytest.fixture(scope="module")
def otel_flagship_env(otel_env: dict[str, str], stack_env: dict[str, str], otel_sim: tuple[Sim, SimInfo]
                      ) -> dict[str, str]:
    # the worker reads the Collector's topics; the agent traces its executions to the Collector
    otlp = {k: v for k, v in otel_env.items() if k.startswith(("COORDINATOR_OTLP", "COORDINATOR_TRACING"))}
    return flagship_env(stack_env, otel_sim[1], **otlp)


@pytest.fixture(scope="module")
async def flagship_settings(otel_flagship_env: dict[str, str]) -> Settings:
    return await applied_settings(otel_flagship_env)


@pytest.fixture(scope="module")
def flagship_running(otel_flagship_env: dict[str, str], flagship_settings: Settings,
                     otel_sim: tuple[Sim, SimInfo], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    logs = tmp_path_factory.mktemp("otel-flagship")
    worker = AgentProcess(otel_flagship_env, logs / "worker.log", WORKER, r"Ready").start(timeout=90)
    agent = AgentProcess(otel_flagship_env, logs / "agent.log").start()
    _drained(otel_sim[1])
    yield
    agent.stop()
    worker.stop()


def _drained(info: SimInfo) -> None:
    """Until the orders the load generator sent before the agent's relay ran (thousands, when the
    worker took long to start) have reached the trading engine and are settled, and then one loss
    timeout more: losses of that backlog come before any run, never inside its window."""
    import urllib.request

    url = f"http://127.0.0.1:{info.ports['trading-engine']['http']}/api/v1/status"

    def pending() -> int:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(json.loads(answer.read()).get("pending", 0))

    arriving = time.monotonic() + 10  # the relay starts with the agent; its backlog comes at once
    while pending() < 100 and time.monotonic() < arriving:
        time.sleep(0.5)
    deadline, calm = time.monotonic() + 120, 0
    while calm < 3 and time.monotonic() < deadline:
        calm = calm + 1 if pending() < 100 else 0
        time.sleep(1)
    time.sleep(7)


async def _flagship(settings: Settings) -> Any:
    result = await client.run_and_follow(settings, client.build_request(FLAGSHIP, PARAMS), timeout=120)
    assert result is not None, "no result"
    return result


@pytest.mark.timeout(300)
async def test_the_flagship_passes_from_the_sims_opentelemetry_alone(
    otel_sim: tuple[Sim, SimInfo], flagship_running: None, flagship_settings: Settings
) -> None:
    _, info = otel_sim
    result = await _flagship(flagship_settings)
    verdicts = {v.expectation_name: v for v in result.verdicts}
    assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert set(verdicts) == {"risk-monitor-ready-again", "risk-monitor-time-to-recover", "risk-reports-resume",
                             "no-order-lost"}
    recovered = verdicts["risk-monitor-time-to-recover"].time_to_recover.ToNanoseconds() / 1e9
    assert 0 < recovered < 8, verdicts["risk-monitor-time-to-recover"].reason
    # the sim wrote no audit event: the audit topic holds only the agent's own platform events
    # (process_exited/process_started), none of the event types the verdicts were decided by
    audit = await read_all(flagship_settings.kafka_bootstrap_servers, info.audit_topic)
    assert audit, "the agent's platform events are there"
    assert {dict(r.headers)["ce_source"] for r in audit} == {b"/coordinator/platform/supervisor"}
    assert {json.loads(r.value)["event_type"] for r in audit} <= {"process_exited", "process_started"}


@pytest.mark.timeout(300)
async def test_the_flagship_fails_from_opentelemetry_when_the_risk_monitor_never_becomes_ready_again(
    otel_sim: tuple[Sim, SimInfo], flagship_running: None, flagship_settings: Settings
) -> None:
    sim, info = otel_sim
    sim.knobs_file.write_text(json.dumps({"risk-monitor": {"never_ready": True}}))  # for its next start
    try:
        result = await _flagship(flagship_settings)
        assert result.status == S.EXECUTION_STATUS_FAILED
        assert "risk-monitor-ready-again: no 'service_ready from risk-monitor' by the deadline" in result.reason
        verdicts = {v.expectation_name: v for v in result.verdicts}
        assert verdicts["risk-reports-resume"].status == S.VERDICT_STATUS_FAILED
        assert verdicts["no-order-lost"].status == S.VERDICT_STATUS_FAILED, verdicts["no-order-lost"].reason
    finally:
        _restart(sim, info, "risk-monitor")


READY_ONCE = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: ready-once}
spec:
  targets:
    risk-monitor: {driver: supervisor, selector: {program: risk-monitor}}
  steps:
    - {name: restart-risk-monitor, fault: restart, target: risk-monitor}
  expectations:
    - {name: ready-once, after: restart-risk-monitor, attribution: target-window,
       event: {type: service_ready, service: risk-monitor}, count: {min: 1, max: 1, within: 15s}}
"""


@pytest.mark.timeout(300)
async def test_a_log_record_the_service_sends_twice_counts_once(
    otel_sim: tuple[Sim, SimInfo], flagship_running: None, flagship_settings: Settings, otel_env: dict[str, str],
    tmp_path: Path
) -> None:
    sim, info = otel_sim
    scenario = tmp_path / "ready-once.yaml"
    scenario.write_text(READY_ONCE)
    sim.knobs_file.write_text(json.dumps({"risk-monitor": {"audit_duplicate": 1.0}}))  # its next start sends twice
    try:
        result = await client.run_and_follow(flagship_settings, client.build_request(str(scenario), {}), timeout=120)
        assert result is not None, "no result"
        [verdict] = result.verdicts
        assert verdict.status == S.VERDICT_STATUS_PASSED and verdict.count == 1, verdict.reason
        # the duplicate was really sent: the new process's service_ready is on the logs topic twice
        pid = str(_processes(info)["risk-monitor"]["pid"])
        [logs_topic] = json.loads(otel_env["COORDINATOR_OTLP__LOGS_TOPICS"])
        ready = [record for kafka_record in await read_all(flagship_settings.kafka_bootstrap_servers, logs_topic)
                 for record in _log_records(kafka_record.value, pid) if record.event_name == "service_ready"]
        assert len(ready) == 2 and ready[0] == ready[1], ready
    finally:
        _restart(sim, info, "risk-monitor")


def _log_records(value: bytes, instance: str) -> list[LogRecord]:
    request = ExportLogsServiceRequest()
    request.ParseFromString(value)
    return [record for resource_logs in request.resource_logs
            if any(kv.key == "service.instance.id" and kv.value.string_value == instance
                   for kv in resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs for record in scope_logs.log_records]


# -- OpenTelemetry out: the execution's trace, joined by the system's own spans --------------------
DUPLICATE = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: duplicate-some-orders}}
spec:
  targets:
    orders-topic: {{driver: kafka, service: trading-engine, selector: {{source: {orders}, topic: orders.v1}}}}
  steps:
    - {{name: duplicate-orders, fault: duplicate-events, target: orders-topic, duration: 3s,
       parameters: {{copies: 1, probability: 1.0}}}}
  expectations:
    - {{name: duplicates-recognised, after: duplicate-orders, attribution: correlation-id,
       event: {{type: order_duplicate_ignored, service: trading-engine}}, appears: {{within: 15s}}}}
"""


def _spans(path: Path, trace_id: str) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` the Collector's file exporter wrote (OTLP/JSON, one export per line),
    each with its service."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        for resource_spans in json.loads(line).get("resourceSpans", []):
            attributes = {a["key"]: a["value"].get("stringValue") for a in resource_spans["resource"]["attributes"]}
            for scope in resource_spans.get("scopeSpans", []):
                out += [{**span, "service": attributes.get("service.name")} for span in scope.get("spans", [])
                        if span["traceId"] == trace_id]
    return out


@pytest.mark.timeout(300)
async def test_the_execution_is_a_trace_the_systems_spans_join_through_the_relayed_records(
    otel_sim: tuple[Sim, SimInfo], flagship_running: None, flagship_settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    scenario = tmp_path / "duplicate.yaml"
    scenario.write_text(DUPLICATE.format(orders=otel_sim[1].orders_topic))  # the relay of this sim's orders
    result = await client.run_and_follow(flagship_settings, client.build_request(str(scenario), {}), timeout=120)
    assert result is not None, "no result"
    assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert len(result.trace_id) == 32, "the result names the execution's trace"
    [injection] = result.injections

    deadline = time.monotonic() + 30
    while True:  # the agent exports its spans in batches; the Collector writes them every 200 ms
        spans = _spans(stack.traces_file(), result.trace_id)
        names = {span["name"] for span in spans if span["service"] == "chaos-coordinator"}
        if {"run duplicate-some-orders", "inject duplicate-events orders-topic",
                "verdict duplicates-recognised"} <= names or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    own = {span["name"]: span for span in spans if span["service"] == "chaos-coordinator"}
    assert {"run duplicate-some-orders", "inject duplicate-events orders-topic", "steps duplicate-orders",
            "revert duplicate-orders", "verdict duplicates-recognised"} <= set(own), sorted(own)
    inject = own["inject duplicate-events orders-topic"]
    attributes = {a["key"]: a["value"].get("stringValue") for a in inject["attributes"]}
    assert attributes["coordinator.correlation_id"] == injection.correlation_id
    assert inject["parentSpanId"] == own["run duplicate-some-orders"]["spanId"]
    assert own["verdict duplicates-recognised"]["parentSpanId"] == inject["spanId"]
    # the trading engine's work on a duplicated order: a span of the system, child of the injection's
    taken = [span for span in spans if span["service"] == "trading-engine" and span["name"] == "take_order"]
    assert taken, "the engine's spans for relayed orders are in the execution's trace"
    assert {span["parentSpanId"] for span in taken} == {inject["spanId"]}
