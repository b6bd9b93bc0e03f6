"""Kafka event faults.

- ``inject-events`` publishes events to the target topic, each with the injection's
  ``correlation-id`` header and CloudEvents headers; it is instantaneous (nothing to revert).
- ``duplicate-events``, ``delay-events``, ``drop-events``, ``corrupt-events`` act on the events a
  relay copies from the target's ``source`` topic to its ``topic``. The fault is a field in the Redis
  hash ``{prefix}:relay:{source}:{topic}`` (correlation id -> fault and parameters) that every relay
  instance reads; reverting deletes the field. See ``agent.relay``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from agent.constants import CORRELATION_HEADER, redis_key
from agent.drivers.base import FaultDriver, FaultRequest
from agent.errors import ActionError, RevertError
from agent.settings import Settings

INJECTED_EVENT_TYPE = "coordinator.v1.InjectedEvent"


def relay_key(prefix: str, source: str, topic: str) -> str:
    return redis_key(prefix, "relay", source, topic)


class KafkaDriver(FaultDriver):
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._producer: AIOKafkaProducer | None = None
        self._redis: aioredis.Redis | None = None
        self._lock = asyncio.Lock()

    async def _get_producer(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                            acks="all", enable_idempotence=True, linger_ms=5)
                await producer.start()
                self._producer = producer
            return self._producer

    def _get_redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.from_url(self.settings.redis_url.get_secret_value(), decode_responses=True)
        return self._redis

    async def aclose(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        if request.fault == "inject-events":
            return {"action": "none"}
        selector = request.selector
        return {"action": "remove-relay-fault", "key": relay_key(self.settings.redis_key_prefix,
                                                                 selector["source"], selector["topic"]),
                "correlation_id": request.correlation_id}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        if request.fault == "inject-events":
            return await self._inject_events(request)
        key = relay_key(self.settings.redis_key_prefix, request.selector["source"], request.selector["topic"])
        fault = {"fault": request.fault, "parameters": request.parameters, "execution_id": request.execution_id}
        try:
            await self._get_redis().hset(key, request.correlation_id, json.dumps(fault, sort_keys=True))
        except aioredis.RedisError as exc:
            raise ActionError(f"cannot record relay fault in redis: {exc}", retryable=True) from exc
        return {"relay": f"{request.selector['source']} -> {request.selector['topic']}", "fault": request.fault}

    async def revert(self, recipe: dict[str, Any]) -> None:
        if recipe.get("action") != "remove-relay-fault":
            return
        try:
            await self._get_redis().hdel(recipe["key"], recipe["correlation_id"])
        except aioredis.RedisError as exc:
            raise RevertError(f"cannot remove relay fault from redis: {exc}", retryable=True) from exc

    async def _inject_events(self, request: FaultRequest) -> dict[str, Any]:
        params = request.parameters
        topic = request.selector["topic"]
        count = int(params.get("count", 1))
        rate = float(params.get("rate", 0.0))
        payload = params.get("payload", {})
        content_type = params.get("content_type", "application/json")
        value = json.dumps(payload).encode() if isinstance(payload, dict) else str(payload).encode()
        key = params.get("key")
        producer = await self._get_producer()
        sent = []
        try:
            for _ in range(count):
                headers = [
                    ("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()),
                    ("ce_type", INJECTED_EVENT_TYPE.encode()),
                    ("ce_source", f"/coordinator/{self.settings.instance_id}".encode()),
                    ("ce_time", datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
                    ("content-type", content_type.encode()),
                    (CORRELATION_HEADER, request.correlation_id.encode()),
                    *[(k, str(v).encode()) for k, v in (params.get("headers") or {}).items()],
                ]
                sent.append(await producer.send(topic, value, key=key.encode() if key else None, headers=headers))
                if rate > 0:
                    await asyncio.sleep(1.0 / rate)
            await asyncio.gather(*sent)
        except KafkaError as exc:
            raise ActionError(f"cannot publish to '{topic}': {exc}", retryable=True) from exc
        return {"topic": topic, "events": count}
