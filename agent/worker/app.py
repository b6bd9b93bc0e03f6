"""``coordinator worker``: the stream worker, a faust-streaming app.

Flow (all topics and tables partitioned alike; Kafka and faust tables are the distributed engine):

1. ``route_chaos`` reads chaos events. Each INJECTED event's expectations become *watches*
   (``agent.expectations``), sent to the internal ``{app}-inbox`` topic keyed by a routing key:
   ``svc:{service}`` when the expectation names a service (or, for target-window attribution, the
   fault's target service), else ``type:{event_type}``.
2. ``AuditIntake`` reads audit events a whole fetch at a time (an aiokafka consumer in the group
   ``{app}-intake``: faust's per-record path is the bottleneck, see the class) and routes each under
   ``svc:{service_name}`` and ``type:{event_type}``, one inbox message per inbox partition per fetch
   (the rows by routing key, each key in the partition the producer's partitioner gives it, where
   its watches are); offsets are committed once the inbox has the rows. So a watch and every audit event that can
   concern it meet in one partition.
3. ``judge_inbox`` reads the inbox (messages typed by ``agent.worker.judge``'s codec) and hands each to
   a plain ``Judge`` (``agent.worker.judge``), which keeps the watches in the ``watches`` table
   (routing key -> watches), backed by a changelog topic: a restarted or replacement worker recovers them. Audit
   events and watches travel different paths, so an event can arrive first: the latest
   observations per routing key are kept in memory and replayed to a watch when it arrives.
   Observations update watches; a decided watch publishes its verdict to the verdicts topic and
   leaves the table.
4. A timer sends a tick to every inbox partition every ``worker_tick_interval`` so deadlines fire
   when no event arrives; ticks carry the sender's audit watermark (the latest audit event time it
   has seen), which tells a live audit trail from a silent one.
5. A watchdog seeks faust's table recovery back to the first changelog record it has not applied
   when, after a rebalance, it stops applying any (``agent.worker.recovery``): a stalled recovery
   would otherwise stop the judge for good.

Delivery: at least once. A verdict is published before its watch leaves the table, so a crash in
between can publish it twice; the engine keeps the first per (correlation id, expectation).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiokafka
import faust
import mode
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent import codec, failpoints, kafkaio, metrics
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import STAGES_HEADER
from agent.engine.publisher import dead_letter_parts
from agent.errors import ConfigError, DecodeError
from agent.expectations import Verdict, Watch
from agent.kafkaio import FETCH_MAX_WAIT_MS, ssl_context
from agent.logs import get_logger
from agent.settings import KafkaSecurity, Settings
from agent.vocabulary import verdict_value
from agent.worker import judge as inbox_codec
from agent.worker import otlp
from agent.worker.judge import (
    Judge,
    Row,
    RowsMessage,
    TickMessage,
    WatchMessage,
    routing_key,
    row_from,
    row_keys,
    watches_from,
)
from agent.worker.recovery import CHECK_INTERVAL_SECONDS, RecoveryWatch, reread_from

log = get_logger("agent.worker")
S = events_pb2


def verdict_message(watch: Watch, verdict: Verdict) -> events_pb2.ExpectationVerdict:
    message = events_pb2.ExpectationVerdict(
        execution_id=watch.execution_id, correlation_id=watch.correlation_id, expectation_name=watch.name,
        status=verdict_value(verdict.status), reason=verdict.reason, expected=verdict.expected,  # type: ignore[arg-type]
        observed=verdict.observed, count=verdict.count,
    )
    message.injected_at.FromNanoseconds(int(watch.injected_at * 1e9))
    message.deadline.FromNanoseconds(int(watch.deadline * 1e9))
    if verdict.first_seen_at:
        message.first_seen_at.FromNanoseconds(int(verdict.first_seen_at * 1e9))
    if verdict.time_to_recover is not None:
        message.time_to_recover.FromNanoseconds(int(verdict.time_to_recover * 1e9))
    return message


def internal_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The worker's own topics and their configs; created before faust starts (see ensure_topics)."""
    app_id = settings.worker_app_id
    return {f"{app_id}-inbox": {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)},
            f"{app_id}-watches-changelog": {"cleanup.policy": "compact"}}


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the worker's internal topics when missing (through ``topics.apply``). A consumer
    subscribed to a topic that does not exist yet only sees it at its next metadata refresh, which
    left audit events unread for a minute."""
    from agent import topics

    wanted = {**internal_topics(settings), **{name: {"cleanup.policy": "delete"} for name in settings.otlp.topics()}}
    specs = [topics.TopicSpec(channel=name, name=name, partitions=settings.worker_partitions,
                              replicas=settings.topic_replication_factor, config=config)
             for name, config in wanted.items()]
    return [o.topic for o in await topics.apply(settings, specs) if o.action == "created"]


def intake_group(settings: Settings) -> str:
    """The consumer group of the audit intake (the faust app's own group is ``worker_app_id``)."""
    return f"{settings.worker_app_id}-intake"


#: the faust-streaming and aiokafka releases whose internals this module relies on (table recovery
#: offsets, ``seek_wait``, the consumer generation): checked when the app is made
TESTED = {"faust": ((0, 15, 3), (0, 16)), "aiokafka": ((0, 14), (0, 15))}


def check_versions(found: dict[str, str] | None = None) -> None:
    """Refuse to start on a faust or aiokafka release outside ``TESTED`` (``ConfigError`` says which)."""
    found = found or {"faust": faust.__version__, "aiokafka": aiokafka.__version__}
    for name, (low, high) in TESTED.items():
        version = tuple(int(p) for p in re.findall(r"\d+", found[name])[:3])
        if not low <= version < high:
            raise ConfigError(f"the worker needs {name} >= {'.'.join(map(str, low))}, < "
                              f"{'.'.join(map(str, high))} (its internals are used here); found {found[name]}")


def broker_credentials(security: KafkaSecurity) -> faust.auth.Credentials | None:
    """The security settings as faust takes them (the same TLS context as every other client)."""
    if security.sasl:
        return faust.SASLCredentials(
            username=security.sasl_username, password=security.sasl_password.get_secret_value(),
            ssl_context=ssl_context(security) if security.tls else None, mechanism=security.sasl_mechanism)
    if security.tls:
        return faust.SSLCredentials(ssl_context(security))
    return None


def create_app(settings: Settings) -> faust.App:
    """The worker's faust app (``WorkerApp(settings).app``)."""
    return WorkerApp(settings).app


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.worker_app_id,
        broker=";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap_servers.split(",")),
        store="memory://",
        datadir=settings.worker_data_dir or str(Path(tempfile.gettempdir()) / f"{settings.worker_app_id}-data"),
        topic_partitions=settings.worker_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        table_standby_replicas=0,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.worker_session_timeout,
        broker_heartbeat_interval=max(1.0, settings.worker_session_timeout / 5),
        producer_linger=0.002,
        key_serializer="raw",
        value_serializer="raw",
        broker_credentials=broker_credentials(settings.kafka),
    )


