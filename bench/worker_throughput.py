"""Stream worker throughput and verdict latency, against a raw aiokafka pipeline, on one broker.

Each consumer runs as a child process; each is timed alike: once it has caught up with what is on
its topics, a fresh burst of --events audit events is produced and timed until the consumer's
group has committed all of it.

(a) raw: one aiokafka consumer -> decode AuditEvent -> dict lookup of the active injections by
    service -> produce one record per event (batched sends, commit per batch): the ceiling
    (bench/_raw_pipeline.py).
(b) faust no-op: a faust agent that reads the audit topic and does nothing: faust's own floor per
    record (bench/_faust_noop.py).
(c) worker: `coordinator worker` with --injections active watches (1,000) joins the audit events;
    timed until its audit intake and its judge (the inbox) have committed everything.
(d) latency: audit events at a steady --rate (2,000/s) for --seconds, keyed by service; through
    the raw pipeline, every 100th event's time from producing it to receiving its output record;
    through the worker, every 100th is a recovery event for one of the watches, timed to its
    verdict, and split per stage from the verdict's ``coordinator-stages`` header: intake wait
    (produced -> fetched by the intake), route, inbox hop (sent to the inbox -> taken by the
    judge), judge (-> verdict published), verdict delivery (-> received here).

With --otlp every event is an OpenTelemetry log record instead, one OTLP ExportLogsServiceRequest
per Kafka record as the Collector's Kafka exporter writes them (``otlp_proto``), on an OTLP logs topic
the worker reads (``COORDINATOR_OTLP__LOGS_TOPICS``); the raw pipeline decodes the same records.

    .venv/bin/python bench/worker_throughput.py [--events 300000] [--injections 1000] [--rate 2000] [--otlp]
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.errors import GroupCoordinatorNotAvailableError  # noqa: E402

from agent import codec, topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.children import terminate  # noqa: E402
from agent.constants import STAGES_HEADER  # noqa: E402
from agent.kafkaio import topic_partitions  # noqa: E402
from agent.worker.app import intake_group  # noqa: E402
from bench._stack import local_stack  # noqa: E402
from bench.engine_latency import summary  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import engine_env, settings_from  # noqa: E402

S = events_pb2
SERVICES = 50


#: "audit" (AuditEvent on the audit topic) or "otlp" (OTLP log records on an OTLP logs topic): --otlp
FORMAT = {"name": "audit"}


def events_topic(settings) -> str:  # noqa: ANN001
    return settings.otlp.logs_topics[0] if FORMAT["name"] == "otlp" else settings.topics.audit_events


def audit_event(i: int, event_type: str = "order_filled", service: str | None = None) -> tuple[bytes, list]:
    service = service or f"svc-{i % SERVICES}"
    if FORMAT["name"] == "otlp":
        return otlp_event(i, event_type, service), []
    event = S.AuditEvent(id=str(i), service_name=service, event_type=event_type)
    event.timestamp.GetCurrentTime()
    out = codec.encode_event(event, key=event.service_name, source="/bench")
    return out.value, out.headers


def otlp_event(i: int, event_type: str, service: str) -> bytes:
    """One log record with an event name, as an SDK sends it and the Kafka exporter writes it."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    record = LogRecord(time_unix_nano=time.time_ns(), event_name=event_type, attributes=[kv("id", str(i))])
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[kv("service.name", service), kv("service.instance.id", "bench")]),
        scope_logs=[ScopeLogs(log_records=[record])])]).SerializeToString()


