"""The stream worker on the real stack: audit events joined to injections, verdicts published."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import codec, topics, vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import STAGES_HEADER
from agent.settings import Settings
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env, read_all, settings_from, wait_for
from tests.helpers.kafka import produce

S = events_pb2
WORKER = ("worker", "--loglevel", "info")
READY = r"Ready"


def _env(stack_env: dict[str, str]) -> dict[str, str]:
    env = engine_env(stack_env, "http://127.0.0.1:1/RPC2")
    sfx = env["COORDINATOR_REDIS_KEY_PREFIX"]
    return {**env, "COORDINATOR_WORKER_APP_ID": f"{sfx}-worker", "COORDINATOR_WORKER_GRACE": "3",
            "COORDINATOR_VERDICT_GRACE": "8",  # the engine waits longer than the worker's own grace
            "COORDINATOR_WORKER_TICK_INTERVAL": "0.2", "COORDINATOR_CONTENT_TYPE": "application/protobuf",
            # OpenTelemetry in: the topics a Collector's Kafka exporter would write (the worker makes them)
            "COORDINATOR_OTLP__LOGS_TOPICS": f'["{sfx}-otlp_logs"]',
            "COORDINATOR_OTLP__SPANS_TOPICS": f'["{sfx}-otlp_spans"]'}


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return _env(stack_env)


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    return await applied_settings(env)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[AgentProcess]:
    process = AgentProcess(env, tmp_path_factory.mktemp("worker") / "worker.log", WORKER, READY).start(timeout=90)
    yield process
    process.stop()


def expectation(name: str, kind: int, *, event_type: str, service: str = "", within: float = 5.0,
                attribution: int = S.ATTRIBUTION_ANY) -> events_pb2.Expectation:
    message = events_pb2.Expectation(name=name, kind=kind, event_type=event_type, service=service,  # type: ignore[arg-type]
                                     attribution=attribution)  # type: ignore[arg-type]
    message.within.FromNanoseconds(int(within * 1e9))
    return message


async def inject(settings: Settings, service: str, *expectations: events_pb2.Expectation) -> tuple[str, float]:
    cid = str(uuid.uuid4())
    event = events_pb2.ChaosEvent(correlation_id=cid, type=S.CHAOS_EVENT_TYPE_INJECTED, execution_id=str(uuid.uuid4()),
                                  target=service, service=service, fault="kill", expectations=list(expectations))
    now = time.time()
    event.injected_at.FromNanoseconds(int(now * 1e9))
    out = codec.encode_event(event, key=cid, source="/test", correlation_id=cid)
    await produce(settings.kafka_bootstrap_servers, settings.topics.chaos_events, out.value, key=out.key,
                  headers=out.headers)
    return cid, now


def audit_record(service: str, event_type: str, *, at: float | None = None, correlation_id: str = "",
                 header_id: str = "") -> codec.OutgoingEvent:
    event = events_pb2.AuditEvent(id=str(uuid.uuid4()), service_name=service, event_type=event_type,
                                  correlation_id=correlation_id)
    event.timestamp.FromNanoseconds(int((at or time.time()) * 1e9))
    return codec.encode_event(event, key=service, source=f"/{service}", correlation_id=header_id or None)


async def audit(settings: Settings, service: str, event_type: str, *, at: float | None = None,
                correlation_id: str = "", header_id: str = "") -> None:
    out = audit_record(service, event_type, at=at, correlation_id=correlation_id, header_id=header_id)
    await produce(settings.kafka_bootstrap_servers, settings.topics.audit_events, out.value, key=out.key,
                  headers=out.headers)


def verdict_of(record: Any) -> events_pb2.ExpectationVerdict:
    return codec.decode_event(record.value, record.headers, events_pb2.ExpectationVerdict)


async def verdicts(settings: Settings, cid: str, count: int = 1, timeout: float = 60, *, name: str = ""
                   ) -> list[events_pb2.ExpectationVerdict]:
    """The verdicts on the expectations of injection ``cid`` (or on ``name``: e.g. the worker's own
    ``@reaction``), in order."""
    def wanted(record: Any) -> bool:
        if codec.headers_to_dict(record.headers).get("correlation-id") != cid:
            return False
        verdict = verdict_of(record)
        return verdict.expectation_name == name if name else verdict.expectation_name != vocabulary.REACTION

    found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.verdicts, wanted, timeout=timeout,
                           count=count)
    return [verdict_of(r) for r in found]


async def published(settings: Settings) -> Counter[tuple[str, str]]:
    """How many times each (correlation id, expectation) was published."""
    return Counter((v.correlation_id, v.expectation_name) for v in map(
        verdict_of, await read_all(settings.kafka_bootstrap_servers, settings.topics.verdicts)))


async def test_a_recovery_event_within_the_deadline_passes(worker: AgentProcess, settings: Settings) -> None:
    cid, t0 = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS,
                                                                 event_type="service_ready", service="risk-monitor"))
    await asyncio.sleep(1.0)  # the service takes a moment to come back
    sent = time.time()
    await audit(settings, "risk-monitor", "service_ready")
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED, verdict.reason
    assert 0.9 < verdict.time_to_recover.ToNanoseconds() / 1e9 < 5
    assert verdict.first_seen_at.ToNanoseconds() / 1e9 > t0
    # the verdict says when each stage of the worker handled the event that decided it
    [record] = await wait_for(settings.kafka_bootstrap_servers, settings.topics.verdicts,
                              lambda r: codec.headers_to_dict(r.headers).get("correlation-id") == cid
                              and verdict_of(r).expectation_name == "back", timeout=10)
    stages = dict(part.split("=") for part in codec.headers_to_dict(record.headers)[STAGES_HEADER].split(","))
    times = [float(stages[name]) for name in ("fetched", "routed", "judged", "published")]
    assert sent - 0.5 < times[0] and times == sorted(times) and times[-1] < time.time(), stages


async def test_the_same_event_after_the_deadline_fails_with_both_times(
    worker: AgentProcess, settings: Settings
) -> None:
    cid, t0 = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS, within=1.0,
                                                                 event_type="service_ready", service="risk-monitor"))
    await asyncio.sleep(2.0)  # past the 1 s deadline, inside the 3 s grace
    await audit(settings, "risk-monitor", "service_ready")
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_FAILED
    seen, deadline = verdict.first_seen_at.ToNanoseconds() / 1e9, verdict.deadline.ToNanoseconds() / 1e9
    assert seen > deadline == pytest.approx(t0 + 1.0, abs=0.01)
    assert "after the deadline" in verdict.reason and verdict.expected and verdict.observed


async def test_an_event_with_another_correlation_id_changes_nothing(worker: AgentProcess, settings: Settings) -> None:
    cid, t0 = await inject(settings, "trading-engine", expectation(
        "tagged", S.EXPECTATION_KIND_APPEARS, event_type="order_duplicate_ignored",
        attribution=S.ATTRIBUTION_CORRELATION_ID))
    await asyncio.sleep(0.5)
    await audit(settings, "trading-engine", "order_duplicate_ignored", correlation_id=str(uuid.uuid4()))
    await asyncio.sleep(0.5)
    right = time.time()
    await audit(settings, "trading-engine", "order_duplicate_ignored", header_id=cid)  # the id in the header
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED
    assert verdict.first_seen_at.ToNanoseconds() / 1e9 == pytest.approx(right, abs=0.05)


async def test_oversized_and_empty_audit_and_chaos_events_are_dead_lettered_and_the_worker_goes_on(
    worker: AgentProcess, settings: Settings
) -> None:
    huge = b'{"serviceName": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    inputs = (settings.topics.audit_events, settings.topics.chaos_events)
    tag = uuid.uuid4().hex[:8].encode()
    for topic in inputs:
        for value, kind in ((huge, b"huge"), (b"", b"empty")):
            await produce(settings.kafka_bootstrap_servers, topic, value, key=kind + b"-" + tag, compressed=True,
                          headers=[("content-type", b"application/json")])
    dead = await wait_for(settings.kafka_bootstrap_servers, settings.topics.dead_letters,
                          lambda r: bool(r.key) and r.key.endswith(tag), count=4, timeout=60)
    found = {(codec.headers_to_dict(r.headers)["dlq-source-topic"], r.key.split(b"-")[0],
              codec.headers_to_dict(r.headers)["dlq-reason"]) for r in dead}
    assert found == {(topic, kind, reason) for topic in inputs
                     for kind, reason in ((b"huge", "too-large"), (b"empty", "empty"))}
    assert all(len(r.value or b"") < settings.dead_letter_max_bytes for r in dead)
    # and it still judges
    cid, _ = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS,
                                                                event_type="service_ready", service="risk-monitor"))
    await asyncio.sleep(0.5)
    await audit(settings, "risk-monitor", "service_ready")
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED, verdict.reason


async def test_an_audit_event_delivered_twice_is_counted_once(worker: AgentProcess, settings: Settings) -> None:
    at_most_once = expectation("ready-once", S.EXPECTATION_KIND_COUNT, event_type="service_ready",
                               service="risk-monitor", within=2.0)
    at_most_once.min_count, at_most_once.max_count = 1, 1
    cid, t0 = await inject(settings, "risk-monitor", at_most_once)
    await asyncio.sleep(0.3)
    out = audit_record("risk-monitor", "service_ready")
    for _ in range(2):  # an at-least-once producer's retry: the same event, the same ce_id
        await produce(settings.kafka_bootstrap_servers, settings.topics.audit_events, out.value, key=out.key,
                      headers=out.headers)
    # the trail goes on past the deadline (event time), sent now so that a busy worker has it in time
    await audit(settings, "other-svc", "heartbeat", at=t0 + 2.5)
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED and verdict.count == 1, verdict.reason


async def test_a_silent_service_is_inconclusive_and_one_that_said_other_things_fails(
    worker: AgentProcess, settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:6]
    silent, chatty = f"silent-{tag}", f"chatty-{tag}"
    ready = {name: expectation("ready", S.EXPECTATION_KIND_APPEARS, event_type="service_ready", service=name,
                               within=1.0) for name in (silent, chatty)}
    silent_cid, t0 = await inject(settings, silent, ready[silent])
    chatty_cid, _ = await inject(settings, chatty, ready[chatty])
    await asyncio.sleep(0.3)
    await audit(settings, chatty, "risk_report")  # alive, but not the awaited event
    # the trail goes on past the deadlines (event time), sent now so that a busy worker has it in time
    await audit(settings, f"other-{tag}", "heartbeat", at=t0 + 2.0)
    [quiet] = await verdicts(settings, silent_cid)
    assert quiet.status == S.VERDICT_STATUS_INCONCLUSIVE, quiet.reason
    assert f"no audit event from {silent} since the injection" in quiet.reason
    [spoke] = await verdicts(settings, chatty_cid)
    assert spoke.status == S.VERDICT_STATUS_FAILED, spoke.reason
    assert f"{chatty} did send audit events since the injection" in spoke.reason


async def test_target_window_attributes_a_restarted_service_that_does_not_know_the_id(
    worker: AgentProcess, settings: Settings
) -> None:
    cid, _ = await inject(settings, "victim-svc", expectation("restarted", S.EXPECTATION_KIND_APPEARS,
                                                              event_type="service_started",
                                                              attribution=S.ATTRIBUTION_TARGET_WINDOW))
    await asyncio.sleep(0.5)
    await audit(settings, "other-svc", "service_started")
    await audit(settings, "victim-svc", "service_started")  # a new process: no correlation id
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED


async def test_a_restarted_worker_still_gives_one_correct_verdict(
    worker: AgentProcess, settings: Settings, env: dict[str, str]
) -> None:
    cid, _ = await inject(settings, "risk-monitor", expectation("after-restart", S.EXPECTATION_KIND_APPEARS,
                                                                within=60, event_type="service_ready",
                                                                service="risk-monitor"))
    changelog = f"{env['COORDINATOR_WORKER_APP_ID']}-watches-changelog"
    await wait_for(settings.kafka_bootstrap_servers, changelog, lambda r: cid.encode() in (r.value or b""))
    worker.stop()
    await audit(settings, "risk-monitor", "service_ready")
    worker.start(timeout=90)
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED
    await audit(settings, "risk-monitor", "heartbeat")  # let more events flow; no second verdict may appear
    await asyncio.sleep(2)
    counts = await published(settings)
    assert {n: c for (i, n), c in counts.items() if i == cid} == {"after-restart": 1, vocabulary.REACTION: 1}


async def test_a_silent_audit_trail_gives_inconclusive(stack_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(stack_env)  # topics of its own: nothing on this audit topic
    settings = settings_from(env)
    await topics.apply(settings)
    silent = AgentProcess(env, tmp_path / "silent.log", WORKER, READY).start(timeout=90)
    try:
        cid, _ = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS, within=1.0,
                                                                    event_type="service_ready", service="risk-monitor"))
        [verdict] = await verdicts(settings, cid)
        assert verdict.status == S.VERDICT_STATUS_INCONCLUSIVE
        assert "silent" in verdict.reason
    finally:
        silent.stop()


async def test_a_worker_whose_intake_fails_exits_and_its_successor_routes_what_it_had_not(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """An unexpected failure routing audit events (here a failpoint) ends the worker with status 1
    within seconds, instead of leaving a process that serves nothing; the fetch was not committed, so
    the worker started in its place decides the verdict from it."""
    env = _env(stack_env)
    settings = settings_from(env)
    await topics.apply(settings)
    failing = AgentProcess({**env, "COORDINATOR_FAILPOINTS": "worker-route=raise"}, tmp_path / "failing.log",
                           WORKER, READY).start(timeout=90)
    try:
        cid, _ = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS, within=60,
                                                                    event_type="service_ready", service="risk-monitor"))
        await audit(settings, "risk-monitor", "service_ready")
        assert await asyncio.to_thread(failing.wait, 60) == 1
        assert "audit intake failed; the worker exits" in failing.output()
    finally:
        failing.stop()
    successor = AgentProcess(env, tmp_path / "successor.log", WORKER, READY).start(timeout=90)
    try:
        [verdict] = await verdicts(settings, cid)
        assert verdict.status == S.VERDICT_STATUS_PASSED, verdict.reason
    finally:
        successor.stop()


E2E = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: e2e-verdict}}
spec:
  targets:
    link: {{driver: toxiproxy, service: exchange, selector: {{proxy: {proxy}, listen: "127.0.0.1:{listen}",
            upstream: "127.0.0.1:{upstream}"}}}}
  steps:
    - {{name: slow, fault: latency, target: link, duration: 2s, parameters: {{latency: 10ms}}}}
  expectations:
    - name: exchange-noticed
      after: slow
      attribution: target-window
      event: {{type: link_degraded}}
      appears: {{within: 10s}}
"""


