"""Everything the engine publishes: chaos events, progress, results and dead letters.

A result's CloudEvents ``ce_id`` is ``result-<execution id>``: should a crash land between Kafka's
acknowledgement and Redis's note of it, the result republished after recovery has the same id, so a
consumer can drop the copy. A dead letter never exceeds ``dead_letter_max_bytes``: a larger
original travels as a truncated copy with its size and SHA-256 in headers.
"""

from __future__ import annotations

import asyncio
import hashlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import Message

from agent import codec, kafkaio, metrics, submission, tracing
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import (
    CORRELATION_IDS_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_ORIGINAL_SHA256_HEADER,
    DLQ_ORIGINAL_SIZE_HEADER,
    DLQ_REASON_HEADER,
    DLQ_SOURCE_OFFSET_HEADER,
    DLQ_SOURCE_PARTITION_HEADER,
    DLQ_SOURCE_TOPIC_HEADER,
)
from agent.logs import get_logger
from agent.settings import Settings

log = get_logger("agent.publisher")


def _log_failure(delivery: asyncio.Future[object]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("event not delivered", error=str(delivery.exception()))


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = f"/coordinator/{settings.instance_id}"
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = kafkaio.producer(self.settings, purpose="")
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def aclose(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _send(self, topic: str, message: Message, key: str, correlation_id: str | None = None,
                    *, wait: bool = True, event_id: str | None = None,
                    extra: list[tuple[str, bytes]] | None = None) -> None:
        """Publish; with ``wait=False`` only enqueue (order per key is kept; failures are logged)."""
        assert self._producer is not None, "publisher not started"
        event = codec.encode_event(message, key=key, source=self.source, content_type=self.settings.content_type,
                                   correlation_id=correlation_id, event_id=event_id)
        headers = [*event.headers, *(extra or []), *tracing.headers()]
        delivery = await self._producer.send(topic, event.value, key=event.key, headers=headers)
        if wait:
            await delivery
        else:
            delivery.add_done_callback(_log_failure)

    async def request(self, request: events_pb2.ScenarioRequest) -> None:
        """A scenario request onto the requests topic (gRPC submissions take the Kafka path)."""
        assert self._producer is not None, "publisher not started"
        topic, event = submission.encode(request, self.settings, source=self.source)
        await self._producer.send_and_wait(topic, event.value, key=event.key, headers=event.headers)

    async def schedule(self, name: str, schedule: events_pb2.Schedule | None) -> None:
        """A schedule as the latest record of its name on the (compacted) schedules topic; None: a
        tombstone, which deletes it."""
        assert self._producer is not None, "publisher not started"
        if schedule is None:
            await self._producer.send_and_wait(self.settings.topics.schedules, None, key=name.encode())
            return
        await self._send(self.settings.topics.schedules, schedule, name)

    async def chaos(self, event: events_pb2.ChaosEvent) -> None:
        """Publish a chaos event, retrying until Kafka has it (a broker outage delays it, never drops it)."""
        await self._until_sent(self.settings.topics.chaos_events, event, event.correlation_id,
                               correlation_id=event.correlation_id)

    async def audit(self, event: events_pb2.AuditEvent, *, source: str) -> None:
        """An audit event the agent publishes about a target's platform, in the audit topic's own form
        (JSON with the contract's snake_case names, as the ecosystem's services write theirs);
        ``event.id`` is its CloudEvents id and ``source`` its source, so copies from several agents
        count once."""
        assert self._producer is not None, "publisher not started"
        out = codec.encode_event(event, key=event.service_name, source=source, content_type=codec.CONTENT_JSON,
                                 correlation_id=event.correlation_id or None, event_id=event.id, proto_names=True)
        await self._producer.send_and_wait(self.settings.topics.audit_events, out.value, key=out.key,
                                           headers=out.headers)

    async def progress(self, progress: events_pb2.ExecutionProgress) -> None:
        await self._send(self.settings.topics.scenario_results, progress, progress.execution_id, wait=False)

    async def result(self, result: events_pb2.ScenarioResult) -> None:
        """Publish the final result, retrying until Kafka has it (the agent rides out broker outages)."""
        ids = ",".join(i.correlation_id for i in result.injections)
        await self._until_sent(self.settings.topics.scenario_results, result, result.execution_id,
                               event_id=f"result-{result.execution_id}",
                               extra=[(CORRELATION_IDS_HEADER, ids.encode())] if ids else None)

    async def _until_sent(self, topic: str, message: Message, key: str, *, correlation_id: str | None = None,
                          event_id: str | None = None, extra: list[tuple[str, bytes]] | None = None) -> None:
        delay = 0.5
        while True:
            try:
                await self._send(topic, message, key, correlation_id, event_id=event_id, extra=extra)
                return
            except KafkaError as exc:
                if not (exc.retriable or isinstance(exc, KafkaTimeoutError)):
                    raise  # Kafka will never take it (too large, producer closed): retrying cannot help
                log.warning("event not published yet; retrying", topic=topic, key=key,
                            error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def dead_letter(self, record: ConsumerRecord, reason: str, error: str) -> bool:
        assert self._producer is not None, "publisher not started"
        return await send_dead_letter(self._producer, self.settings, record, reason, error)


async def send_dead_letter(producer: AIOKafkaProducer, settings: Settings, record: ConsumerRecord, reason: str,
                           error: str, *, attempts: int = 4) -> bool:
    """The original record with why it could not be used in ``dlq-*`` headers; byte for byte when
    it fits, else truncated (``dlq-original-size``, ``dlq-original-sha256`` say what it was).

    Retried ``attempts`` times; a record that still cannot be dead-lettered is logged and counted,
    and False returned: never an exception, so one bad record cannot stop a consumer."""
    value, key, headers = dead_letter_parts(record, reason, error, settings.dead_letter_max_bytes)
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            await producer.send_and_wait(settings.topics.dead_letters, value, key=key, headers=headers)
            return True
        except Exception as exc:  # noqa: BLE001 - retried, then counted: never fatal
            log.warning("dead letter not delivered", attempt=attempt, source_topic=record.topic,
                        source_offset=record.offset, error=f"{type(exc).__name__}: {exc}")
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
    metrics.DEAD_LETTER_FAILURES.inc()
    log.error("record could not be dead-lettered; skipped", source_topic=record.topic,
              source_partition=record.partition, source_offset=record.offset, reason=reason)
    return False


def dead_letter_parts(record: ConsumerRecord, reason: str, error: str, limit: int
                      ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Value, key and headers of the dead letter for ``record``, together within ``limit`` bytes."""
    ours = [
        (DLQ_REASON_HEADER, reason.encode()),
        (DLQ_ERROR_HEADER, error[:4000].encode()),
        (DLQ_SOURCE_TOPIC_HEADER, record.topic.encode()),
        (DLQ_SOURCE_PARTITION_HEADER, str(record.partition).encode()),
        (DLQ_SOURCE_OFFSET_HEADER, str(record.offset).encode()),
    ]
    value, key = record.value, record.key
    original = [(n, v or b"") for n, v in (record.headers or [])]
    size = len(value or b"") + len(key or b"") + sum(len(n) + len(v) for n, v in original + ours)
    if size <= limit:
        return value, key, original + ours
    data = value or b""
    ours += [(DLQ_ORIGINAL_SIZE_HEADER, str(len(data)).encode()),
             (DLQ_ORIGINAL_SHA256_HEADER, hashlib.sha256(data).hexdigest().encode())]
    key = key[:1024] if key else key
    kept = [(n, v) for n, v in original if len(n) + len(v) <= 1024][:32]  # content-type, ce_*: small ones
    room = limit - len(key or b"") - sum(len(n) + len(v) for n, v in kept + ours) - 256
    return data[:max(0, min(room, 64 * 1024))], key, kept + ours
