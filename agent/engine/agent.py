"""``coordinator serve``: the agent.

Parts, started as tasks and watched together (the first to fail stops the agent):

- ingress: a consumer group on the scenario-requests topic. Each record is decoded, claimed in
  Redis by its ``request_id`` (a request delivered twice runs once), resolved to a valid scenario,
  recorded, and started as an execution task; its offset is committed only after that (or after
  its rejection is published). Executions run beside the consumer, which keeps polling.
- verdicts: reads the stream worker's verdicts and routes them to executions.
- control: cancel, halt-all and resume, from Redis pub/sub (the CLI and gRPC send them).
- heartbeat and reconciler: keep this agent's leases alive; revert anyone's orphaned ones and
  finish executions whose agent died with exactly one ABORTED result.
- HTTP: health, readiness, metrics; gRPC: the CoordinatorService API, health, reflection
  (``agent.grpc_api``).

Stopping (SIGTERM) aborts every execution: faults reverted, rollbacks run, ABORTED published.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from google.protobuf import json_format

from agent import codec, metrics
from agent._proto.coordinator.v1 import events_pb2
from agent.config_service import ConfigService, RuntimeSettings
from agent.drivers import DriverRegistry
from agent.drivers.probes import Prober
from agent.engine.execution import EngineContext, Execution, Verdicts
from agent.engine.faults import FaultManager
from agent.engine.publisher import Publisher
from agent.errors import DecodeError, ScenarioError
from agent.http import HttpServer
from agent.kafkaio import topic_partitions
from agent.logs import get_logger
from agent.registry import SelfRegistration
from agent.relay import Relay
from agent.scenario import Scenario, default_directories
from agent.scenario.catalog import CatalogCache, ScenarioCache
from agent.settings import Settings
from agent.store import ExecutionRecord, Store

log = get_logger("agent.engine")
S = events_pb2


class Rejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Slots:
    """At most ``limit()`` executions at once; the limit may change while the agent runs."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._running = 0
        self._condition = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._condition:
            await self._condition.wait_for(lambda: self._running < self._limit())
            self._running += 1

    async def __aexit__(self, *_: object) -> None:
        async with self._condition:
            self._running -= 1
            self._condition.notify_all()

    async def changed(self) -> None:
        async with self._condition:
            self._condition.notify_all()


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owner = f"{settings.instance_id}/{uuid.uuid4().hex[:8]}"
        self.store = Store(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
        self.publisher = Publisher(settings)
        self.drivers = DriverRegistry(settings)
        self.faults = FaultManager(settings, self.store, self.drivers, self.publisher, self.owner)
        self.prober = Prober(settings)
        self.verdicts = Verdicts()
        self.ctx = EngineContext(settings, self.store, self.publisher, self.faults, self.prober, self.drivers,
                                 self.verdicts)
        self.executions: dict[str, tuple[Execution, asyncio.Task[None]]] = {}
        self.config = ConfigService(settings.config_service_url, settings.config_environment,
                                    settings.config_service_ttl)
        self.runtime = RuntimeSettings(settings, self.config)
        self._slots = Slots(lambda: self.runtime.max_concurrent_executions)
        self.catalog = CatalogCache(default_directories(settings.scenario_dirs))
        self.scenarios = ScenarioCache()
        self.http = HttpServer(settings)
        from agent.grpc_api import GrpcServer

        self.grpc = GrpcServer(self)
        host = settings.registry_host or (settings.grpc_host if settings.grpc_host not in ("0.0.0.0", "::")  # noqa: S104
                                          else socket.gethostname())
        self.registration = SelfRegistration(self.store.redis, settings.registry_name, host, settings.registry_ttl)
        self.http_started = asyncio.Event()
        self.ready = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set. HTTP comes up first; the engine waits for its dependencies."""
        await self.http.start()
        await self.grpc.start()
        self.registration.ports = {"grpc": self.grpc.port, "http": self.http.port}
        registration = asyncio.create_task(self.registration.keep_alive(), name="registry")
        self.http_started.set()
        parts: list[asyncio.Task[Any]] = []
        consumer: AIOKafkaConsumer | None = None
        try:
            consumer = await self._start_when_possible(stop)
            if consumer is None:
                return
            # verdicts are read from the end of the topic: find that end before the first request is
            # taken, or a fast verdict can land before it and be missed
            positioned = asyncio.Event()
            listener = asyncio.create_task(self._verdict_listener(positioned), name="verdicts")
            parts = [listener]
            waits = [asyncio.create_task(positioned.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait([*waits, listener], return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            if not positioned.is_set():
                if listener.done() and not listener.cancelled() and listener.exception():
                    log.error("agent part failed", part="verdicts", error=repr(listener.exception()))
                return
            await self.runtime.refresh()  # runtime settings before the first request
            parts = [
                asyncio.create_task(self._ingress(consumer), name="ingress"),
                listener,
                asyncio.create_task(self._control(), name="control"),
                asyncio.create_task(self.faults.heartbeat_forever(), name="heartbeat"),
                asyncio.create_task(self._reconcile_forever(), name="reconciler"),
                asyncio.create_task(self._refresh_runtime_forever(), name="runtime settings"),
                *(asyncio.create_task(Relay(self.settings, r.source, r.topic).run(), name=f"relay {r.source}")
                  for r in self.settings.relays),
            ]
            stopper = asyncio.create_task(stop.wait(), name="stop")
            self.ready.set()
            self.registration.status = "ready"
            with contextlib.suppress(Exception):
                await self.registration.write()
            log.info("agent serving", owner=self.owner, http_port=self.http.port,
                     requests=self.settings.topics.scenario_requests)
            done, _ = await asyncio.wait([*parts, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for task in done:
                if task is not stopper and task.exception():
                    log.error("agent part failed", part=task.get_name(), error=repr(task.exception()))
            await self.grpc.begin_shutdown()  # health says NOT_SERVING from now on
            parts[0].cancel()  # stop taking requests first
            await asyncio.gather(parts[0], return_exceptions=True)
            await self.abort_all("the agent is shutting down")
        finally:
            for task in parts:
                task.cancel()
            await asyncio.gather(*parts, return_exceptions=True)
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            registration.cancel()
            await asyncio.gather(registration, return_exceptions=True)
            await self.registration.remove()
            await self.grpc.stop()
            await self.http.aclose()
            await self.drivers.aclose()
            await self.prober.aclose()
            await self.config.aclose()
            await self.publisher.aclose()
            await self.store.aclose()
            log.info("agent stopped", owner=self.owner)

    async def _start_when_possible(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """Connect to Kafka and Redis, retrying with back-off; None when stopped first."""
        delay = 0.5
        while not stop.is_set():
            try:
                if self.settings.create_topics:
                    from agent import topics

                    await topics.apply(self.settings)
                await self.publisher.start()
                await self.store.renew_leases(self.owner, [], self.settings.lease_ttl)
                await self._reconcile_once()
                return await self._consumer()
            except Exception as exc:  # noqa: BLE001 - any dependency not there yet: wait and retry
                log.warning("waiting for dependencies", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
        return None

    async def abort_all(self, reason: str) -> None:
        running = list(self.executions.values())
        for execution, task in running:
            execution.abort_reason = reason
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)

    # -- ingress ---------------------------------------------------------------------------------
    async def _consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            self.settings.topics.scenario_requests, bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.settings.consumer_group, client_id=f"{self.settings.kafka_client_id}-ingress",
            enable_auto_commit=False, auto_offset_reset="earliest",
            # a requests topic created after the agent started is found within seconds, not minutes
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        return consumer

    async def _ingress(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=100)
            for tp, records in batch.items():
                # accepted concurrently: the Redis claim keeps a duplicate out even within one batch
                await asyncio.gather(*(self.accept(record) for record in records))
                await consumer.commit({tp: records[-1].offset + 1})

    async def accept(self, record: ConsumerRecord) -> None:
        received = (record.timestamp / 1000.0) if record.timestamp and record.timestamp > 0 else time.time()
        request = events_pb2.ScenarioRequest()
        request_id = f"{record.topic}-{record.partition}-{record.offset}"
        execution_id = str(uuid.uuid4())
        try:
            try:
                request = codec.decode_event(record.value, record.headers, events_pb2.ScenarioRequest)
            except DecodeError as exc:
                raise Rejected(exc.reason, str(exc)) from exc
            request_id = request.request_id or request_id
            earlier = await self.store.claim_request(request_id, execution_id)
            if earlier is not None:
                metrics.REQUESTS.labels(outcome="duplicate").inc()
                log.info("duplicate request ignored", request_id=request_id, execution_id=earlier)
                return
            halted = await self.store.halted()
            if halted:
                raise Rejected("halted", f"the agent is halted ({halted}); resume it to run scenarios")
            scenario = self.scenario_for(request, request_id)
        except Rejected as exc:
            await self._reject(record, request, request_id, execution_id, exc)
            return
        await self.store.save_execution(ExecutionRecord(
            execution_id=execution_id, request_id=request_id, scenario_name=scenario.name, status="PENDING",
            owner=self.owner, requester=request.requester, started_at=time.time(), labels=dict(request.labels)))
        metrics.REQUESTS.labels(outcome="accepted").inc()
        execution = Execution(self.ctx, execution_id, request_id, request, scenario, received)
        task = asyncio.create_task(self._run(execution), name=f"execution-{execution_id}")
        self.executions[execution_id] = (execution, task)
        log.info("request accepted", request_id=request_id, execution_id=execution_id, scenario=scenario.name)

    def scenario_for(self, request: events_pb2.ScenarioRequest, request_id: str) -> Scenario:
        overrides = {k: json_format.MessageToDict(v) for k, v in request.parameters.items()} or None
        allowed = self.settings.allowed_targets
        try:
            which = request.WhichOneof("scenario")
            if which == "scenario_yaml":
                return self.scenarios.load(request.scenario_yaml, f"request {request_id}", overrides, allowed)
            if which != "scenario_name":
                raise Rejected("no-scenario", "the request names no scenario (scenario_name or scenario_yaml)")
            try:
                entry = self.catalog.get().get(request.scenario_name)
            except KeyError as exc:
                raise Rejected("unknown-scenario", str(exc.args[0])) from None
            return self.scenarios.load(entry.path.read_text(), str(entry.path), overrides, allowed)
        except ScenarioError as exc:
            parameters_only = all(i.file == "request" or "parameter" in i.message for i in exc.issues)
            raise Rejected("invalid-parameters" if parameters_only else "invalid-scenario",
                           "; ".join(str(i) for i in exc.issues)) from exc

    async def _reject(self, record: ConsumerRecord, request: events_pb2.ScenarioRequest, request_id: str,
                      execution_id: str, exc: Rejected) -> None:
        metrics.REQUESTS.labels(outcome="rejected").inc()
        log.warning("request rejected", request_id=request_id, reason=exc.code, error=str(exc))
        result = events_pb2.ScenarioResult(
            execution_id=execution_id, request_id=request_id, status=S.EXECUTION_STATUS_REJECTED,
            reason=f"{exc.code}: {exc}", requester=request.requester, labels=dict(request.labels),
            scenario_name=request.scenario_name if request.WhichOneof("scenario") == "scenario_name" else "",
        )
        result.started_at.GetCurrentTime()
        result.ended_at.GetCurrentTime()
        await self.publisher.dead_letter(record, exc.code, str(exc))
        await self.store.save_execution(ExecutionRecord(
            execution_id=execution_id, request_id=request_id, scenario_name=result.scenario_name, status="REJECTED",
            owner=self.owner, requester=request.requester, started_at=time.time(), ended_at=time.time(),
            reason=result.reason))
        await self._publish_result(result)
        metrics.EXECUTIONS.labels(status="REJECTED").inc()

    async def _run(self, execution: Execution) -> None:
        try:
            async with self._slots:
                cancelled = await self.store.cancel_requested(execution.execution_id)
                if cancelled:
                    execution.abort_reason = cancelled
                    execution.cancelled_before_start = True
                result = await execution.run()
            await self._publish_result(result)
        finally:
            self.executions.pop(execution.execution_id, None)

    async def _refresh_runtime_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.settings.config_service_ttl))
            await self.runtime.refresh()
            await self._slots.changed()

    async def _publish_result(self, result: events_pb2.ScenarioResult) -> None:
        if not await self.store.claim_result(result.execution_id):
            log.warning("a result was already published; not publishing another", execution_id=result.execution_id)
            return
        await self.publisher.result(result)
        await self.store.save_result(result.execution_id, result.SerializeToString())
        await self.store.update_execution(result.execution_id, status=S.ExecutionStatus.Name(result.status)
                                          .removeprefix("EXECUTION_STATUS_"), ended_at=time.time(),
                                          reason=result.reason)
        log.info("result published", execution_id=result.execution_id,
                 status=S.ExecutionStatus.Name(result.status), reason=result.reason)

    # -- verdicts and control ----------------------------------------------------------------------
    async def _verdict_listener(self, positioned: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                    client_id=f"{self.settings.kafka_client_id}-verdicts")
        await consumer.start()
        try:
            topic = self.settings.topics.verdicts
            try:
                partitions = await topic_partitions(consumer, topic, timeout=10)
            except LookupError:
                log.warning("waiting for topic", topic=topic, hint="coordinator topics apply")
                partitions = await topic_partitions(consumer, topic, timeout=None)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)
            positioned.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        try:
                            verdict = codec.decode_event(record.value, record.headers, events_pb2.ExpectationVerdict)
                        except DecodeError as exc:
                            log.warning("undecodable verdict skipped", offset=record.offset, error=str(exc))
                            continue
                        self.verdicts.deliver(verdict)
        finally:
            await consumer.stop()

    async def _control(self) -> None:
        async for message in self.store.control_messages():
            action = message.get("action")
            if action == "cancel":
                found = self.executions.get(str(message.get("execution_id")))
                if found:
                    found[0].abort_reason = message.get("reason") or "cancelled"
                    found[1].cancel()
            elif action == "halt":
                reason = f"halt-all: {message.get('reason') or 'halted'}"
                await self.abort_all(reason)
                await self.faults.reconcile(everything=True)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            try:
                await self._reconcile_once()
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("reconciliation failed", error=str(exc))

    async def _reconcile_once(self) -> None:
        await self.faults.reconcile()
        orphans = [r for r in await self.store.list_executions(limit=500)
                   if r.status in {"PENDING", "RUNNING"} and r.owner != self.owner]
        if not orphans:
            return
        alive = {owner: await self.store.owner_alive(owner) for owner in {r.owner for r in orphans}}
        with_faults = {lease.execution_id for lease in await self.store.leases()}
        for record in orphans:
            if alive[record.owner] or record.execution_id in with_faults:
                continue  # still running elsewhere, or faults still to revert: a later round finishes it
            result = events_pb2.ScenarioResult(
                execution_id=record.execution_id, request_id=record.request_id, scenario_name=record.scenario_name,
                status=S.EXECUTION_STATUS_ABORTED, requester=record.requester, labels=record.labels,
                reason=(f"aborted: the agent running it ({record.owner}) stopped; its faults were reverted "
                        f"by lease reconciliation ({self.owner})"),
            )
            result.started_at.FromNanoseconds(int(record.started_at * 1e9))
            result.ended_at.GetCurrentTime()
            await self._publish_result(result)
