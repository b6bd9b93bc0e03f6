"""Small helpers for tests that talk to the real broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata


async def produce(bootstrap: str, topic: str, value: bytes, *, key: bytes | None = None,
                  headers: list[tuple[str, bytes]] | None = None, partition: int | None = None,
                  compressed: bool = False) -> RecordMetadata:
    """One record; ``compressed`` (gzip, 8 MB requests) gets a record far over the broker's 1 MB
    limit through, as a compressing producer would."""
    extra = {"compression_type": "gzip", "max_request_size": 8 * 1024 * 1024} if compressed else {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **extra)
    await producer.start()
    try:
        return await producer.send_and_wait(topic, value, key=key, headers=headers or [], partition=partition)
    finally:
        await producer.stop()


async def read_at(bootstrap: str, topic: str, partition: int, offset: int, *, timeout: float = 10.0
                  ) -> ConsumerRecord:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                client_id=f"test-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        return await asyncio.wait_for(consumer.getone(), timeout)
    finally:
        await consumer.stop()
