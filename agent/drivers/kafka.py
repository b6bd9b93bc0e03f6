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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import Field, SecretStr

from agent import kafkaio
from agent.constants import CORRELATION_HEADER, TRACEPARENT, redis_key
from agent.drivers.base import DriverSpec, FaultDriver, FaultKind, FaultRequest
from agent.errors import ActionError, RevertError
from agent.fields import Duration, Strict, TopicName
from agent.settings import KafkaSecurity, Settings
from agent.store import answer

INJECTED_EVENT_TYPE = "coordinator.v1.InjectedEvent"


def relay_key(prefix: str, source: str, topic: str) -> str:
    return redis_key(prefix, "relay", source, topic)


class KafkaSelector(Strict):
    #: where events are published (inject) or relayed to (relay faults)
    topic: TopicName
    #: where a relay reads from; required by the relay faults
    source: TopicName | None = None


class InjectEventsParameters(Strict):
    count: int = Field(default=1, ge=1, le=100_000)
    #: events per second; 0 sends them as fast as the broker takes them
    rate: float = Field(default=0.0, ge=0.0)
    key: str | None = None
    #: the event body: a mapping sent as JSON, or text sent as is
    payload: dict[str, object] | str = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    content_type: Literal["application/json", "text/plain", "application/octet-stream"] = "application/json"


class RelayParameters(Strict):
    #: share of relayed events affected
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    #: only events whose headers include all of these are affected
    match_headers: dict[str, str] = Field(default_factory=dict)


class DuplicateEventsParameters(RelayParameters):
    copies: int = Field(default=1, ge=1, le=100)


class DelayEventsParameters(RelayParameters):
    delay: Duration


class DropEventsParameters(RelayParameters):
    pass


class CorruptEventsParameters(RelayParameters):
    mode: Literal["truncate", "garbage", "flip-bits"] = "garbage"


@dataclass(frozen=True)
class KafkaDriverSettings:
    bootstrap_servers: str
    #: relay faults are recorded in Redis, where the relays read them
    redis_url: SecretStr
    redis_key_prefix: str
    #: the ``ce_source`` of injected events
    instance_id: str
    #: TLS and SASL, as the agent's other Kafka clients use them
    security: KafkaSecurity = KafkaSecurity()


class KafkaDriver(FaultDriver):
    name = "kafka"
    settings: KafkaDriverSettings

    def __init__(self, settings: KafkaDriverSettings) -> None:
        super().__init__(settings)
        self._producer: AIOKafkaProducer | None = None
        self._redis: aioredis.Redis | None = None
        self._lock = asyncio.Lock()

    async def _get_producer(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = kafkaio.producer_for(self.settings.bootstrap_servers, self.settings.security,
                                                linger_ms=5)
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
        if request.traceparent:  # the relay stamps it on what the fault touches
            fault["traceparent"] = request.traceparent
        try:
            await answer(self._get_redis().hset(key, request.correlation_id, json.dumps(fault, sort_keys=True)))
        except aioredis.RedisError as exc:
            raise ActionError(f"cannot record relay fault in redis: {exc}", retryable=True) from exc
        return {"relay": f"{request.selector['source']} -> {request.selector['topic']}", "fault": request.fault}

    async def revert(self, recipe: dict[str, Any]) -> None:
        if recipe.get("action") != "remove-relay-fault":
            return
        try:
            await answer(self._get_redis().hdel(recipe["key"], recipe["correlation_id"]))
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
                    *([(TRACEPARENT, request.traceparent.encode())] if request.traceparent else []),
                ]
                sent.append(await producer.send(topic, value, key=key.encode() if key else None, headers=headers))
                if rate > 0:
                    await asyncio.sleep(1.0 / rate)
            await asyncio.gather(*sent)
        except KafkaError as exc:
            raise ActionError(f"cannot publish to '{topic}': {exc}", retryable=True) from exc
        return {"topic": topic, "events": count}


def _configure(settings: Settings) -> KafkaDriverSettings:
    return KafkaDriverSettings(bootstrap_servers=settings.kafka_bootstrap_servers, redis_url=settings.redis_url,
                               redis_key_prefix=settings.redis_key_prefix, instance_id=settings.instance_id,
                               security=settings.kafka)


def _check_step(fault: FaultKind, selector: dict[str, Any]) -> str | None:
    if fault.relay and not selector.get("source"):
        return f"fault '{fault.name}' relays events: its target needs selector.source (the topic to relay from)"
    return None


SPEC = DriverSpec(
    name="kafka", selector=KafkaSelector, factory=KafkaDriver, configure=_configure, check_step=_check_step,
    touches=lambda selector: [str(t) for t in (selector.get("topic"), selector.get("source")) if t],
    summary="event faults on Kafka topics: injected events, and relays that damage what they copy",
    faults=(
        FaultKind("inject-events", InjectEventsParameters, False,
                  summary="publish events, each carrying the correlation header"),
        FaultKind("duplicate-events", DuplicateEventsParameters, True, relay=True,
                  summary="relay events with extra copies"),
        FaultKind("delay-events", DelayEventsParameters, True, relay=True, summary="relay events late"),
        FaultKind("drop-events", DropEventsParameters, True, relay=True, summary="relay without some events"),
        FaultKind("corrupt-events", CorruptEventsParameters, True, relay=True,
                  summary="relay events with damaged payloads"),
    ),
)
