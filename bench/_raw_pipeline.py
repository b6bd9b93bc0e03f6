"""The ceiling: one aiokafka consumer -> decode AuditEvent (or, with ``otlp``, an OTLP
ExportLogsServiceRequest and its log records) -> dict lookup of the active injections by service ->
one produced record per event (batched sends, commit per batch), until stopped.

Run by bench/worker_throughput.py as a child process, like the worker, so both are timed alike:
    python bench/_raw_pipeline.py BOOTSTRAP TOPIC OUT_TOPIC GROUP INJECTIONS SERVICES [audit|otlp]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from agent import codec  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402


def audit_events(record) -> list[tuple[str, str]]:  # noqa: ANN001
    event = codec.decode_event(record.value, record.headers, events_pb2.AuditEvent)
    return [(event.id, event.service_name)]


def otlp_events(record) -> list[tuple[str, str]]:  # noqa: ANN001
    """(id, service) of each log record of an OTLP export request (the id in the ``id`` attribute)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    request.ParseFromString(record.value)
    out = []
    for resource_logs in request.resource_logs:
        service = next((kv.value.string_value for kv in resource_logs.resource.attributes
                        if kv.key == "service.name"), "")
        for scope in resource_logs.scope_logs:
            for log_record in scope.log_records:
                ident = next((kv.value.string_value for kv in log_record.attributes if kv.key == "id"), "")
                out.append((ident, service))
    return out


async def run(bootstrap: str, topic: str, out_topic: str, group: str, injections: int, services: int,
              decode=audit_events) -> None:  # noqa: ANN001
    active: dict[str, list[str]] = {}
    for i in range(injections):
        active.setdefault(f"svc-{i % services}", []).append(str(i))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await consumer.start()
    await producer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            sends = []
            for records in batch.values():
                for record in records:
                    for ident, service in decode(record):
                        matched = active.get(service, [])
                        # the event's id and what it matched: the latency bench tells its marked events by id
                        sends.append(await producer.send(out_topic, f"{ident} {len(matched)}".encode(),
                                                         key=record.key))
            await asyncio.gather(*sends)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    bootstrap, topic, out_topic, group, injections, services = sys.argv[1:7]
    decoder = otlp_events if sys.argv[7:8] == ["otlp"] else audit_events
    try:
        asyncio.run(run(bootstrap, topic, out_topic, group, int(injections), int(services), decoder))
    except KeyboardInterrupt:
        pass
