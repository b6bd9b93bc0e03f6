"""Small Kafka helpers shared by the agent, the CLI, tests and benchmarks."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str, *, timeout: float | None = 30.0
                           ) -> list[TopicPartition]:
    """The partitions of ``topic``, fetching metadata until it shows up (``timeout=None``: forever).

    Raises ``LookupError`` naming the topic when it does not appear in time.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if deadline is not None and time.monotonic() > deadline:
            raise LookupError(f"topic '{topic}' not found; run: coordinator topics apply")
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way to ask for a topic
        await asyncio.sleep(0.1)