async def produce_events(settings, count: int) -> float:  # noqa: ANN001
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5, acks=1)
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = []
        for i in range(count):
            value, headers = audit_event(i)
            futures.append(await producer.send(events_topic(settings), value, key=f"svc-{i % SERVICES}".encode(),
                                               headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


def injection(i: int, within: float) -> tuple[str, str, codec.OutgoingEvent]:
    """The INJECTED chaos event of injection ``i``: one watch for ``ready-{i}`` from its service."""
    cid, service = str(uuid.uuid4()), f"svc-{i % SERVICES}"
    expectation = S.Expectation(name=f"up-{i}", kind=S.EXPECTATION_KIND_APPEARS, event_type=f"ready-{i}",
                                service=service, attribution=S.ATTRIBUTION_ANY)
    expectation.within.FromNanoseconds(int(within * 1e9))
    event = S.ChaosEvent(correlation_id=cid, type=S.CHAOS_EVENT_TYPE_INJECTED, execution_id=cid,
                         service=service, fault="kill", expectations=[expectation])
    event.injected_at.GetCurrentTime()
    return cid, service, codec.encode_event(event, key=cid, source="/bench")


async def inject(settings, count: int, within: float) -> list[tuple[str, str]]:  # noqa: ANN001
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    made = []
    try:
        for i in range(count):
            cid, service, out = injection(i, within)
            await producer.send(settings.topics.chaos_events, out.value, key=out.key, headers=out.headers)
            made.append((cid, service))
        await producer.flush()
    finally:
        await producer.stop()
    return made


async def group_done(settings, group: str, topic_names: list[str]) -> bool:  # noqa: ANN001
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [tp for name in topic_names for tp in await topic_partitions(consumer, name)]
        ends = await consumer.end_offsets(partitions)
        return all((committed.get(tp).offset if committed.get(tp) else 0) >= ends[tp] for tp in partitions)
    finally:
        await admin.close()
        await consumer.stop()


async def all_done(settings, groups: list[tuple[str, list[str]]]) -> bool:  # noqa: ANN001
    try:
        return all([await group_done(settings, group, names) for group, names in groups])
    except GroupCoordinatorNotAvailableError:  # the broker's first group: offsets topic still being made
        return False


async def timed_burst(settings, catch_up: list[tuple[str, list[str]]],  # noqa: ANN001
                      done: list[tuple[str, list[str]]], events: int,
                      child: subprocess.Popen[bytes] | None = None) -> float:
    """Wait until the consumer groups have caught up with what is already on their topics
    (``[(group, [topic, ...]), ...]``), then produce a fresh burst of audit events and time it until
    the groups in `done` have committed everything on their topics."""
    deadline = time.monotonic() + 300
    while not await all_done(settings, catch_up):
        if child is not None and child.poll() is not None:
            raise SystemExit(f"{catch_up}: the consumer exited ({child.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{catch_up} did not catch up with the preloaded events")
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    t0 = time.perf_counter()
    await produce_events(settings, events)
    while not await all_done(settings, done):
        if time.perf_counter() - t0 > 600:
            raise SystemExit(f"{done} did not finish the burst")
        await asyncio.sleep(0.2)
    return events / (time.perf_counter() - t0)


STAGES = ("intake_wait", "route", "inbox_hop", "judge", "verdict_delivery")


def stage_times(sent: float, received: float, header: str | None) -> dict[str, float] | None:
    """The per-stage split of one verdict's latency (ms) from its ``coordinator-stages`` header:
    produced -> fetched by the intake -> routed -> judged -> published -> received here. Wall
    clocks of processes on one machine."""
    if not header:
        return None
    times = {k: float(v) for k, v in (part.split("=", 1) for part in header.split(","))}
    points = [sent, times["fetched"], times["routed"], times["judged"], times["published"], received]
    return {name: (b - a) * 1000 for name, a, b in zip(STAGES, points, points[1:], strict=False)}


async def latency(settings, out_topic: str, marks: dict[int, tuple[str, str, str]], rate: float,  # noqa: ANN001
                  seconds: float, identify) -> tuple[list[float], dict[str, list[float]]]:  # noqa: ANN001
    """Audit events at a steady ``rate`` for ``seconds``, keyed by service (as the audit contract
    says); event ``i`` in ``marks`` is ``(mark id, event type, service)``. ``identify(record)``
    tells the mark id of an output record on ``out_topic`` (None when unmarked). Returns the
    latencies from producing a marked event to receiving its output (ms), and per stage when the
    outputs carry ``coordinator-stages``."""
    sent: dict[str, float] = {}
    received: dict[str, tuple[float, str | None]] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    partitions = await topic_partitions(consumer, out_topic)
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)

    async def listen() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=20)
            now = time.time()
            for records in batch.values():
                for record in records:
                    mark = identify(record)
                    if mark is not None and mark not in received:
                        received[mark] = (now, codec.headers_to_dict(record.headers).get(STAGES_HEADER))

    listener = asyncio.create_task(listen())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=1, acks=1)
    await producer.start()
    try:
        total = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i in marks:
                mark, event_type, service = marks[i]
                value, headers = audit_event(i, event_type=event_type, service=service)
                sent[mark] = time.time()
            else:
                value, headers = audit_event(i)
                service = f"svc-{i % SERVICES}"
            await producer.send(events_topic(settings), value, key=service.encode(), headers=headers)
        deadline = time.perf_counter() + 30
        while len([c for c in sent if c in received]) < len(sent) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        listener.cancel()
        await producer.stop()
        await consumer.stop()
    latencies = [(received[c][0] - sent[c]) * 1000 for c in sent if c in received]
    if os.environ.get("BENCH_DUMP"):  # every sample, in sending order, for a closer look
        with open(os.environ["BENCH_DUMP"], "a") as dump:  # noqa: ASYNC230
            for c in sorted(sent, key=sent.get):
                split = stage_times(sent[c], *received[c]) if c in received else None
                dump.write(json.dumps({"out": out_topic, "sent": sent[c], "ms": (received[c][0] - sent[c]) * 1000
                                       if c in received else None, "stages": split}) + "\n")
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for c in sent:
        split = stage_times(sent[c], *received[c]) if c in received else None
        for name, value in (split or {}).items():
            stages[name].append(value)
    return latencies, stages


