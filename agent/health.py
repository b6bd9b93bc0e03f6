"""Liveness and readiness checks against the real dependencies (Kafka metadata, Redis PING)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiokafka.client import AIOKafkaClient

from agent.kafkaio import diagnose, options_for
from agent.settings import KafkaSecurity, Settings
from agent.store import answer


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "latency_ms": self.latency_ms}


async def kafka_cluster(bootstrap_servers: str, *, timeout: float, security: KafkaSecurity | None = None,
                        explain: bool = False) -> dict[str, Any]:
    """Fetch cluster metadata with a fresh client; raise when no broker answers within ``timeout``
    (``explain``: with the broker's own reason, from one more connection of its own)."""
    client = AIOKafkaClient(
        **options_for(bootstrap_servers, security or KafkaSecurity()),
        request_timeout_ms=int(timeout * 1000),
        connections_max_idle_ms=int(timeout * 1000) + 1000,
        client_id="coordinator-health",
    )
    try:
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
        except Exception as exc:
            why = await diagnose(bootstrap_servers, security or KafkaSecurity(), timeout) if explain else None
            if why:
                raise ConnectionError(why) from exc
            raise
        brokers = client.cluster.brokers()
        if not brokers:
            raise ConnectionError("metadata lists no broker")
        return {"brokers": len(brokers), "controller": client.cluster.controller}
    finally:
        await client.close()


async def check_kafka(settings: Settings) -> CheckResult:
    started = time.perf_counter()
    try:
        info = await kafka_cluster(settings.kafka_bootstrap_servers, timeout=settings.ready_check_timeout,
                                   security=settings.kafka, explain=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        return _result("kafka", False, _describe(exc, settings.kafka_bootstrap_servers), started)
    return _result("kafka", True, f"{info['brokers']} broker(s) at {settings.kafka_bootstrap_servers}", started)


async def check_redis(settings: Settings) -> CheckResult:
    started = time.perf_counter()
    timeout = settings.ready_check_timeout
    client = aioredis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        await asyncio.wait_for(answer(client.ping()), timeout)
    except Exception as exc:  # noqa: BLE001
        return _result("redis", False, _describe(exc, "redis"), started)
    finally:
        await client.aclose()
    return _result("redis", True, "PING answered", started)


async def readiness(settings: Settings) -> list[CheckResult]:
    return list(await asyncio.gather(check_kafka(settings), check_redis(settings)))


def _result(name: str, ok: bool, detail: str, started: float) -> CheckResult:
    return CheckResult(name, ok, detail, round((time.perf_counter() - started) * 1000, 1))


def _describe(exc: BaseException, where: str) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"no answer from {where} within the timeout"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"
