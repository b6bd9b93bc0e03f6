"""Probes: observe one thing and judge it with the probe's tolerance.

Addresses come from the target's ``endpoints`` or, failing that, from the service registry hash
``registry:services:{service}`` (``host``, ``grpc_port``, ``http_port``; a stale or expired entry is
not used, see ``agent.registry``). gRPC probes share pooled channels with retries and a circuit
breaker per address (``agent.grpc_clients``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent import kafkaio
from agent.errors import ProbeError
from agent.grpc_clients import ChannelPool, CircuitOpen
from agent.registry import NotRegistered, Registry
from agent.scenario.models import Scenario
from agent.scenario.probes import Probe
from agent.settings import Settings
from agent.store import answer


@dataclass(frozen=True)
class ProbeOutcome:
    name: str
    ok: bool
    observed: Any
    reason: str
    attempts: int


class Prober:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis = aioredis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
        self.registry = Registry(self._redis, ttl=settings.registry_ttl)
        self.channels = ChannelPool()

    async def aclose(self) -> None:
        await self.channels.close()
        await self._redis.aclose()

    async def run(self, probe: Probe, scenario: Scenario) -> ProbeOutcome:
        """Try up to ``attempts`` times, ``interval`` apart; pass on the first acceptable observation."""
        if probe.initial_delay:
            await asyncio.sleep(probe.initial_delay)
        reason = ""
        observed: Any = None
        for attempt in range(1, probe.attempts + 1):
            try:
                observed = await asyncio.wait_for(self.observe(probe, scenario), probe.timeout)
                ok, reason = probe.tolerance.check(observed)
            except (ProbeError, TimeoutError) as exc:
                ok, reason = False, str(exc) or f"no answer within {probe.timeout}s"
            if ok:
                return ProbeOutcome(probe.name, True, observed, reason, attempt)
            if attempt < probe.attempts:
                await asyncio.sleep(probe.interval)
        return ProbeOutcome(probe.name, False, observed, reason, probe.attempts)

    async def observe(self, probe: Probe, scenario: Scenario) -> Any:
        kind = probe.kind
        if kind == "grpc_health":
            assert probe.grpc_health is not None
            address = await self.address(scenario, probe.grpc_health.target, "grpc")
            return await self.grpc_health_status(address, probe.grpc_health.service, probe.timeout)
        if kind == "http":
            assert probe.http is not None
            url = probe.http.url or (await self.address(scenario, probe.http.target or "", "http")) + probe.http.path
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=probe.timeout)) as http, \
                        http.request(probe.http.method, url) as response:
                    return response.status
            except aiohttp.ClientError as exc:
                raise ProbeError(f"GET {url} failed: {exc}") from exc
        if kind == "kafka_topic":
            assert probe.kafka_topic is not None
            return await self._partitions(probe.kafka_topic.topic)
        if kind == "kafka_lag":
            assert probe.kafka_lag is not None
            return await self._lag(probe.kafka_lag.group, probe.kafka_lag.topic)
        if kind == "prometheus":
            assert probe.prometheus is not None
            return await self.promql(probe.prometheus.query, probe.prometheus.url, probe.timeout)
        assert probe.redis_key is not None
        spec = probe.redis_key
        if spec.field:
            value: str | None = await answer(self._redis.hget(spec.key, spec.field))
            return value
        return await self._redis.get(spec.key)

    async def promql(self, query: str, url: str | None, timeout: float) -> float:
        """One number from a Prometheus instant query (``/api/v1/query``)."""
        base = (url or self.settings.prometheus_url).rstrip("/")
        if not base:
            raise ProbeError("no Prometheus to ask: give prometheus.url in the probe or set COORDINATOR_PROMETHEUS_URL")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                    http.get(f"{base}/api/v1/query", params={"query": query}) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise ProbeError(f"Prometheus at {base} did not answer the query: {exc}") from exc
        return promql_number(body, query)

    async def address(self, scenario: Scenario, target_name: str, kind: str) -> str:
        target = scenario.spec.targets[target_name]
        if target.endpoints and getattr(target.endpoints, kind):
            return str(getattr(target.endpoints, kind))
        service = target.service or target_name
        try:
            return await self.registry.address(service, kind)
        except NotRegistered as exc:
            raise ProbeError(f"no {kind} address for target '{target_name}': {exc}; give endpoints.{kind} in the "
                             f"scenario or register the service") from exc

    async def grpc_health_status(self, address: str, service: str, timeout: float) -> str:
        """``SERVING``, ``NOT_SERVING``, ... or ``UNREACHABLE (<code>)`` when the call fails (pooled channel,
        retried on transient codes, circuit breaker per address)."""

        async def check(channel: grpc.aio.Channel, left: float) -> health_pb2.HealthCheckResponse:
            answer: health_pb2.HealthCheckResponse = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=left)
            return answer

        try:
            reply = await self.channels.call(address, check, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"
        except CircuitOpen as exc:
            raise ProbeError(str(exc)) from exc
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def _admin(self) -> AIOKafkaAdminClient:
        admin = kafkaio.admin(self.settings, purpose="probe")
        await admin.start()
        return admin

    async def _partitions(self, topic: str) -> int:
        admin = await self._admin()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        found = [d for d in described if d["topic"] == topic and not d.get("error_code")]
        return len(found[0]["partitions"]) if found else 0

    async def _lag(self, group: str, topic: str | None) -> int:

        admin = await self._admin()
        try:
            committed = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        partitions = [tp for tp in committed if topic is None or tp.topic == topic]
        if not partitions:
            raise ProbeError(f"consumer group '{group}' has no committed offsets" + (f" on '{topic}'" if topic else ""))
        consumer = kafkaio.consumer(self.settings, purpose="probe")
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in partitions])
        finally:
            await consumer.stop()
        return int(sum(max(0, ends[tp] - committed[tp].offset) for tp in partitions))


def promql_number(body: Any, query: str) -> float:
    """The one number a Prometheus query API answer holds, or a ProbeError saying what is wrong."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body) if isinstance(body, dict) else body
        raise ProbeError(f"Prometheus refused the query {query!r}: {error}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result") or []
    if kind == "scalar":
        return float(result[1])
    if kind != "vector":
        raise ProbeError(f"the query {query!r} gave a {kind}, not a number: use an instant vector or a scalar")
    if not result:
        raise ProbeError(f"the query {query!r} returned no series (append 'or vector(0)' where no data means 0)")
    if len(result) > 1:
        labels = ", ".join(str(s.get("metric", {})) for s in result[:3]) + (", ..." if len(result) > 3 else "")
        raise ProbeError(f"the query {query!r} returned {len(result)} series ({labels}); "
                         "aggregate it to one (sum, max, avg ... by nothing)")
    return float(result[0]["value"][1])
