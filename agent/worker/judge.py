"""The judge: watches meet audit rows, verdicts come out. Plain Python; the faust wiring is in
``agent.worker.app``, which hands every inbox message to a ``Judge``.

- ``Row``: an audit event as it travels from the intake to the judge (typed; a JSON list on the wire).
- The inbox codec: the three messages of the worker's internal ``{app}-inbox`` topic (a watch, the
  rows of one fetch bound for one partition by routing key, a tick), each one JSON object;
  ``decode`` returns the typed message.
- ``Judge``: keeps the watches per routing key in a table (faust's changelogged ``watches`` table
  in the worker, a dict in tests), remembers recent rows per key so that a watch arriving after
  its events still sees them, and publishes each verdict through the callable it is given.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import CORRELATION_HEADER
from agent.errors import DecodeError
from agent.expectations import KINDS, AuditObservation, Verdict, Watch
from agent.expectations.watch import PLATFORM_VOICE
from agent.logs import get_logger
from agent.vocabulary import ATTRIBUTION_NAMES, EXPECTATION_KIND_NAMES, REACTION

log = get_logger("agent.worker.judge")
#: rows kept per routing key for watches that arrive after their events, and how many keys
RECENT_PER_KEY = 200
RECENT_KEYS = 10_000

Bucket = dict[str, dict[str, Any]]
Publish = Callable[[Watch, Verdict], Awaitable[None]]
#: a late match for a watch decided without it: the watch and the event's time
PublishLate = Callable[[Watch, float], Awaitable[None]]


class Row(NamedTuple):
    """An audit event on its way to the judge; ``identity`` is ``source#id``, "" when it has none."""

    service: str
    event_type: str
    at: float
    correlation_id: str
    metadata: dict[str, str]
    identity: str = ""
    #: the emitting incarnation (``AuditEvent.instance``, else metadata ``instance``), "" when unsaid
    instance: str = ""

    def observation(self) -> AuditObservation:
        return AuditObservation(service=self.service, event_type=self.event_type, timestamp=float(self.at),
                                correlation_id=self.correlation_id or "", metadata=self.metadata or {},
                                event_id=self.identity, instance=self.instance)


def row_from(value: bytes | None, headers: Iterable[tuple[str, bytes]] | None,
             record_timestamp_ms: float | None) -> Row:
    """The row of one audit record: the correlation id from the payload, else the header; the time
    from the event, else the record; the identity from the CloudEvents ``ce_source`` and ``ce_id``
    headers, else the payload's ``service_name`` and ``id``. ``DecodeError`` when it is not one."""
    meta = codec.headers_to_dict(headers)  # read once: the hot path of the worker
    event = codec.decode_event(value, headers, events_pb2.AuditEvent, meta)
    correlation_id = event.correlation_id or meta.get(CORRELATION_HEADER, "")
    event_id = meta.get("ce_id") or event.id
    identity = f"{meta.get('ce_source') or event.service_name}#{event_id}" if event_id else ""
    if event.HasField("timestamp"):
        at = event.timestamp.ToNanoseconds() / 1e9
    else:
        at = (record_timestamp_ms or time.time() * 1000) / 1000.0
    instance = event.instance or event.metadata.get("instance", "")
    return Row(event.service_name, event.event_type, at, correlation_id, dict(event.metadata), identity, instance)


