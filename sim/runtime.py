"""What every sim service has: a gRPC server (``grpc.health.v1``, reflection, its domain API), HTTP
``/api/v1/health`` and ``/api/v1/ready``, a heartbeat in the Redis service registry
(``registry:services:{name}``, a hash with a TTL), and audit events on ``audit.events.v1``.

Lifecycle: started (audit ``service_started``) -> ready after the start delay (``service_ready``,
health SERVING, registry status ``ready``) -> on SIGTERM: health NOT_SERVING, registry entry removed,
``service_stopping``, work stopped. A crash (knob ``crash_after``) exits without any of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import grpc
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from sim import kafka_security
from sim.knobs import Knobs
from sim.telemetry import AUDIT, OTEL, Otel

log = logging.getLogger("sim")

AUDIT_TOPIC = "audit.events.v1"
REGISTRY_KEY = "registry:services:{name}"
CORRELATION_HEADER = "correlation-id"
AUDIT_SEND_TIMEOUT = 2.0
AUDIT_TYPE = "coordinator.v1.AuditEvent"  # the audit contract's message (topics/asyncapi.yaml)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def correlation_of(headers: Iterable[tuple[str, bytes | None]] | None) -> str:
    for key, value in headers or ():
        if key == CORRELATION_HEADER and value:
            return value.decode("utf-8", "replace")
    return ""


@dataclass
class Config:
    name: str
    kafka: str
    redis_url: str
    grpc_port: int
    http_port: int
    host: str = "127.0.0.1"
    #: the host written to the registry (others reach the service there); default: host. ``ip``: the
    #: address of this host's interface toward Redis, read once at start (in a container, its own
    #: address: peers then reach it without a name lookup)
    advertise_host: str | None = None
    audit_topic: str = AUDIT_TOPIC
    registry_ttl: float = 10.0
    #: where events go: ``audit`` (Kafka), ``otel`` (OTLP logs and spans to ``otlp_endpoint``), or both
    telemetry: frozenset[str] = frozenset({AUDIT})
    otlp_endpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


#: ``--advertise-host ip``: advertise this host's own address rather than a name
ADVERTISE_IP = "ip"


def own_address(redis_url: str) -> str:
    """The address of the interface this host reaches Redis from (no packet is sent: a UDP socket is
    only connected). A container engine gives a restarted container a new address, and its name
    server may answer slowly or not at all for a while after the restart (seen under load in the
    compose runs): a peer that dials the address read from the registry needs no lookup."""
    url = urlparse(redis_url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((url.hostname or "127.0.0.1", url.port or 6379))
        return str(probe.getsockname()[0])


class Service:
    """One sim process. Subclasses add their gRPC servicer and their work (``start_work``)."""

    #: full names of the domain gRPC services, for health and reflection
    grpc_services: tuple[str, ...] = ()

    def __init__(self, config: Config, knobs: Knobs) -> None:
        self.config = config
        self.knobs = knobs
        self.name = config.name
        self.ready = False
        self.started_at = time.time()
        self.counters: dict[str, int] = {}
        self.producer: AIOKafkaProducer | None = None
        self.redis = aioredis.from_url(config.redis_url, decode_responses=True)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server()
        self._tasks: list[asyncio.Task[Any]] = []
        self._random = random.Random()  # noqa: S311 - fault simulation, not security
        self.otel: Otel | None = None
        # GET /metrics: what a service instrumented with a Prometheus client exposes
        self.metrics = CollectorRegistry(auto_describe=True)
        self.calls = Counter("sim_requests", "API calls answered, by method and outcome (ok, error)",
                             ["method", "outcome"], registry=self.metrics)
        self.events = Counter("sim_events", "Events the service told of, by type", ["event_type"],
                              registry=self.metrics)
        self.up = Gauge("sim_ready", "1 while the service is ready", registry=self.metrics)

    # -- to override -------------------------------------------------------------------------------
    def add_servicers(self, server: grpc.aio.Server) -> None:
        """Register the domain servicer(s) on ``server``."""

    async def start_work(self) -> None:
        """Start consumers and loops (use ``self.spawn``)."""

    async def stop_work(self) -> None:
        """Stop what ``start_work`` started, flushing what must not be lost."""

    def status(self) -> dict[str, Any]:
        return {}

    # -- shared ---------------------------------------------------------------------------------------
    async def answer(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Count a call; under the ``error_rate`` knob, fail that share of calls with INTERNAL."""
        errors, ok = self.calls.labels(method, "error"), self.calls.labels(method, "ok")  # both series, from 0
        if self.knobs.error_rate and self._random.random() < self.knobs.error_rate:
            errors.inc()
            await context.abort(grpc.StatusCode.INTERNAL, f"{self.name}: injected error (knob error_rate)")
        ok.inc()

    def count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.append(task)
        return task

    def span(self, name: str, headers: Iterable[tuple[str, bytes | None]] | None = None, correlation_id: str = "",
             **attributes: Any) -> contextlib.AbstractContextManager[None]:
        """The work of one input as an OpenTelemetry span (nothing without ``otel``), a child of the
        trace context the input's record carried."""
        if self.otel is None:
            return contextlib.nullcontext()
        return self.otel.span(name, headers, correlation_id, attributes)

    async def audit(self, event_type: str, correlation_id: str = "", status: str = "ok", **metadata: Any) -> None:
        """Publish an audit event (JSON, the audit contract's fields) and/or its OpenTelemetry log
        record; the knobs may drop or repeat it."""
        if self.knobs.audit_drop and self._random.random() < self.knobs.audit_drop:
            self.count("audit_dropped")
            return
        text = {k: str(v) for k, v in metadata.items() if v is not None}
        copies = 2 if self.knobs.audit_duplicate and self._random.random() < self.knobs.audit_duplicate else 1
        if self.otel is not None:
            self.otel.event(event_type, correlation_id, status, text, copies)
        if AUDIT in self.config.telemetry and not await self._send_audit(event_type, correlation_id, status, text,
                                                                          copies):
            return
        self.count(f"audit_{event_type}")
        self.events.labels(event_type).inc()

    async def _send_audit(self, event_type: str, correlation_id: str, status: str, metadata: dict[str, str],
                          copies: int) -> bool:
        if self.producer is None:
            return False
        body = {"id": str(uuid.uuid4()), "service_name": self.name, "event_type": event_type,
                "timestamp": now_rfc3339(), "status": status, "correlation_id": correlation_id,
                "instance": "" if self.knobs.no_instance else str(os.getpid()), "metadata": metadata}
        value = json.dumps(body, separators=(",", ":")).encode()
        headers = [("content-type", b"application/json"), ("ce_specversion", b"1.0"),
                   ("ce_id", body["id"].encode()), ("ce_source", f"/sim/{self.name}".encode()),
                   ("ce_type", AUDIT_TYPE.encode()), ("ce_time", body["timestamp"].encode())]
        if correlation_id:
            headers.append((CORRELATION_HEADER, correlation_id.encode()))
        try:
            for _ in range(copies):
                # bounded: a missing topic or a full buffer must not stop the service's own work
                await asyncio.wait_for(self.producer.send(self.config.audit_topic, value, key=self.name.encode(),
                                                          headers=headers), AUDIT_SEND_TIMEOUT)
        except (TimeoutError, KafkaError) as exc:
            self.count("audit_failed")
            log.warning("audit event %s not sent to %s: %s", event_type, self.config.audit_topic,
                        exc or "no answer in time")
            return False
        return True

    async def mark_ready(self) -> None:
        self.ready = True
        self.up.set(1)
        for service in ("", *self.grpc_services):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self._register("ready")
        await self.audit("service_ready", startup_seconds=round(time.time() - self.started_at, 3))
        log.info("%s ready", self.name)

    async def require_ready(self, context: grpc.aio.ServicerContext) -> None:
        """Abort a call with UNAVAILABLE while the service is not ready."""
        if not self.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is not ready")

    # -- lifecycle ------------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        for service in ("", *self.grpc_services):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.add_servicers(self.server)
        reflection.enable_server_reflection(
            (*self.grpc_services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        self.server.add_insecure_port(f"{self.config.host}:{self.config.grpc_port}")
        await self.server.start()
        runner = await self._start_http()

        if OTEL in self.config.telemetry:
            self.otel = Otel(self.name, "" if self.knobs.no_instance else str(os.getpid()), self.config.otlp_endpoint)
        self.producer = AIOKafkaProducer(**kafka_security.options(self.config.kafka), linger_ms=5, acks=1)
        await _retry(self.producer.start, stop, what="kafka")
        # the sim's topics, made by whichever service starts first (compose runs no `sim up`)
        await _retry(lambda: ensure_topics(self.config.kafka, self.config.audit_topic), stop, what="kafka topics")
        if self.config.advertise_host == ADVERTISE_IP:
            self.config.advertise_host = await asyncio.get_running_loop().run_in_executor(
                None, own_address, self.config.redis_url)
            log.info("%s advertises %s", self.name, self.config.advertise_host)
        await self._register("starting")
        self.spawn(self._heartbeat(), "registry heartbeat")
        await self.audit("service_started", pid=os.getpid(), knobs=self.knobs.describe())
        log.info("%s started (grpc %s, http %s, knobs: %s)", self.name, self.config.grpc_port,
                 self.config.http_port, self.knobs.describe())
        await self.start_work()
        if self.knobs.crash_after is not None:
            self.spawn(self._crash_later(self.knobs.crash_after), "crash")
        if not self.knobs.never_ready:
            self.spawn(self._ready_later(self.knobs.start_delay), "ready")

        await stop.wait()
        log.info("%s stopping", self.name)
        self.ready = False
        self.up.set(0)
        await self.health.enter_graceful_shutdown()
        with contextlib.suppress(Exception):
            await self.redis.delete(REGISTRY_KEY.format(name=self.name))
        for last in filter(None, self.knobs.last_words.split(",")):
            await self.audit(last, last_words="true")
        await self.audit("service_stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stop_work()
        await self.producer.stop()
        if self.otel is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.otel.shutdown)
        await self.server.stop(grace=1.0)
        await runner.cleanup()
        await self.redis.aclose()
        return 0

    async def _ready_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.mark_ready()

    async def _crash_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        log.error("%s crashing on purpose (knob crash_after=%s)", self.name, delay)
        if self.producer is not None:
            await self.producer.flush()
        if self.otel is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.otel.flush)
        os._exit(3)

    async def _register(self, status: str) -> None:
        key = REGISTRY_KEY.format(name=self.name)
        entry = {"name": self.name, "host": self.config.advertise_host or self.config.host,
                 "grpc_port": self.config.grpc_port, "http_port": self.config.http_port, "type": "sim",
                 "status": status, "pid": os.getpid(), "updated_at": now_rfc3339()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=entry)
            pipe.expire(key, max(1, int(self.config.registry_ttl)))
            await pipe.execute()

    async def _heartbeat(self) -> None:
        interval = max(0.5, self.config.registry_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._register("ready" if self.ready else "starting")
            except (aioredis.RedisError, OSError) as exc:
                log.warning("registry heartbeat failed: %s", exc)

    async def _start_http(self) -> web.AppRunner:
        app = web.Application()

        async def health_handler(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "service": self.name})

        async def ready_handler(_: web.Request) -> web.Response:
            if self.ready:
                return web.json_response({"status": "ready", "service": self.name})
            return web.json_response({"status": "not ready", "service": self.name}, status=503)

        async def status_handler(_: web.Request) -> web.Response:
            return web.json_response({"service": self.name, "ready": self.ready, "knobs": self.knobs.describe(),
                                      "counters": self.counters, **self.status()})

        async def metrics_handler(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics_handler)
        app.router.add_get("/api/v1/health", health_handler)
        app.router.add_get("/api/v1/ready", ready_handler)
        app.router.add_get("/api/v1/status", status_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.config.host, self.config.http_port, reuse_address=True).start()
        return runner


async def ensure_topics(bootstrap: str, audit_topic: str, partitions: int = 3,
                        security: dict[str, str] | None = None, orders_topic: str | None = None) -> None:
    """Create the sim's topics (the audit topic, and the load generator's orders topic when it has its
    own) when missing; existing ones are left alone."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from sim.services import TOPICS

    admin = AIOKafkaAdminClient(**kafka_security.options(bootstrap, {**os.environ, **(security or {})}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(t, partitions, 1) for t in dict.fromkeys((*TOPICS, orders_topic or TOPICS[0]))
                  if t not in existing]
        if audit_topic not in existing:
            wanted.append(NewTopic(audit_topic, 6, 1))
        if wanted:
            with contextlib.suppress(Exception):  # a topic created meanwhile by someone else is fine
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def _retry(start: Callable[[], Awaitable[Any]], stop: asyncio.Event, *, what: str) -> None:
    """``start()`` until it succeeds, backing off to 5 s; one line when it first fails (and when the
    reason changes), one when it works, not one per retry."""
    delay = 0.2
    said: str | None = None
    while True:
        try:
            await start()
            if said is not None:
                log.info("%s reachable", what)
            return
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
            if stop.is_set():
                raise
            if str(exc) != said:
                log.warning("%s not reachable yet (%s); retrying with back-off", what, exc)
                said = str(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


#: how a channel gets back to a peer that restarted: gRPC's defaults back off from 1 s by 1.6x up to
#: 120 s, and re-resolve a name at most every 30 s, so a peer away for a few seconds (a container
#: restart) stayed unreachable for many more (orders were lost long after it was back). A service
#: that must reach a restarted peer at once retries quickly, caps the back-off, re-resolves often,
#: and bounds every call with its own deadline (the callers' timeouts).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 500),
)


#: a channel that failed a call (unavailable, or no answer in time) is replaced by a new one, at most
#: this often per address: a new channel resolves the name again and connects afresh, where an old one
#: may keep trying the address a restarted container had (its IP can change on restart)
CHANNEL_RENEW_S = 1.0
#: a replaced channel is closed with this grace, longer than any call's own deadline: closing it with
#: none cancels the calls still on it, and a cancelled call raises CancelledError in its caller (which
#: ended the order's task and lost the order)
CHANNEL_CLOSE_GRACE_S = 5.0
_RENEW_ON = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


#: a peer's address read from the registry is used this long before it is read again, by one caller
#: at a time: one registry read a second per peer, not one per call (a burst of calls opened a Redis
#: connection each, and each new connection looked the host up again)
ADDRESS_TTL_S = 1.0


class Channels:
    """gRPC channels to other sim services, one per address, found through the registry. When the
    registry cannot be read (Redis away, or its name not resolving for a moment, as when a container
    engine reloads its DNS after another container restarted), the last address known is used: a
    blip of the registry must not stop calls to a peer that is up."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._made: dict[str, float] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._addresses: dict[str, tuple[str | None, float]] = {}
        self._reading: dict[str, asyncio.Lock] = {}
        self._unreadable = False

    async def address(self, service: str) -> str | None:
        known = self._addresses.get(service)
        if known is not None and time.monotonic() - known[1] < ADDRESS_TTL_S:
            return known[0]
        async with self._reading.setdefault(service, asyncio.Lock()):
            known = self._addresses.get(service)
            if known is not None and time.monotonic() - known[1] < ADDRESS_TTL_S:
                return known[0]  # read by another caller meanwhile
            try:
                entry = await self.redis.hgetall(REGISTRY_KEY.format(name=service))
            except (aioredis.RedisError, OSError) as exc:
                if not self._unreadable:
                    log.warning("the registry cannot be read (%s); using the addresses known", exc)
                    self._unreadable = True
                if known is None:
                    raise LookupError(f"{service}: the registry cannot be read ({exc})") from exc
                return known[0]
            self._unreadable = False
            found = f"{entry.get('host', '127.0.0.1')}:{entry['grpc_port']}" if entry.get("grpc_port") else None
            if found is not None and known is not None and known[0] not in (None, found):
                self._retire(known[0])  # the peer moved (a restarted container's new address)
            self._addresses[service] = (found, time.monotonic())
            return found

    def channel(self, address: str) -> grpc.aio.Channel:
        found = self._channels.get(address)
        if found is None:
            found = self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._made[address] = time.monotonic()
        return found

    def failed(self, address: str, error: grpc.aio.AioRpcError) -> bool:
        """A call to ``address`` failed: replace its channel when the peer looks away and the channel
        is older than ``CHANNEL_RENEW_S``. True when it was replaced."""
        if error.code() not in _RENEW_ON or time.monotonic() - self._made.get(address, 0.0) < CHANNEL_RENEW_S:
            return False
        return self._retire(address)

    def _retire(self, address: str) -> bool:
        """Close the channel to ``address``, letting the calls on it end by their deadline."""
        old = self._channels.pop(address, None)
        if old is None:
            return False
        closing = asyncio.ensure_future(old.close(grace=CHANNEL_CLOSE_GRACE_S))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        return True

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