class WorkerApp:
    """The stream worker: its topics, the ``watches`` table and the ``Judge``, and what each input does
    (chaos events to watches, audit fetches to rows, inbox messages to the judge, ticks, the recovery
    watchdog). ``_wire`` is the one place that hands these to faust; faust's worker runs the app's
    lifecycle (start, rebalances, stop with its drain). Every faust and aiokafka internal the worker
    touches is in this module."""

    def __init__(self, settings: Settings) -> None:
        check_versions()
        self.settings = settings
        self.partitions = settings.worker_partitions
        self.app = _faust_app(settings)
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                               "value_serializer": "raw"}
        self.chaos_topic = self.app.topic(settings.topics.chaos_events, **raw)
        self.inbox = self.app.topic(f"{settings.worker_app_id}-inbox", partitions=self.partitions, internal=True,
                                    **raw)
        self.verdicts = self.app.topic(settings.topics.verdicts, **raw)
        self.dead_letters = self.app.topic(settings.topics.dead_letters, **raw)
        # plain JSON both ways: with value_type=dict, recovery calls dict.from_data and fails
        self.table = self.app.Table("watches", default=dict, partitions=self.partitions,
                                    schema=faust.Schema(key_serializer="json", value_serializer="json"))
        self.partitioner = DefaultPartitioner()
        self.source = f"/coordinator/{settings.worker_app_id}/{uuid.uuid4().hex[:6]}"
        self.judge = Judge(self.table, self.publish, settings.worker_grace, settings.late_evidence,
                           self.publish_late)
        self.recovery = RecoveryWatch()
        #: OTLP log records without an event name, skipped (not audit events)
        self.otlp_skipped = otlp.Skipped()
        self._wire()

    def _wire(self) -> None:
        """The faust adapter: agents on the chaos topic and the inbox, the audit intake, two timers."""
        app = self.app
        app.agent(self.chaos_topic, name=f"{self.settings.worker_app_id}.route_chaos")(self.route_chaos)
        app.agent(self.inbox, name=f"{self.settings.worker_app_id}.judge")(self.judge_inbox)
        app.service(type("AuditIntake", (AuditIntake,), {"worker": self}))
        app.timer(interval=self.settings.worker_tick_interval)(self.tick)
        app.timer(interval=CHECK_INTERVAL_SECONDS)(self.recovery_watchdog)
        if self.settings.worker_metrics_port is not None:
            app.service(type("MetricsEndpoint", (MetricsEndpoint,), {"settings": self.settings}))

    def partition_of(self, key: str) -> int:
        return _partition(self.partitioner, key, self.partitions)

    # -- out -----------------------------------------------------------------------------------------
    async def dead_letter(self, record: Any, reason: str, error: str) -> None:
        """An input record the worker cannot use: to the dead-letter topic with why (truncated when
        too large); a failure to do so is logged and counted, never fatal."""
        value, key, headers = dead_letter_parts(record, reason, error, self.settings.dead_letter_max_bytes)
        metrics.WORKER_DEAD_LETTERS.labels(reason=reason).inc()
        try:
            await self.dead_letters.send(key=key, value=value, headers=headers)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the worker
            metrics.DEAD_LETTER_FAILURES.inc()
            log.error("record could not be dead-lettered; skipped", topic=record.topic, offset=record.offset,
                      error=f"{type(exc).__name__}: {exc}")

    async def publish(self, watch: Watch, verdict: Verdict) -> None:
        message = verdict_message(watch, verdict)
        out = codec.encode_event(message, key=watch.execution_id, source=self.source,
                                 content_type=self.settings.content_type, correlation_id=watch.correlation_id)
        headers = out.headers
        stages = _STAGES.get()
        metrics.WORKER_VERDICTS.labels(status=verdict.status).inc()
        if stages is not None:
            metrics.WORKER_VERDICT_SECONDS.observe(max(0.0, time.time() - stages[0]))
            times = zip(("fetched", "routed", "judged", "published"), (*stages, time.time()), strict=True)
            headers = [*headers, (STAGES_HEADER, ",".join(f"{k}={v:.6f}" for k, v in times).encode())]
        await self.verdicts.send(key=out.key, value=out.value, headers=headers)
        log.info("verdict", execution_id=watch.execution_id, correlation_id=watch.correlation_id,
                 expectation=watch.name, status=verdict.status, reason=verdict.reason)

    async def publish_late(self, watch: Watch, at: float) -> None:
        """The evidence a decided watch missed, as a second message about it (the verdict stands)."""
        message = events_pb2.ExpectationVerdict(
            execution_id=watch.execution_id, correlation_id=watch.correlation_id, expectation_name=watch.name,
            status=verdict_value(watch.late_status), reason=watch.late_message(at))  # type: ignore[arg-type]
        message.late_evidence_at.FromNanoseconds(int(at * 1e9))
        message.deadline.FromNanoseconds(int(watch.deadline * 1e9))
        out = codec.encode_event(message, key=watch.execution_id, source=self.source,
                                 content_type=self.settings.content_type, correlation_id=watch.correlation_id)
        await self.verdicts.send(key=out.key, value=out.value, headers=out.headers)
        log.info("late evidence", execution_id=watch.execution_id, expectation=watch.name, reason=message.reason)

    # -- in ------------------------------------------------------------------------------------------
    async def route_chaos(self, stream: faust.StreamT[Any]) -> None:
        """Each INJECTED event's expectations, as watches, to the inbox partition of their routing key."""
        async for event in stream.events():
            message = event.message
            try:
                chaos = codec.decode_event(message.value, message.headers, events_pb2.ChaosEvent)
            except DecodeError as exc:
                log.warning("undecodable chaos event dead-lettered", offset=message.offset, error=str(exc))
                await self.dead_letter(message, exc.reason, str(exc))
                continue
            if chaos.type != S.CHAOS_EVENT_TYPE_INJECTED:
                continue
            for watch in watches_from(chaos):
                await self.inbox.send(key=routing_key(watch).encode(),
                                      value=inbox_codec.encode(WatchMessage(watch)))

    async def route(self, fetched: dict[Any, list[Any]], fetched_at: float) -> None:
        """A fetch of audit events, as rows grouped by routing key: one inbox message per partition."""
        by_key: dict[str, list[Row]] = {}
        for records in fetched.values():
            for record in records:
                try:
                    rows = self.rows_of(record)
                except DecodeError as exc:
                    log.warning("undecodable audit event dead-lettered", topic=record.topic,
                                partition=record.partition, offset=record.offset, error=str(exc))
                    await self.dead_letter(record, exc.reason, str(exc))
                    continue
                for row in rows:
                    self.judge.saw(row.at)
                    for key in row_keys(row):
                        by_key.setdefault(key, []).append(row)
        by_partition: dict[int, dict[str, list[Row]]] = {}
        for key, rows in by_key.items():
            by_partition.setdefault(self.partition_of(key), {})[key] = rows
        routed_at = time.time()
        # in order per partition; a fetch too large for one record (OTLP batches hold many rows) in several
        sent = [await self.inbox.send(key=b"rows", partition=partition, value=value)
                for partition, keyed in by_partition.items()
                for value in inbox_codec.encode_rows(RowsMessage(keyed, fetched_at, routed_at))]
        await asyncio.gather(*sent)

    def rows_of(self, record: Any) -> list[Row]:
        """The audit rows of one record: one from the audit topic, any number from an OTLP topic."""
        signal = self.settings.otlp.signal_of(record.topic)
        if signal is None:
            row = row_from(record.value, record.headers, record.timestamp)
            metrics.WORKER_EVENTS.labels(source="audit").inc()
            return [row]
        before = self.otlp_skipped.count
        rows = otlp.rows_from(record.value, signal, self.settings.otlp, self.otlp_skipped,
                              ignore=frozenset({self.settings.tracing.service_name}))
        metrics.WORKER_EVENTS.labels(source=f"otlp_{signal}").inc(len(rows))
        if before == 0 and self.otlp_skipped.count:  # once: most services log lines that are not events
            log.info("OTLP log records without an event name are skipped (not audit events)", topic=record.topic,
                     event_attribute=self.settings.otlp.event_attribute)
        return rows

    async def judge_inbox(self, stream: faust.StreamT[Any]) -> None:
        """Watches, rows and ticks from the inbox, to the judge."""
        async for event in stream.events():
            message = event.message
            try:
                body = inbox_codec.decode(message.value)
            except DecodeError as exc:
                log.warning("undecodable inbox message dead-lettered", offset=message.offset, error=str(exc))
                await self.dead_letter(message, exc.reason, str(exc))
                continue
            now = time.time()
            if isinstance(body, TickMessage):
                keys = [k for k in list(self.table.keys()) if self.partition_of(k) == message.partition]
                await self.judge.on_tick(keys, body.watermark, now)
            elif isinstance(body, WatchMessage):
                await self.judge.on_watch(message.key.decode(), body.watch, now)
            else:
                stages = _STAGES.set((body.fetched_at, body.routed_at, now) if body.fetched_at else None)
                try:
                    for key, rows in body.by_key.items():
                        await self.judge.on_rows(key or message.key.decode(), rows, now)
                finally:
                    _STAGES.reset(stages)

    # -- timers --------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """A tick to every inbox partition (deadlines fire with no event), with the audit watermark."""
        _shorten_fetch_wait(self.app)  # each tick: faust makes a new consumer after some failures
        body = inbox_codec.encode(TickMessage(self.judge.watermark))
        for partition in range(self.partitions):
            await self.inbox.send(key=b"tick", value=body, partition=partition)
        if self.settings.worker_alive_file:  # alive and ticking: what a container healthcheck reads
            await asyncio.to_thread(Path(self.settings.worker_alive_file).touch)

    async def recovery_watchdog(self) -> None:
        """Table recovery that applies nothing for a while reads its changelog again from where it is."""
        table_recovery = _table_recovery(self.app)
        running = table_recovery.in_recovery
        progress = _recovery_progress(self.app) if running else None
        if not self.recovery.observe(running, progress, time.monotonic()):
            return
        remaining = {tp: left for tp, left in table_recovery.active_remaining().items() if left > 0}
        if not remaining:
            return
        stalled = {tp: reread_from(table_recovery.active_offsets[tp]) for tp in remaining}
        log.warning("table recovery applied no changelog record for a while; reading its changelog again",
                    stalled_seconds=self.recovery.stall_after, times=self.recovery.stalls,
                    partitions={f"{tp.topic}[{tp.partition}]": offset for tp, offset in stalled.items()},
                    remaining=sum(remaining.values()))
        await self.app.consumer.seek_wait(stalled)