def watches_from(event: events_pb2.ChaosEvent) -> list[Watch]:
    """The watches of an INJECTED chaos event: one per expectation it carries, and, when it carries
    any and names its target's service, one more (``REACTION``) on whether that service sent any
    audit event of its own after the injection, until the last expectation's deadline."""
    injected = event.injected_at.ToNanoseconds() / 1e9 or time.time()
    named = {e.name: e for e in event.expectations}
    out = []
    for expectation in event.expectations:
        kind = EXPECTATION_KIND_NAMES.get(expectation.kind) or expectation.kind_name
        if kind not in KINDS:
            log.warning("expectation of a kind this worker does not know; upgrade the worker",
                        expectation=expectation.name, kind=kind or "unspecified")
            continue
        window, own = KINDS[kind].from_expectation(expectation)
        out.append(Watch(
            execution_id=event.execution_id, correlation_id=event.correlation_id, name=expectation.name, kind=kind,
            injected_at=injected, deadline=injected + window, target_service=event.service,
            event_type=expectation.event_type, service=expectation.service, match=dict(expectation.match),
            attribution=ATTRIBUTION_NAMES[expectation.attribution],
            sequence=list(expectation.sequence), ended_instance=event.ended_instance, trace_id=event.trace_id,
            since=expectation.since, down=list(expectation.down),
            **own, **_gate(expectation, named),
        ))
    if out and event.service:
        # decided by hearing alone (any event of the service's own): it asks for no event type
        out.append(Watch(
            execution_id=event.execution_id, correlation_id=event.correlation_id, name=REACTION, kind="reaction",
            injected_at=injected, deadline=max(w.deadline for w in out), target_service=event.service,
            service=event.service, attribution="target-window", ended_instance=event.ended_instance))
    return out


def _gate(expectation: events_pb2.Expectation, named: dict[str, events_pb2.Expectation]) -> dict[str, Any]:
    """The onlyAfter fields of a watch: the named expectation's event (the scenario's validation made
    sure it is one of the same injection, from the same service, with a type)."""
    gate = named.get(expectation.only_after) if expectation.only_after else None
    if gate is None:
        return {}
    return {"gate": gate.name, "gate_type": gate.event_type, "gate_match": dict(gate.match)}


def routing_key(watch: Watch) -> str:
    """Where a watch waits: with its service's events, else with its event type's."""
    if watch.service:
        return f"svc:{watch.service}"
    if watch.attribution == "target-window" and watch.target_service:
        return f"svc:{watch.target_service}"
    return f"type:{watch.event_type}"


def row_keys(row: Row) -> tuple[str, str]:
    """The routing keys an audit row goes to: its service's and its event type's."""
    return "svc:" + row.service, "type:" + row.event_type


# -- the inbox codec ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchMessage:
    watch: Watch


@dataclass(frozen=True)
class RowsMessage:
    """The rows of one fetch bound for one inbox partition, by routing key (one message per
    partition, not per key: the judge's cost is per message). A message of the earlier form (the
    rows of the one routing key in its record key) decodes with the key ``""``."""

    by_key: dict[str, list[Row]]
    #: when the intake fetched these rows and when it sent them on (epoch seconds; 0 when unknown):
    #: carried to the verdict's ``coordinator-stages`` header
    fetched_at: float = 0.0
    routed_at: float = 0.0


@dataclass(frozen=True)
class TickMessage:
    #: the sender's audit watermark: the latest audit event time it has seen
    watermark: float


InboxMessage = WatchMessage | RowsMessage | TickMessage


def encode(message: InboxMessage) -> bytes:
    if isinstance(message, WatchMessage):
        return json.dumps({"kind": "watch", "watch": message.watch.to_dict()}).encode()
    if isinstance(message, RowsMessage):
        return json.dumps({"kind": "rows", "keys": message.by_key,
                           "trace": [message.fetched_at, message.routed_at]}).encode()
    return json.dumps({"kind": "tick", "watermark": message.watermark}).encode()


#: the largest inbox message the intake sends (Kafka refuses a record over the producer's 1 MB); a
#: fetch whose rows make more is sent in several
MAX_MESSAGE_BYTES = 512 * 1024


def encode_rows(message: RowsMessage, limit: int = MAX_MESSAGE_BYTES) -> list[bytes]:
    """``message`` as one or more inbox messages of at most ``limit`` bytes each (halved until they
    fit, rows of one key kept in order). A single row too large alone keeps only the first
    attributes of its metadata, shortened: its identity, type, service and time are what judge it."""
    value = encode(message)
    if len(value) <= limit:
        return [value]
    pairs = [(key, row) for key, rows in message.by_key.items() for row in rows]
    if len(pairs) == 1:
        key, row = pairs[0]
        small = row._replace(metadata={k[:128]: v[:256] for k, v in list((row.metadata or {}).items())[:32]})
        smaller = encode(RowsMessage({key: [small]}, message.fetched_at, message.routed_at))
        if len(smaller) <= limit:
            return [smaller]
        return [encode(RowsMessage({key: [row._replace(metadata={})]}, message.fetched_at, message.routed_at))]
    half = len(pairs) // 2
    out = []
    for part in (pairs[:half], pairs[half:]):
        by_key: dict[str, list[Row]] = {}
        for key, row in part:
            by_key.setdefault(key, []).append(row)
        out += encode_rows(RowsMessage(by_key, message.fetched_at, message.routed_at), limit)
    return out


