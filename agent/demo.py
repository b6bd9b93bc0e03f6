"""The main job: bring up the local stack, create the topics, publish a scenario request and read it
back, check readiness, print what happened, tear down.

Later work turns this into the flagship demo (run a scenario end to end and print its verdict).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import TextIO

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf import json_format

from agent import codec, health, topics
from agent._proto.coordinator.v1 import events_pb2
from agent.devstack import Stack
from agent.settings import Settings


def run_demo(out: TextIO, *, keep: bool = False, stack_dir: Path | None = None) -> int:
    directory = stack_dir or Path(tempfile.mkdtemp(prefix="coordinator-demo-"))
    stack = Stack(directory)
    t0 = time.monotonic()
    _say(out, f"starting the local stack in {directory}")
    try:
        timings = stack.up()
        for part in stack.status():
            _say(out, f"  {part.name:<10} {part.address:<28} pid {part.pid}  ready in {timings.get(part.name, 0):.1f}s")
        settings = Settings(**_settings_from_env(stack.env()))
        return asyncio.run(_exercise(out, settings, t0))
    finally:
        if keep:
            _say(out, f"stack left running; stop it with: coordinator devstack down --dir {directory}")
        else:
            stack.down()
            _say(out, "stack stopped; nothing left running")


async def _exercise(out: TextIO, settings: Settings, t0: float) -> int:
    outcomes = await topics.apply(settings)
    _say(out, "topics from topics/asyncapi.yaml:")
    for o in outcomes:
        _say(out, f"  {o.action:<8} {o.topic} ({o.detail})")

    request = events_pb2.ScenarioRequest(
        request_id=str(uuid.uuid4()),
        scenario_name="restart-risk-monitor-during-trading",
        requester="demo",
        labels={"source": "demo"},
    )
    request.requested_at.GetCurrentTime()
    event = codec.encode_event(request, key=request.request_id, source=f"/coordinator/{settings.instance_id}",
                               content_type=settings.content_type)
    topic = settings.topics.scenario_requests
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, event.value, key=event.key, headers=event.headers)
    finally:
        await producer.stop()
    _say(out, f"published a scenario request to {topic} (partition {sent.partition}, offset {sent.offset})")

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    received = codec.decode_event(record.value, record.headers, events_pb2.ScenarioRequest)
    headers = codec.headers_to_dict(record.headers)
    _say(out, "read it back:")
    _say(out, f"  key            {record.key.decode() if record.key else None}")
    for name in ("ce_type", "ce_id", "ce_source", "ce_time", "content-type"):
        _say(out, f"  {name:<14} {headers.get(name)}")
    payload = json_format.MessageToDict(received)
    _say(out, "  payload        " + json.dumps(payload, sort_keys=True))
    same = received == request

    checks = await health.readiness(settings)
    _say(out, "readiness: " + ", ".join(f"{c.name} {'ok' if c.ok else 'FAILED'} ({c.latency_ms} ms)" for c in checks))
    ok = same and all(c.ok for c in checks)
    _say(out, f"{'OK' if ok else 'FAILED'}: round trip {'intact' if same else 'CHANGED'}, "
              f"{time.monotonic() - t0:.1f}s in all")
    return 0 if ok else 1


def _settings_from_env(env: dict[str, str]) -> dict[str, object]:
    return {
        "kafka_bootstrap_servers": env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
        "redis_url": env["COORDINATOR_REDIS_URL"],
        "toxiproxy_url": env["COORDINATOR_TOXIPROXY_URL"],
        "topic_replication_factor": int(env["COORDINATOR_TOPIC_REPLICATION_FACTOR"]),
    }


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)