class AuditIntake(mode.Service):
    """Audit events in, routed rows out: a plain aiokafka consumer in its own group (``{app}-intake``),
    inside the faust app. Faust's floor is a few thousand records/s per process here
    (bench/worker_throughput.py, ``faust_noop_agent_events_per_s``), whatever the agent does; this path
    takes whole fetches instead of one record at a time.

    Each fetch (up to AUDIT_BATCH records, no waiting when records are there) is decoded, its rows
    grouped per routing key and sent to the inbox as one message per key; its offsets are committed
    only once the inbox has them (at least once: a crash or a rebalance in between routes them again).
    A second worker joins the group and takes half the partitions; a dead one's partitions go to the
    others from its last commit. faust makes it (``app.service``) from a subclass naming its ``worker``."""

    worker: WorkerApp
    consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        settings = self.worker.settings
        session_ms = int(settings.worker_session_timeout * 1000)
        self.consumer = kafkaio.consumer(
            settings, settings.topics.audit_events, *settings.otlp.topics(), purpose="intake",
            group_id=intake_group(settings), client_id=f"{settings.worker_app_id}-intake",
            auto_offset_reset="earliest", max_poll_records=AUDIT_BATCH,
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(1000, session_ms // 5))
        await self.consumer.start()

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @mode.Service.task
    async def _route(self) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        while not self.should_stop:
            fetched = await consumer.getmany(timeout_ms=AUDIT_FETCH_WAIT_MS, max_records=AUDIT_BATCH)
            if not fetched:
                continue
            try:
                await failpoints.point("worker-route")
                await self.worker.route(fetched, time.time())
            except Exception as exc:
                # nothing of this fetch is committed: a fresh worker routes it again. The app stops on
                # the crash, but its stop can wait on Kafka for ever: the process exits soon regardless,
                # with status 1, for its supervisor to start it again
                log.error("audit intake failed; the worker exits", error=f"{type(exc).__name__}: {exc}",
                          exit_in_seconds=INTAKE_EXIT_GRACE_S)
                exit_soon(1, INTAKE_EXIT_GRACE_S)
                raise
            try:
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})
            except KafkaError as exc:  # a rebalance in between: the new owner routes them again
                log.warning("audit offsets not committed; they will be routed again", error=str(exc))