def decode(value: bytes) -> InboxMessage:
    """An inbox message; ``DecodeError`` when the bytes are not one."""
    try:
        body = json.loads(value)
        kind = body["kind"]
        if kind == "watch":
            return WatchMessage(Watch.from_dict(body["watch"]))
        if kind == "rows":
            fetched_at, routed_at = body.get("trace") or (0.0, 0.0)
            by_key = {"": body["rows"]} if "rows" in body else body["keys"]
            return RowsMessage({str(key): [Row(*r) for r in rows] for key, rows in by_key.items()},
                               float(fetched_at), float(routed_at))
        if kind == "tick":
            return TickMessage(float(body["watermark"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecodeError(f"not an inbox message: {exc}", reason="bad-inbox-message") from exc
    raise DecodeError(f"unknown inbox message kind {kind!r}", reason="bad-inbox-message")


# -- the judge ----------------------------------------------------------------------------------------
class Judge:
    """Watches by routing key in ``table``; verdicts to ``publish``; ``grace`` waits for late events."""

    def __init__(self, table: MutableMapping[str, Bucket], publish: Publish, grace: float, late: float = 0.0,
                 publish_late: PublishLate | None = None) -> None:
        self.table = table
        self.publish = publish
        self.grace = grace
        #: how long a watch that missed its deadline stays to report a late match (``publish_late``)
        self.late = late if publish_late is not None else 0.0
        self.publish_late = publish_late
        #: the latest audit event time seen (this worker's and the ticks' senders')
        self.watermark = 0.0
        #: recent rows per routing key, replayed to a watch that arrives after them
        self.recent: dict[str, deque[Row]] = {}

    def saw(self, at: float) -> None:
        if at > self.watermark:
            self.watermark = at

    async def on_watch(self, key: str, watch: Watch, now: float) -> None:
        kept = self.recent.get(key, ())
        for row in kept:  # what its service (or the platform about it) said before the watch arrived
            watch.hear(row.service, row.at, PLATFORM_VOICE if row.metadata.get("platform") else row.instance)
        bucket = dict(self.table.get(key) or {})
        bucket[f"{watch.correlation_id}/{watch.name}"] = watch.to_dict()
        self.table[key] = bucket
        await self._settle(key, [r.observation() for r in kept if r.at >= watch.injected_at], now)

    async def on_rows(self, key: str, rows: list[Row], now: float) -> None:
        if not rows:
            return
        self.saw(max(r.at for r in rows))
        self.remember(key, rows)
        if key not in self.table:
            return
        bucket = self.table[key]
        wanted = _event_types(bucket)
        observations = [r.observation() for r in rows if wanted is None or r.event_type in wanted]
        # a service's own bucket hears everything it says: silence is told from "not that"
        heard = (sorted((r.at, PLATFORM_VOICE if r.metadata.get("platform") else r.instance) for r in rows)
                 if key.startswith("svc:") and _unheard(bucket) else [])
        if observations or heard:
            await self._settle(key, observations, now, heard)

    async def on_tick(self, keys: Iterable[str], watermark: float, now: float) -> None:
        """Deadlines fire for the watches under ``keys`` (those of the ticked partition)."""
        self.saw(watermark)
        for key in list(keys):
            if key in self.table:
                await self._settle(key, [], now)

    def remember(self, key: str, rows: list[Row]) -> None:
        """Keep the latest rows per routing key (at most RECENT_PER_KEY each, O(1) per row), in memory:
        a watch that arrives after its events still sees them (replay keeps only rows at or after the
        injection). After a rebalance the new owner starts empty."""
        kept = self.recent.get(key)
        if kept is None:
            if len(self.recent) >= RECENT_KEYS:  # forget the key that has been quiet longest
                quiet = min(self.recent, key=lambda k: self.recent[k][-1].at if self.recent[k] else 0.0)
                del self.recent[quiet]
            kept = self.recent[key] = deque(maxlen=RECENT_PER_KEY)
        kept.extend(rows)

    async def _settle(self, key: str, observations: list[AuditObservation], now: float,
                      heard: list[tuple[float, str]] | None = None) -> None:
        bucket = dict(self.table[key])
        changed = False
        for watch_id, data in list(bucket.items()):
            if data.get("late_until"):
                changed = await self._late(bucket, watch_id, data, observations, now) or changed
                continue
            types = _types_of(data)
            relevant = observations if types is None else [o for o in observations if o.event_type in types]
            hearing = bool(heard) and bool(data.get("service")) and data.get("heard_at") is None
            if observations and not relevant and not hearing:
                continue  # nothing for this watch: its deadline is checked on the next tick
            watch = Watch.from_dict(data)
            touched = False
            if hearing:
                touched = _hear(watch, heard or []) or touched
            for obs in relevant:
                touched = watch.observe(obs, self.grace) or touched
            verdict = watch.decide(now, self.watermark, self.grace)
            if verdict is not None:
                await self.publish(watch, verdict)
                if self.late and watch.keep_for_late_evidence(verdict, now + self.late):
                    bucket[watch_id] = watch.to_dict()
                else:
                    del bucket[watch_id]
                changed = True
            elif touched:
                bucket[watch_id] = watch.to_dict()
                changed = True
        if changed:
            if bucket:
                self.table[key] = bucket
            else:
                del self.table[key]


    async def _late(self, bucket: Bucket, watch_id: str, data: dict[str, Any], observations: list[AuditObservation],
                    now: float) -> bool:
        """A watch kept after missing its deadline: report the first late match, or leave when its
        late-evidence period is over. True when it left the bucket."""
        if now > data["late_until"]:
            del bucket[watch_id]
            return True
        types = _types_of(data)
        relevant = [o for o in observations if types is None or o.event_type in types]
        watch = Watch.from_dict(data) if relevant else None
        for obs in relevant:
            assert watch is not None
            if watch.late_evidence(obs):
                assert self.publish_late is not None
                await self.publish_late(watch, obs.timestamp)
                del bucket[watch_id]
                return True
        return False


def _hear(watch: Watch, heard: list[tuple[float, str]]) -> bool:
    """Tell a watch what its service said (``heard``: times and instances, sorted by time; the
    platform's words about it as ``PLATFORM_VOICE``, which count only for a platform event type).
    Only the last event before its injection and the first at or after it can change what it knows,
    so a watch that need not tell incarnations apart looks at just those two."""
    if not watch.hears_platform():
        heard = [h for h in heard if h[1] != PLATFORM_VOICE]
    if watch.ended_instance:
        changed = False
        for at, instance in heard:
            changed = watch.hear(watch.service, at, instance) or changed
        return changed
    i = bisect.bisect_left(heard, (watch.injected_at, ""))
    changed = i < len(heard) and watch.hear(watch.service, *heard[i])
    return (i > 0 and watch.hear(watch.service, *heard[i - 1])) or changed


def _unheard(bucket: Bucket) -> bool:
    """Does a watch of this bucket still wait to hear anything from its service?"""
    return any(w.get("service") and w.get("heard_at") is None for w in bucket.values())


def _types_of(watch: dict[str, Any]) -> set[str] | None:
    """The event types a stored watch can use, before building it; None when it takes any type."""
    return KINDS[watch["kind"]].event_types(watch)


def _event_types(bucket: Bucket) -> set[str] | None:
    """The event types any watch of a bucket can use; None when one takes any type."""
    wanted: set[str] = set()
    for watch in bucket.values():
        types = _types_of(watch)
        if types is None:
            return None
        wanted |= types
    return wanted
