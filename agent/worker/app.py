"""``coordinator worker``: the stream worker, a faust-streaming app.

Flow (all topics and tables partitioned alike; Kafka and faust tables are the distributed engine):

1. ``route_chaos`` reads chaos events. Each INJECTED event's expectations become *watches*
   (``agent.worker.watch``), sent to the internal ``{app}-inbox`` topic keyed by a routing key:
   ``svc:{service}`` when the expectation names a service (or, for target-window attribution, the
   fault's target service), else ``type:{event_type}``.
2. ``AuditIntake`` reads audit events a whole fetch at a time (an aiokafka consumer in the group
   ``{app}-intake``: faust's per-record path is the bottleneck, see the class) and routes each under
   ``svc:{service_name}`` and ``type:{event_type}``, one inbox message per routing key per fetch;
   offsets are committed once the inbox has the rows. So a watch and every audit event that can
   concern it meet in one partition.
3. ``judge`` reads the inbox and keeps the watches in the ``watches`` table (routing key ->
   watches), backed by a changelog topic: a restarted or replacement worker recovers them. Audit
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
import json
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust
import mode
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from agent import codec, metrics
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import CORRELATION_HEADER
from agent.engine.publisher import dead_letter_parts
from agent.errors import DecodeError
from agent.logs import get_logger
from agent.settings import Settings
from agent.vocabulary import ATTRIBUTION_NAMES, EXPECTATION_KIND_NAMES, verdict_value
from agent.worker.recovery import CHECK_INTERVAL_SECONDS, RecoveryWatch, reread_from
from agent.worker.watch import AuditObservation, Verdict, Watch

log = get_logger("agent.worker")
S = events_pb2


def watches_from(event: events_pb2.ChaosEvent) -> list[Watch]:
    injected = event.injected_at.ToNanoseconds() / 1e9 or time.time()
    out = []
    for expectation in event.expectations:
        kind = EXPECTATION_KIND_NAMES.get(expectation.kind)
        if kind is None:
            continue
        span = expectation.max_time_to_recover if kind == "time_to_recover" else expectation.within
        out.append(Watch(
            execution_id=event.execution_id, correlation_id=event.correlation_id, name=expectation.name, kind=kind,
            injected_at=injected, deadline=injected + span.ToNanoseconds() / 1e9, target_service=event.service,
            event_type=expectation.event_type, service=expectation.service, match=dict(expectation.match),
            attribution=ATTRIBUTION_NAMES[expectation.attribution],
            min_count=expectation.min_count if kind == "count" else None,
            max_count=expectation.max_count if kind == "count" else None,
            sequence=list(expectation.sequence),
        ))
    return out


def routing_key(watch: Watch) -> str:
    if watch.service:
        return f"svc:{watch.service}"
    if watch.attribution == "target-window" and watch.target_service:
        return f"svc:{watch.target_service}"
    return f"type:{watch.event_type}"


def row_from(value: bytes | None, headers: Iterable[tuple[str, bytes]] | None,
             record_timestamp_ms: float | None) -> list[Any]:
    """An audit event as it travels to the judge: ``[service, event_type, time, correlation id,
    metadata, identity]``; the correlation id from the payload, else the header; the time from the
    event, else the record; the identity ``source#id`` from the CloudEvents ``ce_source`` and
    ``ce_id`` headers, else the payload's ``service_name`` and ``id`` ("" when there is no id)."""
    meta = codec.headers_to_dict(headers)  # read once: the hot path of the worker
    event = codec.decode_event(value, headers, events_pb2.AuditEvent, meta)
    correlation_id = event.correlation_id or meta.get(CORRELATION_HEADER, "")
    event_id = meta.get("ce_id") or event.id
    identity = f"{meta.get('ce_source') or event.service_name}#{event_id}" if event_id else ""
    if event.HasField("timestamp"):
        at = event.timestamp.ToNanoseconds() / 1e9
    else:
        at = (record_timestamp_ms or time.time() * 1000) / 1000.0
    return [event.service_name, event.event_type, at, correlation_id, dict(event.metadata), identity]