class MetricsEndpoint(mode.Service):
    """GET /metrics (Prometheus text) on ``worker_metrics_host:worker_metrics_port``: what the worker
    judged, dead-lettered and decided, and how long a verdict took inside it."""

    settings: Settings
    runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        async def serve(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(metrics.WORKER_REGISTRY),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        application = web.Application()
        application.router.add_get("/metrics", serve)
        self.runner = web.AppRunner(application, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.settings.worker_metrics_host, self.settings.worker_metrics_port).start()
        log.info("worker metrics served", url=f"http://{self.settings.worker_metrics_host}:"
                                              f"{self.settings.worker_metrics_port}/metrics")

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


#: seconds a worker whose intake failed has to stop before it exits anyway
INTAKE_EXIT_GRACE_S = 3.0


def exit_soon(status: int, grace: float) -> None:
    """End the process with ``status`` in ``grace`` seconds, whatever its stop is waiting for."""
    def now() -> None:
        print(f"worker exiting with status {status}", file=sys.stderr, flush=True)
        os._exit(status)

    timer = threading.Timer(grace, now)
    timer.daemon = True
    timer.start()


def _shorten_fetch_wait(app: faust.App) -> None:
    """Let faust's consumer (inbox, chaos events, changelog) wait at most FETCH_MAX_WAIT_MS at the
    broker; faust asks for 1,500 ms, fixed in its driver."""
    thread = getattr(app.consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    if fetcher is not None and getattr(fetcher, "_fetch_max_wait_ms", None) != FETCH_MAX_WAIT_MS:
        fetcher._fetch_max_wait_ms = FETCH_MAX_WAIT_MS


def _table_recovery(app: faust.App) -> Any:
    """faust's table recovery (not in its typed interface): ``in_recovery``, ``active_offsets``,
    ``active_remaining()``; checked against the releases in ``TESTED``."""
    return app.tables.recovery  # type: ignore[attr-defined]


def _recovery_progress(app: faust.App) -> tuple[Any, ...]:
    """What changes whenever table recovery makes progress: the rebalance generation and the changelog
    offsets applied so far."""
    applied = _table_recovery(app).active_offsets
    return (app.consumer_generation_id,
            tuple(sorted((tp.topic, tp.partition, offset) for tp, offset in applied.items() if offset is not None)))


#: the stage times of the rows being judged (fetched, routed, judged), for the verdicts they decide
_STAGES: contextvars.ContextVar[tuple[float, float, float] | None] = contextvars.ContextVar("stages", default=None)

AUDIT_BATCH = 5000
AUDIT_FETCH_WAIT_MS = 50


def _partition(partitioner: DefaultPartitioner, key: str, partitions: int) -> int:
    """The inbox partition of a routing key (the producer's default murmur2 partitioner)."""
    return int(partitioner(key.encode(), list(range(partitions)), list(range(partitions))))
