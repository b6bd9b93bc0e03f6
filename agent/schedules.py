"""Recurring experiments: a ``kind: Schedule`` document, its ticks, and the part of ``serve`` that
fires them.

A schedule names a scenario (catalog name, or a YAML file sent inline), parameters, and when: a tick
``every`` interval (aligned to the epoch: every agent counts the same ticks) or at the times a
five-field ``cron`` expression names (UTC), each fired up to ``jitter`` later (the same delay for the
same tick everywhere), only inside a daily ``window`` when one is given, and not while ``paused``.

**Kafka-native.** ``coordinator schedule apply`` publishes the schedule (protobuf ``Schedule``) to
the compacted schedules topic, keyed by name; a tombstone deletes it. Every agent reads the whole
topic and follows it, so a schedule outlives any agent.

**Exactly once.** A due tick is claimed in Redis (``SET {p}:schedule-tick:{name}:{tick ms} NX``):
one agent of all wins it and either fires it, publishing an ordinary ``ScenarioRequest`` (request id
``schedule-<name>-<tick ms>``, so even a repeated publish runs once; labels ``schedule`` and
``schedule-tick``), or skips it and says why: paused, outside its window, the agents halted, or the
previous run of the schedule still going. Every outcome is kept (``{p}:schedule:{name}:ticks``, the
last ``TICKS_KEPT``), counted in ``coordinator_schedule_ticks_total`` and logged.

A tick due while no agent was up is fired when one comes up within ``CATCH_UP`` seconds of it; older
ones are skipped without a record (there was no agent to fire them). Ticks before the schedule was
applied never fire.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from croniter import croniter
from pydantic import Field, ValidationError, field_validator, model_validator

from agent import codec, kafkaio, metrics
from agent._proto.coordinator.v1 import events_pb2
from agent.constants import redis_key
from agent.errors import Issue, ScenarioError
from agent.fields import NAME_PATTERN, Duration, Strict, format_duration
from agent.logs import get_logger
from agent.scenario.loader import load_yaml
from agent.scenario.validation import _issue, pydantic_issue
from agent.settings import Settings

log = get_logger("agent.schedules")
S = events_pb2
#: seconds after its time a tick may still be fired by an agent that was not up then
CATCH_UP = 60.0
#: tick outcomes kept per schedule
TICKS_KEPT = 500
#: a fired request no agent has taken after this long no longer holds the next tick back
UNCLAIMED_AFTER = 600.0
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


# -- the document -------------------------------------------------------------------------------------
class Window(Strict):
    #: "HH:MM" UTC; an end before the start spans midnight
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"expected a time of day as HH:MM (UTC), got '{value}'")
        return value


class ScheduleSpec(Strict):
    #: a scenario of the agents' catalog, or a YAML file (relative to the schedule's file), sent inline
    scenario: str = Field(min_length=1)
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    every: Duration | None = None
    cron: str | None = None
    jitter: Duration = 0.0
    window: Window | None = None
    paused: bool = False

    @field_validator("every")
    @classmethod
    def _at_least_a_second(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError(f"a schedule ticks at most once a second, got every {format_duration(value)}")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError(f"'{value}' is not a five-field cron expression (minute hour day month weekday)")
        return value

    @model_validator(mode="after")
    def _one_clock(self) -> ScheduleSpec:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' (an interval) and 'cron'")
        if self.every is not None and self.jitter >= self.every:
            raise ValueError(f"jitter ({format_duration(self.jitter)}) must be shorter than the interval "
                             f"({format_duration(self.every)})")
        return self


class ScheduleMetadata(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)


class ScheduleDoc(Strict):
    api_version: Literal["coordinator/v1"]
    kind: Literal["Schedule"]
    metadata: ScheduleMetadata
    spec: ScheduleSpec


def load_schedule(text: str | bytes, source: str = "<string>", *, requester: str = "",
                  base: Path | None = None) -> events_pb2.Schedule:
    """The schedule a document declares; ``ScenarioError`` lists every problem with file, line and
    field path. A scenario given as a YAML file is read (relative to ``base``) and sent inline; without
    ``base`` (a document that came over the API) only a catalog scenario is allowed: nothing here
    reads a file a caller names."""
    doc = load_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise ScenarioError([Issue(source, 1, 1, "", f"a schedule is a mapping, not {type(doc.data).__name__}")])
    try:
        parsed = ScheduleDoc.model_validate(doc.data)
    except ValidationError as exc:
        raise ScenarioError(list(dict.fromkeys(
            pydantic_issue(lambda path, message: _issue(doc, path, message), error, ScheduleDoc)
            for error in exc.errors(include_url=False)))) from None
    spec = parsed.spec
    out = S.Schedule(name=parsed.metadata.name, labels=parsed.metadata.labels, cron=spec.cron or "",
                     paused=spec.paused, requester=requester,
                     parameters={k: _text(v) for k, v in spec.parameters.items()})
    if spec.scenario.endswith((".yaml", ".yml")):
        if base is None:
            raise ScenarioError([_issue(doc, ("spec", "scenario"), "a schedule sent to the agent names a scenario "
                                        "of its catalog, not a file")])
        file = base / spec.scenario
        try:
            out.scenario_yaml = file.read_text()
        except OSError as exc:
            raise ScenarioError([_issue(doc, ("spec", "scenario"), f"cannot read '{file}': {exc.strerror}")]) from None
    else:
        out.scenario_name = spec.scenario
    if spec.every is not None:
        out.interval.FromNanoseconds(int(spec.every * 1e9))
    if spec.jitter:
        out.jitter.FromNanoseconds(int(spec.jitter * 1e9))
    if spec.window is not None:
        out.window_start, out.window_end = spec.window.start, spec.window.end
    out.updated_at.GetCurrentTime()
    return out


def _text(value: str | int | float | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


# -- ticks ----------------------------------------------------------------------------------------------
def _seconds(duration: Any) -> float:
    return float(duration.ToNanoseconds()) / 1e9


def describe(schedule: events_pb2.Schedule) -> str:
    """'every 20s', 'cron 0 2 * * *', with jitter and window when set."""
    when = f"every {format_duration(_seconds(schedule.interval))}" if schedule.interval.ToNanoseconds() \
        else f"cron {schedule.cron}"
    if schedule.jitter.ToNanoseconds():
        when += f" (jitter {format_duration(_seconds(schedule.jitter))})"
    if schedule.window_start and schedule.window_end:
        when += f", {schedule.window_start}-{schedule.window_end} UTC"
    return when


def ticks(schedule: events_pb2.Schedule, after: float, until: float, *, limit: int = 1000) -> list[float]:
    """The schedule's tick times ``t`` with ``after < t <= until`` (epoch seconds), at most ``limit``."""
    if until <= after:
        return []
    every = _seconds(schedule.interval)
    if every > 0:
        first = int(after // every) + 1
        return [k * every for k in range(first, min(int(until // every), first + limit - 1) + 1)]
    found: list[float] = []
    it = croniter(schedule.cron, datetime.fromtimestamp(after, UTC))
    while len(found) < limit:
        at = float(it.get_next(float))
        if at > until:
            break
        if at > after:
            found.append(at)
    return found


def jitter_of(schedule: events_pb2.Schedule, tick: float) -> float:
    """How long after ``tick`` it fires: the same on every agent (a hash of name and tick)."""
    spread = _seconds(schedule.jitter)
    if spread <= 0:
        return 0.0
    digest = hashlib.sha256(f"{schedule.name}|{tick_ms(tick)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 * spread


def in_window(schedule: events_pb2.Schedule, tick: float) -> bool:
    if not (schedule.window_start and schedule.window_end):
        return True
    clock = datetime.fromtimestamp(tick, UTC).strftime("%H:%M")
    start, end = schedule.window_start, schedule.window_end
    return start <= clock < end if start <= end else (clock >= start or clock < end)


def tick_ms(tick: float) -> int:
    return int(round(tick * 1000))


def request_for(schedule: events_pb2.Schedule, tick: float) -> events_pb2.ScenarioRequest:
    """The request a tick makes: its id says which tick, so the same tick never runs twice."""
    from google.protobuf import struct_pb2

    iso = datetime.fromtimestamp(tick, UTC).isoformat().replace("+00:00", "Z")
    request = S.ScenarioRequest(request_id=f"schedule-{schedule.name}-{tick_ms(tick)}",
                                requester=schedule.requester or f"schedule:{schedule.name}",
                                labels={**schedule.labels, "schedule": schedule.name, "schedule-tick": iso})
    if schedule.WhichOneof("scenario") == "scenario_yaml":
        request.scenario_yaml = schedule.scenario_yaml
    else:
        request.scenario_name = schedule.scenario_name
    for name, value in schedule.parameters.items():
        request.parameters[name].CopyFrom(struct_pb2.Value(string_value=value))
    request.requested_at.GetCurrentTime()
    return request


# -- the topic ------------------------------------------------------------------------------------------
def encode(schedule: events_pb2.Schedule, settings: Settings, *, source: str) -> codec.OutgoingEvent:
    return codec.encode_event(schedule, key=schedule.name, source=source, content_type=settings.content_type)


def fold(schedules: dict[str, events_pb2.Schedule], key: bytes | None, value: bytes | None,
         headers: Iterable[tuple[str, bytes]] | None) -> None:
    """Apply one record of the schedules topic: the latest record of a name is the schedule, a
    tombstone deletes it; a record that is not a schedule is logged and left out."""
    name = (key or b"").decode(errors="replace")
    if value is None:
        schedules.pop(name, None)
        return
    try:
        schedule = codec.decode_event(value, headers, S.Schedule)
    except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
        log.warning("not a schedule; left out", key=name, error=str(exc))
        return
    schedules[schedule.name or name] = schedule


async def ensure_topic(settings: Settings) -> None:
    """The schedules topic, compacted, as the contract declares it (nothing when it exists)."""
    from agent import topics

    await topics.apply(settings, [s for s in topics.load_contract(settings=settings) if s.channel == "schedules"])


async def read_all(settings: Settings) -> dict[str, events_pb2.Schedule]:
    """Every schedule the topic holds now (for the CLI)."""
    schedules: dict[str, events_pb2.Schedule] = {}
    consumer = kafkaio.consumer(settings, purpose="schedules")
    await kafkaio.started(consumer)
    try:
        partitions = await kafkaio.topic_partitions(consumer, settings.topics.schedules, timeout=30)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                for record in records:
                    fold(schedules, record.key, record.value, record.headers)
    finally:
        await consumer.stop()
    return schedules


# -- firing -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    tick: float
    fired: bool
    reason: str = ""
    request_id: str = ""
    agent: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"tick": self.tick, "fired": self.fired, "reason": self.reason, "request_id": self.request_id,
                "agent": self.agent}


def ticks_key(prefix: str, name: str) -> str:
    return redis_key(prefix, "schedule", name, "ticks")


async def outcomes(redis: Any, prefix: str, name: str, last: int = 50) -> list[Outcome]:
    """The schedule's last tick outcomes, newest first."""
    raw = await redis.zrevrange(ticks_key(prefix, name), 0, last - 1)
    return [Outcome(**json.loads(r)) for r in raw]


class Scheduler:
    """The part of ``serve`` that follows the schedules topic and fires each due tick once across
    all agents. ``engine`` gives the store (claims, the kill switch, runs) and the publisher."""

    def __init__(self, settings: Settings, engine: Any, *, poll: float = 0.5) -> None:
        self.settings = settings
        self.engine = engine
        self.poll = poll
        self.schedules: dict[str, events_pb2.Schedule] = {}
        self._seen: set[tuple[str, float]] = set()

    @property
    def redis(self) -> Any:
        return self.engine.store.redis

    def key(self, *parts: str) -> str:
        return redis_key(self.settings.redis_key_prefix, *parts)

    async def run(self) -> None:
        try:
            await ensure_topic(self.settings)
        except Exception as exc:  # noqa: BLE001 - no right to create topics here: follow it once it exists
            log.warning("schedules topic not created here", topic=self.settings.topics.schedules, error=str(exc))
        consumer = kafkaio.consumer(self.settings, purpose="scheduler")
        await kafkaio.started(consumer)
        try:
            while True:
                try:
                    partitions = await kafkaio.topic_partitions(consumer, self.settings.topics.schedules, timeout=60)
                    break
                except LookupError:
                    log.warning("no schedules topic yet; looking again", topic=self.settings.topics.schedules)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            log.info("following schedules", topic=self.settings.topics.schedules)
            while True:
                batch = await consumer.getmany(*partitions, timeout_ms=int(self.poll * 1000))
                for records in batch.values():
                    for record in records:
                        fold(self.schedules, record.key, record.value, record.headers)
                await self.due(time.time())
        finally:
            await consumer.stop()

    async def due(self, now: float) -> list[Outcome]:
        """Claim and handle every tick due at ``now`` that no agent has claimed yet."""
        handled = []
        for schedule in list(self.schedules.values()):
            applied = schedule.updated_at.ToNanoseconds() / 1e9
            lookback = max(now - CATCH_UP - _seconds(schedule.jitter), applied)
            for tick in ticks(schedule, lookback, now):
                if (schedule.name, tick) in self._seen or tick + jitter_of(schedule, tick) > now:
                    continue
                self._seen.add((schedule.name, tick))
                claimed = await self.engine.store.patiently(
                    self.redis.set, self.key("schedule-tick", schedule.name, str(tick_ms(tick))), self.engine.owner,
                    nx=True, ex=int(CATCH_UP * 4 + _seconds(schedule.jitter) + 3600))
                if claimed:
                    handled.append(await self._handle(schedule, tick))
        # what no lookback reaches any more is forgotten
        spread = max((_seconds(s.jitter) for s in self.schedules.values()), default=0.0)
        self._seen = {(n, t) for n, t in self._seen if t > now - CATCH_UP - spread - 1}
        return handled

    async def _handle(self, schedule: events_pb2.Schedule, tick: float) -> Outcome:
        why = await self._why_skip(schedule, tick)
        request_id = ""
        if why is None:
            request = request_for(schedule, tick)
            await self._publish(request, tick)
            request_id = request.request_id
            await self.engine.store.patiently(self.redis.hset, self.key("schedule", schedule.name),
                                              mapping={"last_request": request_id, "last_fired": repr(time.time())})
        outcome = Outcome(tick, why is None, why or "", request_id, self.engine.owner)
        await self.engine.store.patiently(self._record, schedule.name, outcome)
        metrics.SCHEDULE_TICKS.labels(schedule=schedule.name, outcome="fired" if outcome.fired else "skipped").inc()
        if outcome.fired:
            log.info("schedule fired", schedule=schedule.name, tick=tick, request_id=request_id)
        else:
            log.warning("schedule tick skipped", schedule=schedule.name, tick=tick, reason=outcome.reason)
        return outcome

    async def _publish(self, request: events_pb2.ScenarioRequest, tick: float) -> None:
        """Publish the tick's request, retrying through a Kafka outage for as long as the tick could
        still be caught up (the claim is this agent's: nobody else fires it)."""
        from aiokafka.errors import KafkaError

        delay = 0.5
        while True:
            try:
                await self.engine.publisher.request(request)
                return
            except KafkaError as exc:
                if time.time() > tick + CATCH_UP:
                    raise
                log.warning("schedule request not published yet; retrying", request_id=request.request_id,
                            error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _record(self, name: str, outcome: Outcome) -> None:
        key = ticks_key(self.settings.redis_key_prefix, name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {json.dumps(outcome.as_dict(), separators=(",", ":")): outcome.tick})
            pipe.zremrangebyrank(key, 0, -(TICKS_KEPT + 1))
            await pipe.execute()

    async def _why_skip(self, schedule: events_pb2.Schedule, tick: float) -> str | None:
        if schedule.paused:
            return "the schedule is paused"
        if not in_window(schedule, tick):
            return f"outside its window {schedule.window_start}-{schedule.window_end} UTC"
        store = self.engine.store
        halted = await store.patiently(store.halted)
        if halted is not None:
            return f"the agents are halted ({halted})"
        last = await store.patiently(self.redis.hgetall, self.key("schedule", schedule.name))
        previous = last.get("last_request")
        if not previous:
            return None
        execution_id = await store.patiently(store.claimed_request, previous)
        if execution_id is None:
            if time.time() - float(last.get("last_fired", "0")) < UNCLAIMED_AFTER:
                return f"the previous request {previous} has not been taken by an agent yet"
            return None
        record = await store.patiently(store.get_execution, execution_id)
        if record is not None and record.status in {"PENDING", "RUNNING"}:
            return f"the previous run (execution {execution_id}) is still {record.status}"
        return None
