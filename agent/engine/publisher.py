"""Everything the engine publishes: chaos events, progress, results and dead letters."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from google.protobuf.message import Message

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import (
    DLQ_ERROR_HEADER,
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
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, client_id=self.settings.kafka_client_id,
            acks="all", enable_idempotence=True, linger_ms=2,
        )
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
                    *, wait: bool = True) -> None:
        """Publish; with ``wait=False`` only enqueue (order per key is kept; failures are logged)."""
        assert self._producer is not None, "publisher not started"
        event = codec.encode_event(message, key=key, source=self.source, content_type=self.settings.content_type,
                                   correlation_id=correlation_id)
        delivery = await self._producer.send(topic, event.value, key=event.key, headers=event.headers)
        if wait:
            await delivery
        else:
            delivery.add_done_callback(_log_failure)

    async def request(self, request: events_pb2.ScenarioRequest) -> None:
        """A scenario request onto the requests topic (gRPC submissions take the Kafka path)."""
        await self._send(self.settings.topics.scenario_requests, request, request.request_id)

    async def chaos(self, event: events_pb2.ChaosEvent) -> None:
        await self._send(self.settings.topics.chaos_events, event, event.correlation_id, event.correlation_id)

    async def progress(self, progress: events_pb2.ExecutionProgress) -> None:
        await self._send(self.settings.topics.scenario_results, progress, progress.execution_id, wait=False)

    async def result(self, result: events_pb2.ScenarioResult) -> None:
        await self._send(self.settings.topics.scenario_results, result, result.execution_id)

    async def dead_letter(self, record: ConsumerRecord, reason: str, error: str) -> None:
        """The original record, byte for byte, with why it could not be used in ``dlq-*`` headers."""
        assert self._producer is not None, "publisher not started"
        headers = list(record.headers or []) + [
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_ERROR_HEADER, error[:4000].encode()),
            (DLQ_SOURCE_TOPIC_HEADER, record.topic.encode()),
            (DLQ_SOURCE_PARTITION_HEADER, str(record.partition).encode()),
            (DLQ_SOURCE_OFFSET_HEADER, str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(self.settings.topics.dead_letters, record.value, key=record.key,
                                           headers=headers)