async def test_the_engine_folds_the_workers_verdict_into_the_result(
    worker: AgentProcess, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    from agent import client
    from agent.devstack.procs import free_port
    from tests.helpers.engine import chaos, is_result, results

    agent = AgentProcess(env, tmp_path / "agent.log").start()
    try:
        scenario = tmp_path / "e2e.yaml"
        scenario.write_text(E2E.format(proxy=f"e2e-{uuid.uuid4().hex[:6]}", listen=free_port(), upstream=free_port()))
        request = client.build_request(str(scenario), {})
        await client.submit(settings, request)
        injected = await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                                  lambda r: any(e.step_name == "slow" and e.type == 1 and e.service == "exchange"
                                                for e in chaos([r])))
        correlation_id = chaos(injected)[-1].correlation_id
        await audit(settings, "exchange", "link_degraded")  # what the system under test reports
        found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results,
                               is_result(request_id=request.request_id), timeout=60)
        result = results(found)[0]
        assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
        [verdict] = result.verdicts
        assert (verdict.expectation_name, verdict.status) == ("exchange-noticed", S.VERDICT_STATUS_PASSED)
        assert verdict.correlation_id == correlation_id
        assert verdict.time_to_recover.ToNanoseconds() > 0
    finally:
        agent.stop()


async def test_two_workers_split_the_work_and_a_killed_one_is_replaced_without_losing_or_repeating_verdicts(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    import signal as signals

    env = {**_env(stack_env), "COORDINATOR_WORKER_SESSION_TIMEOUT": "6"}
    settings = settings_from(env)
    await topics.apply(settings)
    first = AgentProcess(env, tmp_path / "first.log", WORKER, READY).start(timeout=90)
    second = AgentProcess(env, tmp_path / "second.log", WORKER, READY).start(timeout=90)
    noise: asyncio.Task[None] | None = None
    try:
        services = [f"svc-{i}" for i in range(12)]

        async def round_of_injections() -> list[str]:
            ids = []
            for service in services:
                cid, _ = await inject(settings, service, expectation("up", S.EXPECTATION_KIND_APPEARS, within=120,
                                                                     event_type="service_ready", service=service))
                ids.append(cid)
            return ids

        def verdict_lines(process: AgentProcess) -> int:
            return process.output().count('"event": "verdict"')

        ids = await round_of_injections()
        changelog = f"{env['COORDINATOR_WORKER_APP_ID']}-watches-changelog"
        for cid in ids:
            await wait_for(settings.kafka_bootstrap_servers, changelog, lambda r, c=cid: c.encode() in (r.value or b""))
        for service in services:
            await audit(settings, service, "service_ready")
        for cid in ids:
            [verdict] = await verdicts(settings, cid)
            assert verdict.status == S.VERDICT_STATUS_PASSED
        assert verdict_lines(first) > 0 and verdict_lines(second) > 0, "both workers took a share"

        ids = await round_of_injections()
        for cid in ids:
            await wait_for(settings.kafka_bootstrap_servers, changelog, lambda r, c=cid: c.encode() in (r.value or b""))
        noise = asyncio.create_task(_audit_noise(settings))
        second.signal(signals.SIGKILL)
        second.wait(10)
        for service in services:
            await audit(settings, service, "service_ready")
        for cid in ids:
            [verdict] = await verdicts(settings, cid, timeout=90)
            assert verdict.status == S.VERDICT_STATUS_PASSED
        await audit(settings, "svc-0", "heartbeat")
        await asyncio.sleep(2)
        counts = await published(settings)
        assert all(counts[(cid, name)] == 1 for cid in ids for name in ("up", vocabulary.REACTION)), \
            "no verdict lost or repeated"
    finally:
        if noise is not None:
            noise.cancel()
            await asyncio.gather(noise, return_exceptions=True)
        second.stop()
        first.stop()


async def _audit_noise(settings: Settings, per_second: int = 400) -> None:
    """Unrelated audit traffic, so a takeover happens with events in flight on every partition."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        i = 0
        while True:
            for _ in range(per_second // 20):
                out = audit_record(f"noise-{i % 40}", "heartbeat")
                await producer.send(settings.topics.audit_events, out.value, key=out.key, headers=out.headers)
                i += 1
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()


def otlp_log(service: str, event_name: str, *, at: float, instance: str = "pod-uid-1") -> bytes:
    """One log record as the OpenTelemetry Collector's Kafka exporter writes it (otlp_proto)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    attributes = [KeyValue(key="service.name", value=AnyValue(string_value=service)),
                  KeyValue(key="service.instance.id", value=AnyValue(string_value=instance))]
    record = LogRecord(time_unix_nano=int(at * 1e9), event_name=event_name, body=AnyValue(string_value=event_name))
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=attributes), scope_logs=[ScopeLogs(log_records=[record])])]).SerializeToString()