def awaited_verdict(record) -> str | None:  # noqa: ANN001
    """The correlation id of a verdict on an awaited event (``up-N``), None for any other (the
    reactions the watches also get)."""
    verdict = codec.decode_event(record.value, record.headers, S.ExpectationVerdict)
    return verdict.correlation_id if verdict.expectation_name.startswith("up-") else None


def raw_marks(rate: float, seconds: float) -> dict[int, tuple[str, str, str]]:
    """Every 100th event of the latency run, told by its id in the raw pipeline's output."""
    return {i: (str(i), "order_filled", f"svc-{i % SERVICES}") for i in range(0, int(rate * seconds), 100)}


def worker_marks(watches: list[tuple[str, str]], rate: float, seconds: float) -> dict[int, tuple[str, str, str]]:
    """Every 100th event of the latency run is the awaited event of one watch (told by its verdict's
    correlation id)."""
    return {i: (cid, f"ready-{j}", service) for j, ((cid, service), i) in
            enumerate(zip(watches, range(0, int(rate * seconds), 100), strict=False))}


def ratio(a: dict | None, b: dict | None, key: str) -> float | None:  # noqa: ANN001
    return round(a[key] / b[key], 2) if a and b and b[key] else None


def child(log: Path, script: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, str(script), *args], stdout=handle, stderr=handle,
                                stdin=subprocess.DEVNULL)


