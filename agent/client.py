"""Requester side: publish a scenario request and follow it to its result (``coordinator run``)."""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf import struct_pb2

from agent import codec, vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import DecodeError
from agent.kafkaio import client_options, started, topic_partitions
from agent.settings import Settings

S = events_pb2
#: exit codes like pytest: 0 passed, 1 failed, 2 interrupted, 3 internal error, 4 usage
EXIT_CODES = {
    S.EXECUTION_STATUS_PASSED: 0, S.EXECUTION_STATUS_FAILED: 1, S.EXECUTION_STATUS_TIMED_OUT: 1,
    S.EXECUTION_STATUS_ABORTED: 2, S.EXECUTION_STATUS_ERROR: 3, S.EXECUTION_STATUS_REJECTED: 4,
}


def build_request(scenario: str, params: dict[str, str], *, dry_run: bool = False,
                  labels: dict[str, str] | None = None, request_id: str | None = None) -> events_pb2.ScenarioRequest:
    """``scenario`` is a catalog name, or a path to a YAML file sent inline."""
    request = events_pb2.ScenarioRequest(request_id=request_id or str(uuid.uuid4()),
                                         requester=f"cli:{_user()}", labels=labels or {}, dry_run=dry_run)
    path = Path(scenario)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        request.scenario_yaml = path.read_text()
    else:
        request.scenario_name = scenario
    for name, value in params.items():
        request.parameters[name].CopyFrom(struct_pb2.Value(string_value=value))
    request.requested_at.GetCurrentTime()
    return request


async def submit(settings: Settings, request: events_pb2.ScenarioRequest) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all",
                                enable_idempotence=True)
    await started(producer)
    try:
        event = codec.encode_event(request, key=request.request_id, source=f"/cli/{_user()}",
                                   content_type=settings.content_type)
        await producer.send_and_wait(settings.topics.scenario_requests, event.value, key=event.key,
                                     headers=event.headers)
    finally:
        await producer.stop()


async def run_and_follow(settings: Settings, request: events_pb2.ScenarioRequest, *, timeout: float,
                         on_progress: Callable[[events_pb2.ExecutionProgress], None] | None = None,
                         until_accepted: bool = False) -> events_pb2.ScenarioResult | None:
    """Publish ``request`` and return its final result (None when ``timeout`` passes first);
    ``until_accepted``: return as soon as an agent reports the execution it started (progress)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await started(consumer)
    accepted: list[events_pb2.ExecutionProgress] = []

    def progressed(progress: events_pb2.ExecutionProgress) -> None:
        accepted.append(progress)
        if on_progress is not None:
            on_progress(progress)

    try:
        partitions = await topic_partitions(consumer, settings.topics.scenario_results)
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, before the request goes out
            await consumer.position(tp)
        await submit(settings, request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (until_accepted and accepted):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    found = _match(record, request.request_id, progressed)
                    if found is not None:
                        return found
        return None
    finally:
        await consumer.stop()


def _match(record: Any, request_id: str, on_progress: Callable[[events_pb2.ExecutionProgress], None] | None
           ) -> events_pb2.ScenarioResult | None:
    kind = codec.headers_to_dict(record.headers).get("ce_type")
    try:
        if kind == codec.ce_type_of(events_pb2.ScenarioResult):
            result = codec.decode_event(record.value, record.headers, events_pb2.ScenarioResult)
            return result if result.request_id == request_id else None
        if kind == codec.ce_type_of(events_pb2.ExecutionProgress) and on_progress:
            progress = codec.decode_event(record.value, record.headers, events_pb2.ExecutionProgress)
            if progress.request_id == request_id:
                on_progress(progress)
    except DecodeError:
        return None
    return None


def status_name(status: int) -> str:
    return vocabulary.status_name(status)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