def otlp_span_json(service: str, name: str, *, at: float, correlation_id: str) -> bytes:
    """One span in OTLP/JSON (the exporter's otlp_json encoding): hex ids, nanoseconds as strings."""
    span = {"traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": name, "kind": 2,
            "startTimeUnixNano": str(int((at - 0.002) * 1e9)), "endTimeUnixNano": str(int(at * 1e9)),
            "attributes": [{"key": "coordinator.correlation_id", "value": {"stringValue": correlation_id}}]}
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                            "value": {"stringValue": service}}]},
                               "scopeSpans": [{"scope": {"name": "test"}, "spans": [span]}]}]}
    return json.dumps(body).encode()


async def test_opentelemetry_logs_on_the_collectors_topic_decide_a_verdict_and_a_bad_record_is_dead_lettered(
    worker: AgentProcess, settings: Settings
) -> None:
    [logs_topic] = settings.otlp.logs_topics
    cid, t0 = await inject(settings, "risk-monitor", expectation("back", S.EXPECTATION_KIND_APPEARS,
                                                                 event_type="service_ready", service="risk-monitor"))
    tag = uuid.uuid4().hex[:8].encode()
    await produce(settings.kafka_bootstrap_servers, logs_topic, b"\xff\xfe not otlp", key=b"bad-" + tag)
    await asyncio.sleep(0.8)
    await produce(settings.kafka_bootstrap_servers, logs_topic, otlp_log("risk-monitor", "service_ready",
                                                                         at=time.time()))
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED, verdict.reason
    assert 0.7 < verdict.time_to_recover.ToNanoseconds() / 1e9 < 5, verdict.reason
    [dead] = await wait_for(settings.kafka_bootstrap_servers, settings.topics.dead_letters,
                            lambda r: r.key == b"bad-" + tag, timeout=30)
    headers = codec.headers_to_dict(dead.headers)
    assert (headers["dlq-source-topic"], headers["dlq-reason"]) == (logs_topic, "otlp-undecodable"), headers


async def test_an_opentelemetry_span_delivered_twice_is_counted_once_and_joined_by_its_correlation_id(
    worker: AgentProcess, settings: Settings
) -> None:
    [spans_topic] = settings.otlp.spans_topics
    once = expectation("checked-once", S.EXPECTATION_KIND_COUNT, event_type="CheckOrder", within=2.0,
                       attribution=S.ATTRIBUTION_CORRELATION_ID)
    once.min_count, once.max_count = 1, 1
    cid, t0 = await inject(settings, "risk-monitor", once)
    await asyncio.sleep(0.3)
    span = otlp_span_json("risk-monitor", "CheckOrder", at=time.time(), correlation_id=cid)
    other = otlp_span_json("risk-monitor", "CheckOrder", at=time.time(), correlation_id=str(uuid.uuid4()))
    for value in (span, span, other):  # the exporter's retry, and another injection's span
        await produce(settings.kafka_bootstrap_servers, spans_topic, value)
    await audit(settings, "other-svc", "heartbeat", at=t0 + 2.5)  # the trail goes on past the deadline
    [verdict] = await verdicts(settings, cid)
    assert verdict.status == S.VERDICT_STATUS_PASSED and verdict.count == 1, verdict.reason
