"""The ceiling: one aiokafka consumer -> decode AuditEvent -> dict lookup of the active injections by
service -> one produced record per event (batched sends, commit per batch), until stopped.

Run by bench/worker_throughput.py as a child process, like the worker, so both are timed alike:
    python bench/_raw_pipeline.py BOOTSTRAP TOPIC OUT_TOPIC GROUP INJECTIONS SERVICES
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from agent import codec  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402


async def run(bootstrap: str, topic: str, out_topic: str, group: str, injections: int, services: int) -> None:
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
                    event = codec.decode_event(record.value, record.headers, events_pb2.AuditEvent)
                    matched = active.get(event.service_name, [])
                    # the event's id and what it matched: the latency bench tells its marked events by id
                    sends.append(await producer.send(out_topic, f"{event.id} {len(matched)}".encode(),
                                                     key=record.key))
            await asyncio.gather(*sends)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    bootstrap, topic, out_topic, group, injections, services = sys.argv[1:7]
    try:
        asyncio.run(run(bootstrap, topic, out_topic, group, int(injections), int(services)))
    except KeyboardInterrupt:
        pass