async def main_async(opts, env: dict[str, str], log_dir: Path) -> dict:  # noqa: ANN001
    settings = settings_from(env)
    await topics.apply(settings)
    out_topic = f"{env['COORDINATOR_TOPICS__AUDIT_EVENTS']}.raw-out"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    made = [NewTopic(out_topic, 6, 1)]
    if FORMAT["name"] == "otlp":  # as the worker would make it
        made.append(NewTopic(events_topic(settings), settings.worker_partitions, 1))
    await admin.create_topics(made)
    await admin.close()

    produce_s = await produce_events(settings, opts.events) if not opts.latency_only else 1.0
    raw_group = f"{env['COORDINATOR_WORKER_APP_ID']}-raw"
    raw = child(log_dir / "raw.log", Path(__file__).with_name("_raw_pipeline.py"), settings.kafka_bootstrap_servers,
                events_topic(settings), out_topic, raw_group, str(opts.injections), str(SERVICES), FORMAT["name"])
    try:
        audit = [(raw_group, [events_topic(settings)])]
        raw_rate = await timed_burst(settings, audit, audit, opts.events, raw) if not opts.latency_only else 1.0
        raw_latencies, _ = await latency(settings, out_topic, raw_marks(opts.rate, opts.seconds), opts.rate,
                                         opts.seconds, lambda r: r.value.split(b" ", 1)[0].decode())
    finally:
        terminate(raw)

    noop_group = f"{env['COORDINATOR_WORKER_APP_ID']}-noop"
    noop = None if opts.latency_only else child(log_dir / "faust-noop.log", Path(__file__).with_name("_faust_noop.py"),
                 settings.kafka_bootstrap_servers, events_topic(settings), noop_group)
    try:
        audit = [(noop_group, [events_topic(settings)])]
        noop_rate = await timed_burst(settings, audit, audit, opts.events, noop) if noop else 1.0
    finally:
        if noop:
            terminate(noop)

    worker = AgentProcess(env, log_dir / "worker.log", ("worker",), r"").start()
    try:
        watches = await inject(settings, opts.injections, within=3600)
        group, intake = env["COORDINATOR_WORKER_APP_ID"], intake_group(settings)
        worker_rate = 1.0 if opts.latency_only else await timed_burst(
            settings, [(group, [settings.topics.chaos_events]), (intake, [events_topic(settings)])],
            [(intake, [events_topic(settings)]), (group, [f"{group}-inbox"])], opts.events, worker.proc)
        if opts.latency_only:  # caught up with the watches before the clock starts
            await timed_burst(settings, [(group, [settings.topics.chaos_events])], [], 0, worker.proc)
        latencies, stages = await latency(
            settings, settings.topics.verdicts, worker_marks(watches, opts.rate, opts.seconds), opts.rate,
            opts.seconds, awaited_verdict)
    finally:
        worker.stop()
    worker_latency = summary(latencies) if latencies else None
    raw_latency = summary(raw_latencies) if raw_latencies else None
    return {
        "benchmark": "worker_throughput", "format": FORMAT["name"], "events": opts.events,
        "active_injections": opts.injections,
        "produce_events_per_s": round(opts.events / produce_s),
        "raw_pipeline_events_per_s": round(raw_rate),
        "faust_noop_agent_events_per_s": round(noop_rate),
        "worker_events_per_s": round(worker_rate),
        "worker_to_raw_ratio": round(worker_rate / raw_rate, 3),
        "faust_noop_to_raw_ratio": round(noop_rate / raw_rate, 3),
        "latency_at_rate": {
            "rate_per_s": opts.rate, "seconds": opts.seconds,
            "audit_event_to_verdict_ms": worker_latency,
            "raw_pipeline_event_to_output_ms": raw_latency,
            "worker_to_raw_p50": ratio(worker_latency, raw_latency, "p50"),
            "worker_to_raw_p99": ratio(worker_latency, raw_latency, "p99"),
            "worker_stages_ms": {name: {k: v for k, v in summary(values).items() if k in ("n", "p50", "p99")}
                                 for name, values in stages.items() if values},
        },
        "goal": "worker >= 50% of raw; verdict p99 < 200 ms at 2,000 events/s and within 3x of the raw "
                "pipeline's p99",
        "note": "rates are measured to each group's last commit (the worker's judge commits every 1 s), "
                "so the worker's is a lower bound",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    # a burst long enough that the worker's fixed tail (its judge commits once a second) does not
    # dominate: at 100,000 events the same code measured about half its 300,000-event rate
    parser.add_argument("--events", type=int, default=300000)
    parser.add_argument("--injections", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput bursts")
    parser.add_argument("--otlp", action="store_true", help="OpenTelemetry log records on an OTLP logs topic")
    opts = parser.parse_args()
    FORMAT["name"] = "otlp" if opts.otlp else "audit"
    with local_stack() as (stack, scratch):
        env = engine_env(stack.env(), "http://127.0.0.1:1/RPC2", suffix=f"bw-{uuid.uuid4().hex[:6]}")
        env.update({"COORDINATOR_WORKER_APP_ID": f"{env['COORDINATOR_REDIS_KEY_PREFIX']}-worker",
                    "COORDINATOR_CONTENT_TYPE": "application/protobuf", "COORDINATOR_WORKER_GRACE": "2",
                    "COORDINATOR_OTLP__LOGS_TOPICS": json.dumps([f"{env['COORDINATOR_REDIS_KEY_PREFIX']}.otlp_logs"])})
        report = asyncio.run(main_async(opts, env, scratch))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
