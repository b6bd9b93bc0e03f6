"""The Kafka relay: copies events from a source topic to a destination topic, applying the relay
faults active for that pair (duplicate, delay, drop, corrupt).

The system under test is wired through the relay (producers write to ``source``, consumers read
``topic``); with no fault active the relay is a plain pass-through that keeps keys, values,
headers and per-partition order. Faults live in the Redis hash ``{prefix}:relay:{source}:{topic}``
(written by the kafka driver, removed on revert), read every ``refresh`` seconds, so any relay
instance applies them and a crashed agent's faults vanish with its lease.

Every event a fault touches carries the fault's ``correlation-id`` header (an existing one is kept
as ``original-correlation-id``), so the audit events it causes downstream can be joined to the
injection; when executions are traced, also the injection's ``traceparent`` (an existing one kept as
``original-traceparent``), so the spans it causes join the experiment's trace. Offsets are
committed after a batch is delivered (at least once); a delayed event is
committed before it is sent, so a crash during its delay loses it (at most once for delays).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from agent import kafkaio
from agent.constants import CORRELATION_HEADER, TRACEPARENT
from agent.drivers.kafka import relay_key
from agent.engine.publisher import send_dead_letter
from agent.logs import get_logger
from agent.settings import Settings
from agent.store import answer

log = get_logger("agent.relay")
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Output:
    delay: float
    value: bytes | None
    headers: Headers


def apply_faults(value: bytes | None, headers: Sequence[tuple[str, bytes]], faults: dict[str, dict[str, Any]],
                 rng: random.Random) -> list[Output]:
    """What to send for one event, given the active faults (pure: unit-tested without Kafka)."""
    outputs = [Output(0.0, value, list(headers))]
    for correlation_id, fault in sorted(faults.items()):
        params = fault.get("parameters", {})
        if not _matches(headers, params.get("match_headers") or {}):
            continue
        if rng.random() >= float(params.get("probability", 1.0)):
            continue
        kind = fault.get("fault")
        outputs = [Output(o.delay, o.value, _tag(o.headers, correlation_id, fault.get("traceparent", "")))
                   for o in outputs]
        if kind == "drop-events":
            return []
        if kind == "duplicate-events":
            copies = int(params.get("copies", 1))
            outputs = [o for o in outputs for _ in range(1 + copies)]
        elif kind == "delay-events":
            outputs = [Output(o.delay + float(params.get("delay", 0.0)), o.value, o.headers) for o in outputs]
        elif kind == "corrupt-events":
            mode = params.get("mode", "garbage")
            outputs = [Output(o.delay, corrupt(o.value, mode, rng), o.headers) for o in outputs]
    return outputs


def corrupt(value: bytes | None, mode: str, rng: random.Random) -> bytes:
    data = value or b""
    if mode == "truncate":
        return data[: len(data) // 2]
    if mode == "flip-bits" and data:
        flipped = bytearray(data)
        for _ in range(max(1, len(flipped) // 16)):
            i = rng.randrange(len(flipped))
            flipped[i] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    return bytes(rng.randrange(256) for _ in range(max(8, len(data))))


def _tag(headers: Headers, correlation_id: str, traceparent: str = "") -> Headers:
    """The fault's correlation id (and the injection's trace context, when traced) on an event it
    touches; what the event carried before is kept as ``original-...``."""
    replaced = {CORRELATION_HEADER: correlation_id.encode()}
    if traceparent:
        replaced[TRACEPARENT] = traceparent.encode()
    out = []
    for name, value in headers:
        if name in replaced:
            if value != replaced[name]:
                out.append((f"original-{name}", value))
            continue
        out.append((name, value))
    out.extend(replaced.items())
    return out


def _matches(headers: Sequence[tuple[str, bytes]], wanted: dict[str, str]) -> bool:
    present = {name: (value or b"").decode(errors="replace") for name, value in headers}
    return all(present.get(k) == v for k, v in wanted.items())


class Relay:
    def __init__(self, settings: Settings, source: str, topic: str, *, refresh: float = 0.2) -> None:
        self.settings = settings
        self.source = source
        self.topic = topic
        self.refresh = refresh
        self.key = relay_key(settings.redis_key_prefix, source, topic)
        self.faults: dict[str, dict[str, Any]] = {}
        self.rng = random.Random()  # noqa: S311 - fault sampling, not security
        self.relayed = 0

    async def run(self) -> None:
        redis = aioredis.from_url(self.settings.redis_url.get_secret_value(), decode_responses=True)
        consumer = kafkaio.consumer(  # its short fetch wait: a relayed event is not held back by a fetch in flight
            self.settings, self.source, purpose="relay",
            group_id=f"{self.settings.consumer_group}-relay-{self.source}-{self.topic}",
            auto_offset_reset="earliest", metadata_max_age_ms=5000,
        )
        producer = kafkaio.producer(self.settings, purpose="relay")
        await consumer.start()
        await producer.start()
        refresher = asyncio.create_task(self._refresh_forever(redis))
        delayed: set[asyncio.Task[None]] = set()
        log.info("relay running", source=self.source, topic=self.topic)
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=500)
                for tp, records in batch.items():
                    deliveries = []
                    for record in records:
                        for out in apply_faults(record.value, list(record.headers or []), self.faults, self.rng):
                            if out.delay > 0:
                                task = asyncio.create_task(self._later(producer, record, out))
                                delayed.add(task)
                                task.add_done_callback(delayed.discard)
                            else:
                                delivery = await self._send(producer, record, out)
                                if delivery is not None:
                                    deliveries.append((record, delivery))
                    for record, delivery in deliveries:
                        await self._delivered(producer, record, delivery)
                    self.relayed += len(records)
                    await consumer.commit({tp: records[-1].offset + 1})
        finally:
            refresher.cancel()
            for task in delayed:
                task.cancel()
            await asyncio.gather(refresher, *delayed, return_exceptions=True)
            await consumer.stop()
            await producer.stop()
            await redis.aclose()

    async def _send(self, producer: AIOKafkaProducer, record: ConsumerRecord, out: Output
                    ) -> asyncio.Future[Any] | None:
        """Queue one copy, in order; None when Kafka refused it at once (it was dead-lettered)."""
        try:
            delivery: asyncio.Future[Any] = await producer.send(
                self.topic, out.value, key=record.key, headers=out.headers, partition=record.partition)
            return delivery
        except KafkaError as exc:
            if getattr(exc, "retriable", False):
                raise
            await send_dead_letter(producer, self.settings, record, "relay-refused",
                                   f"{self.topic} refused the relayed copy: {type(exc).__name__}: {exc}")
            return None

    async def _delivered(self, producer: AIOKafkaProducer, record: ConsumerRecord,
                         delivery: asyncio.Future[Any]) -> None:
        """Wait for one copy; one Kafka will never take (too large, say) is dead-lettered, not retried
        forever: a relay must not stall on one record."""
        try:
            await delivery
        except KafkaError as exc:
            if getattr(exc, "retriable", False):
                raise  # the broker is away: the part restarts and reads the batch again
            await send_dead_letter(producer, self.settings, record, "relay-refused",
                                   f"{self.topic} refused the relayed copy: {type(exc).__name__}: {exc}")

    async def _later(self, producer: AIOKafkaProducer, record: ConsumerRecord, out: Output) -> None:
        await asyncio.sleep(out.delay)
        await producer.send_and_wait(self.topic, out.value, key=record.key, headers=out.headers)

    async def _refresh_forever(self, redis: aioredis.Redis) -> None:
        while True:
            try:
                raw = await answer(redis.hgetall(self.key))
                self.faults = {cid: json.loads(body) for cid, body in raw.items()}
            except (aioredis.RedisError, ValueError) as exc:
                log.warning("relay faults not refreshed", key=self.key, error=str(exc))
            await asyncio.sleep(self.refresh)
