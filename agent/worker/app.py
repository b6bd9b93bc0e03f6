"""``coordinator worker``: the stream worker, a faust-streaming app.

Flow (all topics and tables partitioned alike; Kafka and faust tables are the distributed engine):

1. ``route_chaos`` reads chaos events. Each INJECTED event's expectations become *watches*
   (``agent.worker.watch``), sent to the internal ``{app}-inbox`` topic keyed by a routing key:
   ``svc:{service}`` when the expectation names a service (or, for target-window attribution, the
   fault's target service), else ``type:{event_type}``.
2. ``route_audit`` reads audit events, batches them by hand (up to 2,000 or 20 ms) and routes each
   under ``svc:{service_name}`` and ``type:{event_type}``, one inbox message per routing key per
   batch (faust's cost is per message); events are acknowledged once their batch is out. So a
   watch and every audit event that can concern it meet in one partition.
3. ``judge`` reads the inbox and keeps the watches in the ``watches`` table (routing key ->
   watches), backed by a changelog topic: a restarted or replacement worker recovers them. Audit
   events and watches travel different paths, so an event can arrive first: the latest
   observations per routing key are kept in memory and replayed to a watch when it arrives.
   Observations update watches; a decided watch publishes its verdict to the verdicts topic and
   leaves the table.
4. A timer sends a tick to every inbox partition every ``worker_tick_interval`` so deadlines fire
   when no event arrives; ticks carry the sender's audit watermark (the latest audit event time it
   has seen), which tells a live audit trail from a silent one.

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
from aiokafka.partitioner import DefaultPartitioner

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import CORRELATION_HEADER
from agent.errors import DecodeError
from agent.logs import get_logger
from agent.settings import Settings
from agent.worker.watch import AuditObservation, Verdict, Watch

log = get_logger("agent.worker")
S = events_pb2
_KINDS = {S.EXPECTATION_KIND_APPEARS: "appears", S.EXPECTATION_KIND_ABSENT: "absent",
          S.EXPECTATION_KIND_COUNT: "count", S.EXPECTATION_KIND_ORDER: "order",
          S.EXPECTATION_KIND_TIME_TO_RECOVER: "time_to_recover"}
_ATTRIBUTION = {S.ATTRIBUTION_CORRELATION_ID: "correlation-id", S.ATTRIBUTION_TARGET_WINDOW: "target-window",
                S.ATTRIBUTION_WINDOW: "window",
                S.ATTRIBUTION_ANY: "any", S.ATTRIBUTION_UNSPECIFIED: "any"}
_STATUS = {"PASSED": S.VERDICT_STATUS_PASSED, "FAILED": S.VERDICT_STATUS_FAILED,
           "INCONCLUSIVE": S.VERDICT_STATUS_INCONCLUSIVE}


def watches_from(event: events_pb2.ChaosEvent) -> list[Watch]:
    injected = event.injected_at.ToNanoseconds() / 1e9 or time.time()
    out = []
    for expectation in event.expectations:
        kind = _KINDS.get(expectation.kind)
        if kind is None:
            continue
        span = expectation.max_time_to_recover if kind == "time_to_recover" else expectation.within
        out.append(Watch(
            execution_id=event.execution_id, correlation_id=event.correlation_id, name=expectation.name, kind=kind,
            injected_at=injected, deadline=injected + span.ToNanoseconds() / 1e9, target_service=event.service,
            event_type=expectation.event_type, service=expectation.service, match=dict(expectation.match),
            attribution=_ATTRIBUTION[expectation.attribution],
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


def observation_from(value: bytes | None, headers: Iterable[tuple[str, bytes]] | None,
                     record_timestamp_ms: float | None) -> AuditObservation:
    """An audit event as the watches see it; the correlation id from the payload, else the header."""
    event = codec.decode_event(value, headers, events_pb2.AuditEvent)
    correlation_id = event.correlation_id or codec.headers_to_dict(headers).get(CORRELATION_HEADER, "")
    if event.HasField("timestamp"):
        at = event.timestamp.ToNanoseconds() / 1e9
    else:
        at = (record_timestamp_ms or time.time() * 1000) / 1000.0
    return AuditObservation(service=event.service_name, event_type=event.event_type, timestamp=at,
                            correlation_id=correlation_id, metadata=dict(event.metadata))


def verdict_message(watch: Watch, verdict: Verdict) -> events_pb2.ExpectationVerdict:
    message = events_pb2.ExpectationVerdict(
        execution_id=watch.execution_id, correlation_id=watch.correlation_id, expectation_name=watch.name,
        status=_STATUS[verdict.status], reason=verdict.reason, expected=verdict.expected,  # type: ignore[arg-type]
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
    audit_topic = app.topic(settings.topics.audit_events, **raw)
    inbox = app.topic(f"{settings.worker_app_id}-inbox", partitions=n, internal=True, **raw)
    verdicts = app.topic(settings.topics.verdicts, **raw)
    table = app.Table("watches", default=dict, partitions=n,
                      # plain JSON both ways: with value_type=dict, recovery calls dict.from_data and fails
                      schema=faust.Schema(key_serializer="json", value_serializer="json"))
    partitioner = DefaultPartitioner()
    state = {"watermark": 0.0}
    # audit events can reach the judge before the watch they concern (they travel another path):
    # recent observations per routing key are kept and replayed to a watch when it arrives
    recent: dict[str, deque[AuditObservation]] = {}
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
                log.warning("undecodable chaos event skipped", offset=message.offset, error=str(exc))
                continue
            if chaos.type != S.CHAOS_EVENT_TYPE_INJECTED:
                continue
            for watch in watches_from(chaos):
                await inbox.send(key=routing_key(watch).encode(),
                                 value=json.dumps({"t": "watch", "w": watch.to_dict()}).encode())

    # audit events are batched by hand (faust's take_events stalled after rebalances): rows gather
    # per routing key and go out as one inbox message per key when the batch is full or 20 ms old.
    # Each buffered event holds an extra reference, released once its batch is sent: the stream's
    # own ack then does not make its offset committable early, so a crash replays it. (A noack()
    # stream would turn acks off for the whole topic, and faust would commit fetched offsets,
    # including events it skips while a worker starts: that lost events.)
    batch: dict[str, Any] = {"rows": {}, "events": [], "since": 0.0}
    flushing = asyncio.Lock()

    async def flush_audit() -> None:
        async with flushing:
            by_key, events = batch["rows"], batch["events"]
            if not events:
                return
            batch["rows"], batch["events"] = {}, []
            for key, rows in by_key.items():
                await inbox.send(key=key.encode(), value=json.dumps({"t": "obs", "o": rows}).encode())
            for event in events:
                event.ack()

    @app.agent(audit_topic)
    async def route_audit(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                obs = observation_from(message.value, message.headers, message.timestamp * 1000
                                       if message.timestamp else None)
            except DecodeError as exc:
                log.warning("undecodable audit event skipped", offset=message.offset, error=str(exc))
                continue
            state["watermark"] = max(state["watermark"], obs.timestamp)
            row = [obs.service, obs.event_type, obs.timestamp, obs.correlation_id, obs.metadata]
            if not batch["events"]:
                batch["since"] = time.monotonic()
            batch["rows"].setdefault(f"svc:{obs.service}", []).append(row)
            batch["rows"].setdefault(f"type:{obs.event_type}", []).append(row)
            message.incref()  # released by flush_audit
            batch["events"].append(event)
            if len(batch["events"]) >= AUDIT_BATCH:
                await flush_audit()

    @app.timer(interval=AUDIT_BATCH_WINDOW)
    async def flush_audit_batches() -> None:
        if batch["events"] and time.monotonic() - batch["since"] >= AUDIT_BATCH_WINDOW:
            await flush_audit()

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
                bucket = dict(table[key])
                bucket[f"{watch.correlation_id}/{watch.name}"] = watch.to_dict()
                table[key] = bucket
                earlier = [o for o in recent.get(key, []) if o.timestamp >= watch.injected_at]
                await _settle(key, earlier, now)
            elif kind == "obs":
                observations = [AuditObservation(service=r[0], event_type=r[1], timestamp=float(r[2]),
                                                 correlation_id=r[3] or "", metadata=r[4] or {})
                                for r in body["o"]]
                state["watermark"] = max([state["watermark"], *(o.timestamp for o in observations)])
                _remember(recent, key, observations, now)
                if key in table:
                    await _settle(key, observations, now)

    async def _settle(key: str, observations: list[AuditObservation], now: float) -> None:
        bucket = dict(table[key])
        changed = False
        for watch_id, data in list(bucket.items()):
            relevant = [o for o in observations if _may_concern(data, o)]
            if observations and not relevant:
                continue  # nothing for this watch: its deadline is checked on the next tick
            watch = Watch.from_dict(data)
            touched = False
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

    return app


AUDIT_BATCH = 2000
AUDIT_BATCH_WINDOW = 0.02
RECENT_PER_KEY = 200
RECENT_KEYS = 10_000


def _remember(recent: dict[str, deque[AuditObservation]], key: str, observations: list[AuditObservation],
              now: float) -> None:
    """Keep the latest observations per routing key (at most RECENT_PER_KEY each, O(1) per event), in
    memory: a watch that arrives after its events still sees them (replay keeps only events at or
    after the injection). After a rebalance the new owner starts empty."""
    kept = recent.get(key)
    if kept is None:
        if len(recent) >= RECENT_KEYS:  # forget the key that has been quiet longest
            quiet = min(recent, key=lambda k: recent[k][-1].timestamp if recent[k] else 0.0)
            del recent[quiet]
        kept = recent[key] = deque(maxlen=RECENT_PER_KEY)
    kept.extend(observations)


def _may_concern(watch: dict[str, Any], obs: AuditObservation) -> bool:
    """A cheap test on the stored watch, before building it: can this event matter to it at all?"""
    if watch["kind"] == "order":
        return obs.event_type in watch["sequence"]
    return not watch["event_type"] or watch["event_type"] == obs.event_type


def _partition(partitioner: DefaultPartitioner, key: str, partitions: int) -> int:
    """The inbox partition of a routing key (the producer's default murmur2 partitioner)."""
    return int(partitioner(key.encode(), list(range(partitions)), list(range(partitions))))
