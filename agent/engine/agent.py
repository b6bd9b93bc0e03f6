"""``coordinator serve``: the agent.

Parts, started as tasks and supervised: a part that fails because Kafka or Redis is unreachable is
restarted with back-off (``/api/v1/ready`` names it meanwhile); a part that fails for any other
reason stops the agent, which then exits non-zero:

- ingress: a consumer group on the scenario-requests topic. Each record is decoded, resolved to a
  valid scenario, and claimed in Redis by its ``request_id`` together with its execution record, in
  one step (a request delivered twice runs once; there is never a claim without a record); then
  started as an execution task. A record that cannot be used is dead-lettered (a truncated copy when
  too large) and gets a REJECTED result. Its offset is committed only after that; a batch that
  fails half way is read again from its first record. Executions run beside the consumer.
- verdicts: reads the stream worker's verdicts and routes them to executions.
- control: cancel, halt-all and resume, from Redis pub/sub (the CLI and gRPC send them).
- heartbeat and reconciler: keep this agent's leases alive; take over and revert anyone's orphaned
  ones; take over executions whose agent died (a fencing epoch shuts the old owner out) and finish
  them with exactly one result: ABORTED, or the REJECTED / final result it had not yet published.
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
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from google.protobuf import json_format

from agent import codec, failpoints, metrics, vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.config_service import ConfigService
from agent.drivers import DriverRegistry
from agent.drivers.probes import Prober
from agent.engine.execution import EngineContext, Execution, Verdicts
from agent.engine.faults import FaultManager
from agent.engine.publisher import Publisher
from agent.errors import DecodeError, InvalidParameters, NotFound, ScenarioError
from agent.health import CheckResult
from agent.http import HttpServer
from agent.kafkaio import topic_partitions
from agent.logs import get_logger
from agent.policy import PolicySource
from agent.registry import SelfRegistration
from agent.relay import Relay
from agent.scenario import Scenario, default_directories
from agent.scenario.catalog import CatalogCache, ScenarioCache
from agent.settings import Settings
from agent.store import TRANSIENT, ExecutionRecord, Store

log = get_logger("agent.engine")
S = events_pb2
#: failures that mean a dependency is away for now: the part is restarted, the agent stays up
PART_TRANSIENT = (*TRANSIENT, KafkaError)
PART_SETTLE_S = 5.0


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
        self.store = Store(settings.redis_url.get_secret_value(), settings.redis_key_prefix, patient=True)
        self.publisher = Publisher(settings)
        self.drivers = DriverRegistry(settings)
        self.config = ConfigService(settings.config_service_url, settings.config_environment,
                                    settings.config_service_ttl)
        #: the allow-list and concurrency limit now (Settings never change while the agent runs)
        self.policy = PolicySource(settings, self.config)
        self.faults = FaultManager(settings, self.store, self.drivers, self.publisher, self.owner, self.policy)
        self.prober = Prober(settings)
        self.verdicts = Verdicts()
        self.ctx = EngineContext(settings, self.store, self.publisher, self.faults, self.prober, self.drivers,
                                 self.verdicts)
        #: running executions (the task is None for the moment a request is being claimed)
        self.executions: dict[str, tuple[Execution, asyncio.Task[None] | None]] = {}
        self._slots = Slots(lambda: self.policy.current.max_concurrent_executions)
        self.catalog = CatalogCache(default_directories(settings.scenario_dirs))
        self.scenarios = ScenarioCache()
        self.http = HttpServer(settings, self.health)
        #: parts failing now (name -> why), for readiness
        self.failing: dict[str, str] = {}
        #: what the agent waits for before it serves (readiness says so)
        self.waiting = "starting"
        #: the process's exit status: 1 once a part failed for good
        self.exit_code = 0
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
                    self.exit_code = 1
                    log.error("agent part failed", part="verdicts", error=repr(listener.exception()))
                return
            await self.policy.refresh()  # the policy before the first request
            ingress = consumer
            parts = [
                self._part("ingress", lambda: self._ingress(ingress)),
                listener,
                self._part("control", self._control),
                self._part("heartbeat", self.faults.heartbeat_forever),
                self._part("reconciler", self._reconcile_forever),
                self._part("policy", lambda: self.policy.refresh_forever(self._slots.changed)),
                *(self._part(f"relay {r.source}", Relay(self.settings, r.source, r.topic).run)
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
                if task is not stopper and not task.cancelled() and task.exception():
                    self.exit_code = 1
                    log.error("agent part failed for good; stopping", part=task.get_name(),
                              error=repr(task.exception()))
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
                # orphaned faults are reverted by the reconciler part: one that cannot be reverted
                # must not keep the agent from serving
                return await self._consumer()
            except Exception as exc:  # noqa: BLE001 - any dependency not there yet: wait and retry
                self.waiting = f"waiting for Kafka and Redis: {type(exc).__name__}: {exc}"
                log.warning("waiting for dependencies", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
        return None

    def _part(self, name: str, body: Callable[[], Any]) -> asyncio.Task[None]:
        return asyncio.create_task(self._supervised(name, body), name=name)

    async def _supervised(self, name: str, body: Callable[[], Any]) -> None:
        """Run a part; restart it with back-off while Kafka or Redis is away. Other failures propagate."""
        delay = 0.5
        while True:
            run = asyncio.ensure_future(body())
            try:
                if name in self.failing:
                    # a restarted part that runs for a few seconds counts as recovered
                    done, _ = await asyncio.wait([run], timeout=PART_SETTLE_S)
                    if not done:
                        log.warning("agent part running again", part=name)
                        self.failing.pop(name, None)
                        delay = 0.5
                await run
                return
            except PART_TRANSIENT as exc:
                why = f"{type(exc).__name__}: {exc}"
                metrics.PART_RESTARTS.labels(part=name).inc()
                if name not in self.failing:  # one line per change of state, not one per retry
                    log.warning("agent part interrupted; restarting it", part=name, error=why)
                self.failing[name] = why
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                run.cancel()

    def health(self) -> list[CheckResult]:
        """The agent's own readiness checks, beside Kafka's and Redis's (``/api/v1/ready``)."""
        checks = []
        if not self.ready.is_set():
            checks.append(CheckResult("engine", False, self.waiting, 0.0))
        elif self.failing:
            checks.append(CheckResult("engine", False, "; ".join(f"{p}: {w}" for p, w in self.failing.items()), 0.0))
        else:
            checks.append(CheckResult("engine", True, f"{len(self.executions)} execution(s) running", 0.0))
        stuck = self.faults.stuck
        detail = "; ".join(f"{s.lease.fault} on {s.lease.target} ({cid}): {s.error}, {s.attempts} attempt(s)"
                           for cid, s in stuck.items()) or "none"
        # an unrevertable fault is reported, but does not make the agent unready: it keeps retrying it
        checks.append(CheckResult("unrevertable_faults", True, detail, 0.0))
        return checks

    async def abort_all(self, reason: str) -> None:
        running = list(self.executions.values())
        for execution, task in running:
            execution.abort_reason = reason
            if task is not None:
                task.cancel()
        await asyncio.gather(*(task for _, task in running if task is not None), return_exceptions=True)

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
            pending = dict(batch)
            try:
                if batch:
                    await failpoints.point("after-consume")
                for tp, records in batch.items():
                    # accepted concurrently: the Redis claim keeps a duplicate out even within one batch
                    await asyncio.gather(*(self.accept(record) for record in records))
                    await consumer.commit({tp: records[-1].offset + 1})
                    pending.pop(tp)
            except BaseException:
                # read what was not committed again when the part restarts: nothing is skipped
                for tp, records in pending.items():
                    with contextlib.suppress(Exception):
                        consumer.seek(TopicPartition(tp.topic, tp.partition), records[0].offset)
                raise

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
            halted = await self.store.patiently(self.store.halted)
            if halted:
                raise Rejected("halted", f"the agent is halted ({halted}); resume it to run scenarios")
            scenario = self.scenario_for(request, request_id)
        except Rejected as exc:
            await self._reject(record, request, request_id, execution_id, exc)
            return
        execution = Execution(self.ctx, execution_id, request_id, request, scenario, received)
        # registered before the claim, so that the reconciler never takes a run being accepted here
        self.executions[execution_id] = (execution, None)  # type: ignore[assignment]
        try:
            earlier = await self.store.claim_request(ExecutionRecord(
                execution_id=execution_id, request_id=request_id, scenario_name=scenario.name, status="PENDING",
                owner=self.owner, requester=request.requester, started_at=time.time(), labels=dict(request.labels)))
        except BaseException:
            self.executions.pop(execution_id, None)
            raise
        if earlier is not None:
            self.executions.pop(execution_id, None)
            metrics.REQUESTS.labels(outcome="duplicate").inc()
            log.info("duplicate request ignored", request_id=request_id, execution_id=earlier)
            return
        await failpoints.point("after-claim")
        metrics.REQUESTS.labels(outcome="accepted").inc()
        task = asyncio.create_task(self._run(execution), name=f"execution-{execution_id}")
        self.executions[execution_id] = (execution, task)
        log.info("request accepted", request_id=request_id, execution_id=execution_id, scenario=scenario.name)

    def scenario_for(self, request: events_pb2.ScenarioRequest, request_id: str) -> Scenario:
        overrides = {k: json_format.MessageToDict(v) for k, v in request.parameters.items()} or None
        allowed = list(self.policy.current.allowed_targets)
        try:
            which = request.WhichOneof("scenario")
            if which == "scenario_yaml":
                return self.scenarios.load(request.scenario_yaml, f"request {request_id}", overrides, allowed)
            if which != "scenario_name":
                raise Rejected("no-scenario", "the request names no scenario (scenario_name or scenario_yaml)")
            try:
                entry = self.catalog.get().get(request.scenario_name)
            except NotFound as exc:
                raise Rejected("unknown-scenario", str(exc)) from exc
            return self.scenarios.load(entry.path.read_text(), str(entry.path), overrides, allowed)
        except ScenarioError as exc:
            raise Rejected("invalid-parameters" if isinstance(exc, InvalidParameters) else "invalid-scenario",
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
        # claimed first, with its record (ended_at 0: no result yet), so that a redelivered copy is a
        # duplicate, and a crash before the result is finished by the reconciler with this REJECTED
        earlier = await self.store.claim_request(ExecutionRecord(
            execution_id=execution_id, request_id=request_id, scenario_name=result.scenario_name, status="REJECTED",
            owner=self.owner, requester=request.requester, started_at=time.time(), reason=result.reason,
            labels=dict(request.labels)))
        if earlier is not None:
            metrics.REQUESTS.labels(outcome="duplicate").inc()
            log.info("duplicate request ignored", request_id=request_id, execution_id=earlier)
            return
        await self.publisher.dead_letter(record, exc.code, str(exc))
        await self._publish_result(result, self.owner, 1)
        metrics.EXECUTIONS.labels(status="REJECTED").inc()

    async def _run(self, execution: Execution) -> None:
        try:
            async with self._slots:
                cancelled = await self.store.patiently(self.store.cancel_requested, execution.execution_id)
                if cancelled:
                    execution.abort_reason = cancelled
                    execution.cancelled_before_start = True
                result = await execution.run()
            if result is not None:  # None: another agent took the run over and publishes its result
                await self._publish_result(result, self.owner, execution.epoch)
        finally:
            self.executions.pop(execution.execution_id, None)

    async def _publish_result(self, result: events_pb2.ScenarioResult, owner: str, epoch: int) -> None:
        """Store the result (fenced by owner and epoch), publish it, then note it published."""
        status = vocabulary.status_name(result.status)
        if not await self.store.begin_result(result.execution_id, owner, epoch, result.SerializeToString(),
                                             status=status, ended_at=time.time(), reason=result.reason):
            log.warning("not publishing a result: the run has another owner now, or its result is out",
                        execution_id=result.execution_id, owner=owner, epoch=epoch)
            return
        await failpoints.point("before-result")
        await self.publisher.result(result)
        await self.store.result_published(result.execution_id)
        await failpoints.point("after-result")
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
                self.waiting = f"waiting for topic '{topic}' (create it: coordinator topics apply)"
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
                            # every agent reads every verdict: with N agents, N copies reach the dead letters
                            log.warning("undecodable verdict dead-lettered", offset=record.offset, error=str(exc))
                            await self.publisher.dead_letter(record, exc.reason, str(exc))
                            continue
                        self.verdicts.deliver(verdict)
        finally:
            await consumer.stop()

    async def _control(self) -> None:
        async for message in self.store.control_messages():
            action = message.get("action")
            if action == "cancel":
                found = self.executions.get(str(message.get("execution_id")))
                if found and found[1] is not None:
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
                   if r.owner != self.owner and _unfinished(r)]
        if not orphans:
            return
        alive = {owner: await self.store.owner_alive(owner) for owner in {r.owner for r in orphans}}
        with_faults = {lease.execution_id for lease in await self.store.leases()}
        for record in orphans:
            if alive[record.owner] or record.execution_id in with_faults:
                continue  # still running elsewhere, or faults still to revert: a later round finishes it
            epoch = await self.store.take_over(record.execution_id, record.owner, self.owner)
            if epoch is None:
                continue  # another agent took it first
            log.warning("finishing an execution whose agent stopped", execution_id=record.execution_id,
                        owner=record.owner, status=record.status, result_state=record.result_state or "none")
            await self._publish_result(await self._orphan_result(record), self.owner, epoch)

    async def _orphan_result(self, record: ExecutionRecord) -> events_pb2.ScenarioResult:
        """The one result of a run whose agent stopped: the one it had stored, else REJECTED / ABORTED."""
        if record.result_state == "publishing":
            stored = await self.store.get_result(record.execution_id)
            if stored:
                return events_pb2.ScenarioResult.FromString(stored)
        result = events_pb2.ScenarioResult(
            execution_id=record.execution_id, request_id=record.request_id, scenario_name=record.scenario_name,
            status=S.EXECUTION_STATUS_ABORTED, requester=record.requester, labels=record.labels,
            reason=(f"aborted: the agent running it ({record.owner}) stopped; its faults were reverted "
                    f"by lease reconciliation ({self.owner})"),
        )
        if record.status == "REJECTED":
            result.status, result.reason = S.EXECUTION_STATUS_REJECTED, record.reason
        result.started_at.FromNanoseconds(int(record.started_at * 1e9))
        result.ended_at.GetCurrentTime()
        return result


def _unfinished(record: ExecutionRecord) -> bool:
    """A run whose one result is not out: running, accepted or rejected without a result yet, or
    stored but not yet known to be on Kafka."""
    if record.result_state == "publishing":
        return True
    if record.result_state == "published":
        return False
    return record.status in {"PENDING", "RUNNING"} or (record.status == "REJECTED" and not record.ended_at)
