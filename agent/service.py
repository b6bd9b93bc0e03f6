"""``coordinator serve``: the engine as a long-running service.

``Service`` puts an ``Engine`` (``agent.engine.engine``) behind its inputs and APIs, as parts
started as tasks and supervised: a part that fails because Kafka or Redis is unreachable is
restarted with back-off (``/api/v1/ready`` names it meanwhile); a part that fails for any other
reason stops the service, which then exits non-zero:

- ingress: a consumer group on the scenario-requests topic; each record goes to ``Engine.accept``
  (claimed with its execution record in one step, or rejected). Its offset is committed only
  after that; a batch that fails half way is read again from its first record.
- verdicts: reads the stream worker's verdicts and hands them to the engine's executions.
- control: cancel, halt-all and resume, from Redis pub/sub (the CLI and gRPC send them).
- heartbeat and reconciler: keep this agent's leases alive; revert anyone's orphaned faults and
  finish the runs of agents that stopped (``Engine.reconcile_once``).
- policy: the allow-list and concurrency limit, refreshed from the configuration service.
- platform: process_started / process_exited audit events for what the drivers see their platform
  do (``agent.platform``).
- HTTP: health, readiness, metrics; gRPC: the CoordinatorService API over the engine's commands,
  health, reflection (``agent.grpc_api``).

Stopping (SIGTERM) stops ingress first, gives running executions ``shutdown_drain`` seconds, then
aborts the rest: faults reverted, rollbacks run, ABORTED published. The steps after that are bounded
(``agent.stopping``): a part or client that does not end is named in the log and left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from agent import codec, failpoints, kafkaio, metrics
from agent._proto.coordinator.v1 import events_pb2
from agent.engine.engine import Engine
from agent.errors import CoordinatorError, DecodeError
from agent.grpc_api import GrpcServer
from agent.health import CheckResult
from agent.http import HttpServer
from agent.kafkaio import diagnose, topic_partitions
from agent.logs import get_logger
from agent.platform import PlatformWatch
from agent.registry import SelfRegistration
from agent.relay import Relay
from agent.schedules import Scheduler
from agent.settings import Settings
from agent.stopping import Stopping
from agent.store import TRANSIENT, RedisStore

log = get_logger("agent.service")
#: failures that mean a dependency is away for now: the part is restarted, the agent stays up
PART_TRANSIENT = (*TRANSIENT, KafkaError)
PART_SETTLE_S = 5.0


#: requests taken in one fetch
INGRESS_BATCH = 500
#: requests accepted concurrently. Accepting a whole burst at once made every run reach its fault at
#: the end of the burst (bench/engine_latency.py, 200 requests: p50 287 ms, against 180 ms ten at a time)
ACCEPT_TOGETHER = 10
#: seconds a registry refresh in flight may take at stop before it is cut short
REGISTRY_STOP_S = 5.0
#: seconds each client (consumer, servers, the engine's Kafka and Redis clients) has to close at stop
CLIENT_STOP_S = 15.0


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: the Redis store itself: the registry and control messages use its client beside the engine
        self.store = RedisStore(settings.redis_url.get_secret_value(), settings.redis_key_prefix, patient=True)
        self.engine = Engine(settings, patient=True, store=self.store)
        self.http = HttpServer(settings, self.health, self._html_report, runs=self.engine.history)
        self.grpc = GrpcServer(self.engine, settings, lambda: self.ready.is_set())
        host = settings.registry_host or (settings.grpc_host if settings.grpc_host not in ("0.0.0.0", "::")  # noqa: S104
                                          else socket.gethostname())
        self.registration = SelfRegistration(self.store.redis, settings.registry_name, host,
                                             settings.registry_ttl)
        #: parts failing now (name -> why), for readiness
        self.failing: dict[str, str] = {}
        #: what the service waits for before it serves (readiness says so)
        self.waiting = "starting"
        #: the process's exit status: 1 once a part failed for good
        self.exit_code = 0
        self.http_started = asyncio.Event()
        self.ready = asyncio.Event()
        #: the stop's steps, bounded (what had to be left behind is in ``stopping.left_behind``)
        self.stopping = Stopping()

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set. HTTP comes up first; the engine waits for its dependencies."""
        await self.http.start()
        await self.grpc.start()
        self.registration.ports = {"grpc": self.grpc.port, "http": self.http.port or 0}
        unregister = asyncio.Event()
        registration = asyncio.create_task(self.registration.keep_alive(unregister), name="registry")
        self.http_started.set()
        parts: list[asyncio.Task[Any]] = []
        consumer: AIOKafkaConsumer | None = None
        try:
            consumer = await self._start_when_possible(stop)
            if consumer is None:
                return
            parts = await self._serve(consumer, stop)
        finally:
            # each step bounded: a part or client that does not end is named and left behind
            stopping = self.stopping
            await stopping.cancel(parts)
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await stopping.within("ingress consumer", consumer.stop(), CLIENT_STOP_S)
            unregister.set()  # a refresh in flight finishes before the entry is removed
            with contextlib.suppress(Exception):
                await stopping.within("registry refresh", registration, REGISTRY_STOP_S)
            await stopping.within("registry entry", self.registration.remove(), CLIENT_STOP_S)
            await stopping.within("grpc server", self.grpc.stop(), CLIENT_STOP_S)
            await stopping.within("http server", self.http.aclose(), CLIENT_STOP_S)
            await stopping.within("engine clients", self.engine.aclose(), CLIENT_STOP_S)
            log.info("agent stopped", owner=self.engine.owner,
                     **({"left_behind": stopping.left_behind} if stopping.left_behind else {}))

    async def _serve(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> list[asyncio.Task[Any]]:
        engine = self.engine
        # verdicts are read from the end of the topic: find that end before the first request is
        # taken, or a fast verdict can land before it and be missed
        positioned = asyncio.Event()
        listener = asyncio.create_task(self._verdict_listener(positioned), name="verdicts")
        waits = [asyncio.create_task(positioned.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait([*waits, listener], return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        if not positioned.is_set():
            if listener.done() and not listener.cancelled() and listener.exception():
                self.exit_code = 1
                log.error("agent part failed", part="verdicts", error=repr(listener.exception()))
            return [listener]
        await engine.policy.refresh()  # the policy before the first request
        ingress = self._part("ingress", lambda: self._ingress(consumer))
        parts = [
            ingress, listener,
            self._part("control", self._control),
            self._part("heartbeat", engine.faults.heartbeat_forever),
            self._part("reconciler", self._reconcile_forever),
            self._part("policy", lambda: engine.policy.refresh_forever(engine.slots.changed)),
            *(self._part(f"relay {r.source}", Relay(self.settings, r.source, r.topic).run)
              for r in self.settings.relays),
        ]
        if self.settings.schedules_enabled:
            parts.append(self._part("scheduler", Scheduler(self.settings, engine).run))
        if self.settings.platform_events:
            watch = PlatformWatch(engine.drivers, engine.publisher, engine.faults, self.settings.platform_poll_interval)
            parts.append(self._part("platform", watch.run))
        stopper = asyncio.create_task(stop.wait(), name="stop")
        self.ready.set()
        self.registration.status = "ready"
        with contextlib.suppress(Exception):
            await self.registration.write()
        log.info("agent serving", owner=engine.owner, http_port=self.http.port,
                 requests=self.settings.topics.scenario_requests)
        done, _ = await asyncio.wait([*parts, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception():
                self.exit_code = 1
                log.error("agent part failed for good; stopping", part=task.get_name(),
                          error=repr(task.exception()))
        await self.grpc.begin_shutdown()  # health says NOT_SERVING from now on
        await self.stopping.cancel([ingress])  # stop taking requests first
        await engine.finish_runs(drain=self.settings.shutdown_drain)
        return parts

    async def _html_report(self, execution_id: str) -> str | None:
        """The live page's link: an ended execution's single-file HTML report."""
        from agent import reports

        try:
            found = await self.engine.get(execution_id)
        except CoordinatorError:
            return None
        return reports.render(found.result, "html", self.settings.tracing.link) if found.HasField("result") else None

    async def _start_when_possible(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """Connect to Kafka and Redis, retrying with back-off; None when stopped first."""
        delay = 0.5
        said = ""
        while not stop.is_set():
            try:
                await self.engine.start()
                # orphaned faults are reverted by the reconciler part: one that cannot be reverted
                # must not keep the agent from serving
                consumer = await self._consumer()
                if said:
                    log.info("dependencies reachable; starting")
                return consumer
            except Exception as exc:  # noqa: BLE001 - any dependency not there yet: wait and retry
                why = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, KafkaError):  # "Unable to bootstrap" says nothing: ask the broker why
                    why = await diagnose(self.settings.kafka_bootstrap_servers, self.settings.kafka) or why
                self.waiting = f"waiting for Kafka and Redis: {why}"
                if why != said:  # once per reason, not once per retry (readiness says it meanwhile)
                    log.warning("waiting for dependencies", error=why, retry_in=delay)
                    said = why
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
            except asyncio.CancelledError:
                await failpoints.point("part-stopping")
                raise
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
        """The service's own readiness checks, beside Kafka's and Redis's (``/api/v1/ready``)."""
        checks = []
        if not self.ready.is_set():
            checks.append(CheckResult("engine", False, self.waiting, 0.0))
        elif self.failing:
            checks.append(CheckResult("engine", False, "; ".join(f"{p}: {w}" for p, w in self.failing.items()), 0.0))
        else:
            checks.append(CheckResult("engine", True, f"{len(self.engine.running)} execution(s) running", 0.0))
        stuck = self.engine.faults.stuck
        detail = "; ".join(f"{s.lease.fault} on {s.lease.target} ({cid}): {s.error}, {s.attempts} attempt(s)"
                           for cid, s in stuck.items()) or "none"
        # an unrevertable fault is reported, but does not make the agent unready: it keeps retrying it
        checks.append(CheckResult("unrevertable_faults", True, detail, 0.0))
        return checks

    # -- inputs ------------------------------------------------------------------------------------
    async def _consumer(self) -> AIOKafkaConsumer:
        consumer = kafkaio.consumer(
            self.settings, self.settings.topics.scenario_requests, purpose="ingress",
            group_id=self.settings.consumer_group, auto_offset_reset="earliest",
            # a requests topic created after the agent started is found within seconds, not minutes
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        return consumer

    async def _ingress(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=INGRESS_BATCH)
            pending = dict(batch)
            try:
                if batch:
                    await failpoints.point("after-consume")
                for tp, records in batch.items():
                    # accepted a few at a time, in order (the Redis claim keeps a duplicate out even
                    # within one group): the runs of a burst start in waves, so the first ones reach
                    # their faults first instead of all of them together at the end
                    for i in range(0, len(records), ACCEPT_TOGETHER):
                        await asyncio.gather(*(self.engine.accept(r) for r in records[i:i + ACCEPT_TOGETHER]))
                    await consumer.commit({tp: records[-1].offset + 1})
                    pending.pop(tp)
            except BaseException:
                # read what was not committed again when the part restarts: nothing is skipped
                for tp, records in pending.items():
                    with contextlib.suppress(Exception):
                        consumer.seek(TopicPartition(tp.topic, tp.partition), records[0].offset)
                raise

    async def _verdict_listener(self, positioned: asyncio.Event) -> None:
        consumer = kafkaio.consumer(self.settings, purpose="verdicts")
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
                            await self.engine.publisher.dead_letter(record, exc.reason, str(exc))
                            continue
                        self.engine.verdicts.deliver(verdict)
        finally:
            await consumer.stop()

    async def _control(self) -> None:
        async for message in self.store.control_messages():
            await self.engine.on_control(message)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            try:
                await self.engine.reconcile_once()
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("reconciliation failed", error=str(exc))
