"""Shared set-up for engine tests: session-unique topics and keys, and reading topics back."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.kafkaio import client_options, topic_partitions
from agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def engine_env(stack_env: dict[str, str], supervisor_url: str, suffix: str | None = None) -> dict[str, str]:
    sfx = suffix or uuid.uuid4().hex[:8]
    return {
        **stack_env,
        "COORDINATOR_SUPERVISOR_URL": supervisor_url,
        "COORDINATOR_TOPICS__SCENARIO_REQUESTS": f"test.{sfx}.requests",
        "COORDINATOR_TOPICS__SCENARIO_RESULTS": f"test.{sfx}.results",
        "COORDINATOR_TOPICS__CHAOS_EVENTS": f"test.{sfx}.chaos",
        "COORDINATOR_TOPICS__VERDICTS": f"test.{sfx}.verdicts",
        "COORDINATOR_TOPICS__DEAD_LETTERS": f"test.{sfx}.dead-letters",
        "COORDINATOR_TOPICS__SCHEDULES": f"test.{sfx}.schedules",
        "COORDINATOR_TOPICS__AUDIT_EVENTS": f"test.{sfx}.audit",
        "COORDINATOR_REDIS_KEY_PREFIX": f"test-{sfx}",
        "COORDINATOR_REGISTRY_NAME": f"coordinator-{sfx}",
        "COORDINATOR_CONSUMER_GROUP": f"test-{sfx}",
        "COORDINATOR_SCENARIO_DIRS": json.dumps([str(ROOT / "tests" / "fixtures" / "engine")]),
        "COORDINATOR_LEASE_TTL": "3",
        "COORDINATOR_RECONCILE_INTERVAL": "1",
        "COORDINATOR_VERDICT_GRACE": "1",
        "COORDINATOR_INSTANCE_ID": f"test-agent-{sfx}",
        "COORDINATOR_CONTENT_TYPE": "application/json",
    }


def settings_from(env: dict[str, str]) -> Settings:
    with mock.patch.dict(os.environ, env, clear=False):
        return Settings()


async def applied_settings(env: dict[str, str]) -> Settings:
    """Settings from ``env``, with every topic of the contract created."""
    from agent import topics

    settings = settings_from(env)
    await topics.apply(settings)
    return settings


async def read_all(bootstrap: str, topic: str, settings: Settings | None = None) -> list[ConsumerRecord]:
    """Every record of ``topic`` (with ``settings``: on its secured listener)."""
    options = client_options(settings) if settings is not None else {"bootstrap_servers": bootstrap}
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        try:
            partitions = await topic_partitions(consumer, topic, timeout=5)
        except LookupError:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
        return records
    finally:
        await consumer.stop()


async def wait_for(bootstrap: str, topic: str, predicate: Callable[[ConsumerRecord], bool], *,
                   timeout: float = 60.0, count: int = 1) -> list[ConsumerRecord]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in await read_all(bootstrap, topic) if predicate(r)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} matching record(s) on {topic} after {timeout}s")
        await asyncio.sleep(0.3)


def results(records: list[ConsumerRecord]) -> list[events_pb2.ScenarioResult]:
    out = []
    for record in records:
        if codec.headers_to_dict(record.headers).get("ce_type") == "coordinator.v1.ScenarioResult":
            out.append(codec.decode_event(record.value, record.headers, events_pb2.ScenarioResult))
    return out


def is_result(request_id: str | None = None, execution_id: str | None = None) -> Callable[[ConsumerRecord], bool]:
    def check(record: ConsumerRecord) -> bool:
        found = results([record])
        return bool(found) and (request_id is None or found[0].request_id == request_id) and (
            execution_id is None or found[0].execution_id == execution_id)
    return check


def chaos(records: list[ConsumerRecord]) -> list[events_pb2.ChaosEvent]:
    """The chaos events among ``records``; garbage a test put on the topic on purpose is skipped."""
    from agent.errors import DecodeError

    out = []
    for record in records:
        try:
            out.append(codec.decode_event(record.value, record.headers, events_pb2.ChaosEvent))
        except DecodeError:
            continue
    return out


def header(record: ConsumerRecord, name: str) -> str | None:
    return codec.headers_to_dict(record.headers).get(name)


def status(result: events_pb2.ScenarioResult) -> str:
    return str(events_pb2.ExecutionStatus.Name(result.status)).removeprefix("EXECUTION_STATUS_")


def as_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(message)


async def chatter(settings: Settings, service: str, event_type: str, every: float = 0.5) -> None:
    """Another service of the system, speaking every ``every`` seconds until cancelled: the audit
    trail goes on past each deadline (without it, a verdict at the deadline is rightly INCONCLUSIVE)."""
    from datetime import UTC, datetime

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        while True:
            event = {"id": str(uuid.uuid4()), "service_name": service, "event_type": event_type,
                     "timestamp": datetime.now(UTC).isoformat()}
            await producer.send(settings.topics.audit_events, json.dumps(event).encode(), key=service.encode(),
                                headers=[("content-type", b"application/json")])
            await asyncio.sleep(every)
    finally:
        await producer.stop()


WARM_UP = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: warm-up}
spec:
  targets:
    engine-exchange-link: {driver: toxiproxy, service: exchange, selector: {proxy: engine-to-exchange}}
  steps:
    - {name: slow, fault: latency, target: engine-exchange-link, parameters: {latency: 5ms}, duration: 0.5s}
  expectations:
    - {name: no-order-lost, after: slow, attribution: window, event: {type: order_lost}, absent: {within: 3s}}
"""


async def until_verdicts(settings: Settings, directory: Path, timeout: float = 180) -> None:
    """Until the worker has joined its group and caught up with the sim's backlog, a run ends without
    a verdict; run a harmless scenario (5 ms on the sim's engine-to-exchange link) until one passes
    with its verdict."""
    from agent import client

    path = directory / "warm-up.yaml"
    path.write_text(WARM_UP)
    deadline = time.monotonic() + timeout
    while True:
        result = await client.run_and_follow(settings, client.build_request(str(path), {}), timeout=120)
        if result is not None and result.verdicts and all(v.status == events_pb2.VERDICT_STATUS_PASSED
                                                          for v in result.verdicts):
            return
        assert time.monotonic() < deadline, f"the worker gives no verdict: {result}"