def observation(row: list[Any]) -> AuditObservation:
    return AuditObservation(service=row[0], event_type=row[1], timestamp=float(row[2]), correlation_id=row[3] or "",
                            metadata=row[4] or {}, event_id=row[5] if len(row) > 5 else "")


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

    specs = [topics.TopicSpec(channel=name, name=name, partitions=settings.worker_partitions,
                              replicas=settings.topic_replication_factor, config=config)
             for name, config in internal_topics(settings).items()]
    return [o.topic for o in await topics.apply(settings, specs) if o.action == "created"]


def intake_group(settings: Settings) -> str:
    """The consumer group of the audit intake (the faust app's own group is ``worker_app_id``)."""
    return f"{settings.worker_app_id}-intake"


def create_app(settings: Settings) -> faust.App:
    n = settings.worker_partitions
    app = faust.App(
        settings.worker_app_id,
        broker=";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap_servers.split(",")),
        store="memory://",
        datadir=settings.worker_data_dir or str(Path(tempfile.gettempdir()) / f"{settings.worker_app_id}-data"),
        topic_partitions=n,
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
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    chaos_topic = app.topic(settings.topics.chaos_events, **raw)
    inbox = app.topic(f"{settings.worker_app_id}-inbox", partitions=n, internal=True, **raw)
    verdicts = app.topic(settings.topics.verdicts, **raw)
    dead_letters = app.topic(settings.topics.dead_letters, **raw)

    async def dead_letter(record: Any, reason: str, error: str) -> None:
        """An input record the worker cannot use: to the dead-letter topic with why (truncated when
        too large); a failure to do so is logged and counted, never fatal."""
        value, key, headers = dead_letter_parts(record, reason, error, settings.dead_letter_max_bytes)
        try:
            await dead_letters.send(key=key, value=value, headers=headers)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the worker
            metrics.DEAD_LETTER_FAILURES.inc()
            log.error("record could not be dead-lettered; skipped", topic=record.topic, offset=record.offset,
                      error=f"{type(exc).__name__}: {exc}")
    table = app.Table("watches", default=dict, partitions=n,
                      # plain JSON both ways: with value_type=dict, recovery calls dict.from_data and fails
                      schema=faust.Schema(key_serializer="json", value_serializer="json"))
    partitioner = DefaultPartitioner()
    state = {"watermark": 0.0}
    # audit events can reach the judge before the watch they concern (they travel another path):
    # recent observations per routing key are kept and replayed to a watch when it arrives
    recent: dict[str, deque[list[Any]]] = {}
    grace = settings.worker_grace
    source = f"/coordinator/{settings.worker_app_id}/{uuid.uuid4().hex[:6]}"

    async def publish(watch: Watch, verdict: Verdict) -> None:
        message = verdict_message(watch, verdict)
        out = codec.encode_event(message, key=watch.execution_id, source=source,
                                 content_type=settings.content_type, correlation_id=watch.correlation_id)
        await verdicts.send(key=out.key, value=out.value, headers=out.headers)
        log.info("verdict", execution_id=watch.execution_id, correlation_id=watch.correlation_id,
                 expectation=watch.name, status=verdict.status, reason=verdict.reason)

    @app.agent(chaos_topic)
    async def route_chaos(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                chaos = codec.decode_event(message.value, message.headers, events_pb2.ChaosEvent)
            except DecodeError as exc:
                log.warning("undecodable chaos event dead-lettered", offset=message.offset, error=str(exc))
                await dead_letter(message, exc.reason, str(exc))
                continue
            if chaos.type != S.CHAOS_EVENT_TYPE_INJECTED:
                continue
            for watch in watches_from(chaos):
                await inbox.send(key=routing_key(watch).encode(),
                                 value=json.dumps({"t": "watch", "w": watch.to_dict()}).encode())

    @app.service
    class AuditIntake(mode.Service):
        """Audit events in, routed rows out: a plain aiokafka consumer in its own group
        (``{app}-intake``), inside the faust app. Faust's floor is a few thousand records/s per process
        here (bench/worker_throughput.py, ``faust_noop_agent_events_per_s``), whatever the agent does;
        this path takes whole fetches instead of one record at a time.

        Each fetch (up to AUDIT_BATCH records, no waiting when records are there) is decoded, its rows
        grouped per routing key and sent to the inbox as one message per key; its offsets are committed
        only once the inbox has them (at least once: a crash or a rebalance in between routes them
        again). A second worker joins the group and takes half the partitions; a dead one's partitions
        go to the others from its last commit."""

        consumer: AIOKafkaConsumer | None = None

        async def on_start(self) -> None:
            session_ms = int(settings.worker_session_timeout * 1000)
            self.consumer = AIOKafkaConsumer(
                settings.topics.audit_events, bootstrap_servers=settings.kafka_bootstrap_servers,
                group_id=intake_group(settings), client_id=f"{settings.worker_app_id}-intake",
                enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=AUDIT_BATCH,
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
                await route(fetched)
                try:
                    await consumer.commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})
                except KafkaError as exc:  # a rebalance in between: the new owner routes them again
                    log.warning("audit offsets not committed; they will be routed again", error=str(exc))

    async def route(fetched: dict[Any, list[Any]]) -> None:
        by_key: dict[str, list[list[Any]]] = {}
        for records in fetched.values():
            for record in records:
                try:
                    row = row_from(record.value, record.headers, record.timestamp)
                except DecodeError as exc:
                    log.warning("undecodable audit event dead-lettered", topic=record.topic,
                                partition=record.partition, offset=record.offset, error=str(exc))
                    await dead_letter(record, exc.reason, str(exc))
                    continue
                if row[2] > state["watermark"]:
                    state["watermark"] = row[2]
                by_key.setdefault("svc:" + row[0], []).append(row)
                by_key.setdefault("type:" + row[1], []).append(row)
        sent = [await inbox.send(key=key.encode(), value=json.dumps({"t": "obs", "o": rows}).encode())
                for key, rows in by_key.items()]
        await asyncio.gather(*sent)

    @app.agent(inbox)
    async def judge(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            body = json.loads(message.value)
            kind = body.get("t")
            now = time.time()
            if kind == "tick":
                state["watermark"] = max(state["watermark"], float(body.get("wm", 0.0)))
                partition = message.partition
                for key in [k for k in list(table.keys()) if _partition(partitioner, k, n) == partition]:
                    await _settle(key, [], now)
                continue
            key = message.key.decode()
            if kind == "watch":
                watch = Watch.from_dict(body["w"])
                for row in recent.get(key, []):  # what its service said before the watch arrived
                    watch.hear(row[0], row[2])
                bucket = dict(table[key])
                bucket[f"{watch.correlation_id}/{watch.name}"] = watch.to_dict()
                table[key] = bucket
                earlier = [observation(r) for r in recent.get(key, []) if r[2] >= watch.injected_at]
                await _settle(key, earlier, now)
            elif kind == "obs":
                rows = body["o"]
                state["watermark"] = max(state["watermark"], max(r[2] for r in rows))
                _remember(recent, key, rows)
                if key in table:
                    wanted = _event_types(table[key])
                    observations = [observation(r) for r in rows if wanted is None or r[1] in wanted]
                    # a service's own bucket hears everything it says: silence is told from "not that"
                    heard = [r[2] for r in rows] if key.startswith("svc:") and _unheard(table[key]) else []
                    if observations or heard:
                        await _settle(key, observations, now, heard)

    async def _settle(key: str, observations: list[AuditObservation], now: float,
                      heard: list[float] | None = None) -> None:
        bucket = dict(table[key])
        changed = False
        for watch_id, data in list(bucket.items()):
            types = _types_of(data)
            relevant = observations if types is None else [o for o in observations if o.event_type in types]
            hearing = bool(heard) and bool(data.get("service")) and data.get("heard_at") is None
            if observations and not relevant and not hearing:
                continue  # nothing for this watch: its deadline is checked on the next tick
            watch = Watch.from_dict(data)
            touched = False
            if hearing:
                for at in heard or []:
                    touched = watch.hear(watch.service, at) or touched
            for obs in relevant:
                touched = watch.observe(obs, grace) or touched
            verdict = watch.decide(now, state["watermark"], grace)
            if verdict is not None:
                await publish(watch, verdict)
                del bucket[watch_id]
                changed = True
            elif touched:
                bucket[watch_id] = watch.to_dict()
                changed = True
        if changed:
            if bucket:
                table[key] = bucket
            else:
                del table[key]

    @app.timer(interval=settings.worker_tick_interval)
    async def tick() -> None:
        body = json.dumps({"t": "tick", "wm": state["watermark"]}).encode()
        for partition in range(n):
            await inbox.send(key=b"tick", value=body, partition=partition)

    watch_recovery = RecoveryWatch()

    @app.timer(interval=CHECK_INTERVAL_SECONDS)
    async def recovery_watchdog() -> None:
        table_recovery = app.tables.recovery
        running = table_recovery.in_recovery
        if not watch_recovery.observe(running, _recovery_progress(app) if running else None, time.monotonic()):
            return
        remaining = {tp: left for tp, left in table_recovery.active_remaining().items() if left > 0}
        if not remaining:
            return
        stalled = {tp: reread_from(table_recovery.active_offsets[tp]) for tp in remaining}
        log.warning("table recovery applied no changelog record for a while; reading its changelog again",
                    stalled_seconds=watch_recovery.stall_after, times=watch_recovery.stalls,
                    partitions={f"{tp.topic}[{tp.partition}]": offset for tp, offset in stalled.items()},
                    remaining=sum(remaining.values()))
        await app.consumer.seek_wait(stalled)

    return app


def _recovery_progress(app: faust.App) -> tuple[Any, ...]:
    """What changes whenever table recovery makes progress: the rebalance generation and the changelog
    offsets applied so far."""
    applied = app.tables.recovery.active_offsets
    return (app.consumer_generation_id,
            tuple(sorted((tp.topic, tp.partition, offset) for tp, offset in applied.items() if offset is not None)))


AUDIT_BATCH = 5000
AUDIT_FETCH_WAIT_MS = 50
RECENT_PER_KEY = 200
RECENT_KEYS = 10_000


def _remember(recent: dict[str, deque[list[Any]]], key: str, rows: list[list[Any]]) -> None:
    """Keep the latest audit rows per routing key (at most RECENT_PER_KEY each, O(1) per event), in
    memory: a watch that arrives after its events still sees them (replay keeps only events at or
    after the injection). After a rebalance the new owner starts empty."""
    kept = recent.get(key)
    if kept is None:
        if len(recent) >= RECENT_KEYS:  # forget the key that has been quiet longest
            quiet = min(recent, key=lambda k: recent[k][-1][2] if recent[k] else 0.0)
            del recent[quiet]
        kept = recent[key] = deque(maxlen=RECENT_PER_KEY)
    kept.extend(rows)


def _unheard(bucket: dict[str, dict[str, Any]]) -> bool:
    """Does a watch of this bucket still wait to hear anything from its service?"""
    return any(w.get("service") and w.get("heard_at") is None for w in bucket.values())


def _types_of(watch: dict[str, Any]) -> set[str] | None:
    """The event types a stored watch can use, before building it; None when it takes any type."""
    if watch["kind"] == "order":
        return set(watch["sequence"])
    return {watch["event_type"]} if watch["event_type"] else None


def _event_types(bucket: dict[str, dict[str, Any]]) -> set[str] | None:
    """The event types any watch of a bucket can use; None when one takes any type."""
    wanted: set[str] = set()
    for watch in bucket.values():
        types = _types_of(watch)
        if types is None:
            return None
        wanted |= types
    return wanted


def _partition(partitioner: DefaultPartitioner, key: str, partitions: int) -> int:
    """The inbox partition of a routing key (the producer's default murmur2 partitioner)."""
    return int(partitioner(key.encode(), list(range(partitions)), list(range(partitions))))
