"""A watch: one expectation of one injection, as its rule (from the chaos event) and what has been
seen of it. Audit events are offered to it (``observe``); it answers with a verdict once one is
certain (``decide``). What is shared by every kind is here (attribution, identities, the ended
incarnation, ``onlyAfter``, silent services, the deadline); what a kind does its own way is its
module's ``Kind`` (``KINDS``, see ``agent.expectations``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from google.protobuf import json_format
from pydantic import BaseModel

from agent._proto.coordinator.v1 import events_pb2
from agent.expectations.base import FAILED, INCONCLUSIVE, PASSED, AuditObservation, Verdict, ts
from agent.vocabulary import PLATFORM_EVENT_TYPES

#: the instance ``hear`` is given for a platform event: the platform told of the service
PLATFORM_VOICE = "@platform"

#: identities a watch remembers; a repeat of one older than that would count again
MAX_COUNTED_IDS = 1000
#: onlyAfter: matching events kept while waiting for the gate's event
MAX_HELD = 100


class Kind:
    """One expectation kind's rules over a watch's state."""

    #: the kind's name in a watch (``appears``, ``time_to_recover``, ...)
    name = ""
    #: decided at its deadline without the event, the watch stays to report the event if it comes late
    late_evidence = False

    #: the kind's rule as a scenario writes it (the pydantic model of ``appears:``, ``count:``, ...)
    rule: type[BaseModel] | None = None

    def check(self, event: Any, only_after: str | None) -> str | None:
        """What is wrong with an expectation of this kind given what every expectation has
        (``event``: its type, service and match as the scenario wrote them; ``only_after``), or None."""
        if only_after is not None and not event.service:
            return "onlyAfter needs event.service: the event it waits for comes from that service"
        if event.type is None and event.service is None:
            return "an expectation needs event.type, event.service or both (only order lists its own event types)"
        return None

    def window(self, rule: Any) -> float:
        """Seconds after the injection by which a verdict of this rule is decided (its deadline)."""
        return float(rule.within)

    def to_message(self, rule: Any, message: events_pb2.Expectation) -> None:
        """Write ``rule`` into the expectation a chaos event carries (the fields of this kind)."""
        message.within.FromNanoseconds(int(rule.within * 1e9))

    def from_expectation(self, expectation: events_pb2.Expectation) -> tuple[float, dict[str, Any]]:
        """From an expectation as a chaos event carries it: the watch's window (seconds after the
        injection) and the watch fields only this kind sets (by default, a module's kind: its rule's
        fields as the scenario wrote them, in ``Watch.params``)."""
        own = {"params": json_format.MessageToDict(expectation.rule)} if expectation.rule.fields else {}
        return expectation.within.ToNanoseconds() / 1e9, own

    def event_types(self, rule: Mapping[str, Any]) -> set[str] | None:
        """The event types a watch of this kind can use (``rule``: its fields as stored, read without
        building it); None when it takes any type."""
        gate = {rule["gate_type"]} if rule.get("gate_type") else set()
        return {rule["event_type"]} | gate if rule.get("event_type") else None

    def awaited_types(self, watch: Watch) -> set[str]:
        """The event types whose coming this watch waits for. When one is a platform event type
        (``pod_ready``), the platform is who tells of it, and its words count as hearing from the
        service (a replacement that never becomes Ready is FAILED, not a silent service)."""
        return {watch.event_type} if watch.event_type else set()

    def waits_for_recovery(self, watch: Watch) -> bool:
        """Does the watch wait for evidence of recovery? Then what the incarnation the fault ended
        says is not counted."""
        return False

    def expects_presence(self, watch: Watch) -> bool:
        """Must something appear? Then a service silent since the injection makes it INCONCLUSIVE."""
        return False

    def matches(self, watch: Watch, event: AuditObservation) -> bool:
        """Is ``event`` one this expectation is about (its type, service and metadata)?"""
        if watch.event_type and event.event_type != watch.event_type:
            return False
        return service_and_match(watch, event)

    def take(self, watch: Watch, event: AuditObservation) -> bool | None:
        """A matching, attributed event, for a kind that judges it its own way (True when it changed
        what the watch knows); None: the shared path (ended incarnation, ``onlyAfter``, ``count``)."""
        return None

    def count(self, watch: Watch, event: AuditObservation) -> bool:
        """Count a matching event: in time, or as the first late one."""
        if event.timestamp <= watch.deadline:
            watch.count += 1
            if watch.first_seen is None or event.timestamp < watch.first_seen:
                watch.first_seen = event.timestamp
        elif watch.late_first is None or event.timestamp < watch.late_first:
            watch.late_first = event.timestamp
        return True

    def early(self, watch: Watch) -> Verdict | None:
        """A verdict certain before the deadline, from what was counted."""
        return None

    def before_deadline(self, watch: Watch, now: float, watermark: float, grace: float) -> Verdict | None:
        """A verdict certain before the deadline from the passing of time (``now``, ``watermark``)."""
        return None

    def at_deadline(self, watch: Watch) -> Verdict:
        """The verdict at the deadline (and its grace), the audit trail alive through it."""
        raise NotImplementedError

    def first_seen(self, watch: Watch) -> float | None:
        return watch.first_seen

    def took(self, watch: Watch) -> float | None:
        """The time to recover a verdict reports when it does not say otherwise."""
        return None

    def silent_reason(self, watch: Watch) -> str:
        """Added to the INCONCLUSIVE verdict of a silent service."""
        return ": a silent service cannot show it recovered"

    def expected(self, watch: Watch) -> str:
        raise NotImplementedError

    def observed(self, watch: Watch) -> str:
        seen = watch.first_seen if watch.first_seen is not None else watch.late_first
        return f"{watch.count} in time; first at {ts(seen)}" if seen is not None else "none"


#: every expectation kind a watch can have, by name (the kinds' modules register themselves)
KINDS: dict[str, Kind] = {}
_generation = 0


def register(kind: Kind) -> Kind:
    """Make ``kind`` known: to watches, and (when it has a ``rule``) to the scenario language, as the
    key ``rule``'s expectations are written under."""
    global _generation
    if not kind.name or kind.name in KINDS and type(KINDS[kind.name]) is not type(kind):
        raise ValueError(f"expectation kind {kind.name!r} is unnamed or already registered")
    KINDS[kind.name] = kind
    _generation += 1
    return kind


def unregister(name: str) -> None:
    global _generation
    KINDS.pop(name, None)
    _generation += 1


def generation() -> int:
    """Changes whenever a kind is registered or removed (the scenario model is rebuilt then)."""
    return _generation


def written() -> tuple[str, ...]:
    """The kinds a scenario can write (those with a rule), by name: the built-in ones first."""
    return tuple(name for name, kind in KINDS.items() if kind.rule is not None)


def service_and_match(watch: Watch, event: AuditObservation) -> bool:
    if watch.service and event.service != watch.service:
        return False
    return all(event.metadata.get(k) == v for k, v in watch.match.items())


@dataclass
class Watch:
    execution_id: str
    correlation_id: str
    name: str
    kind: str  # appears | absent | count | order | time_to_recover | stable | reaction (the worker's own)
    injected_at: float
    deadline: float
    target_service: str = ""
    event_type: str = ""
    service: str = ""
    match: dict[str, str] = field(default_factory=dict)
    attribution: str = "any"  # correlation-id | target-window | window | any
    min_count: int | None = None
    max_count: int | None = None
    sequence: list[str] = field(default_factory=list)
    #: the incarnation(s) of the target the fault ended (restart, kill, stop), comma-separated when it
    #: touched several containers; "" when unknown
    ended_instance: str = ""
    #: the injection's trace (hex), when the agent traces executions: an event without a correlation
    #: id of its own that is in this trace (OpenTelemetry spans and logs) is tied to the injection
    trace_id: str = ""
    #: stable: how long ``service`` must stay up after its ``since`` event, and what says it went down
    stable_for: float = 0.0
    since: str = ""
    down: list[str] = field(default_factory=list)
    #: onlyAfter: the expectation whose event opens this one (its name, event type and metadata
    #: match, from ``service``); until that event, matching events are held, not counted
    gate: str = ""
    gate_type: str = ""
    gate_match: dict[str, str] = field(default_factory=dict)
    #: the rule of a kind a module adds, as the scenario wrote it (its fields but ``within``, camelCase):
    #: the built-in kinds keep theirs in the fields above
    params: dict[str, Any] = field(default_factory=dict)
    # what has been seen
    first_seen: float | None = None
    count: int = 0
    sequence_seen: list[float] = field(default_factory=list)
    late_first: float | None = None
    decided: bool = False
    #: identities of the events counted, so that a repeated delivery is not counted again
    counted_ids: list[str] = field(default_factory=list)
    #: the first event of any type from ``service`` at or after the injection (None: silent so far)
    heard_at: float | None = None
    #: the last event from ``service`` before the injection, when the worker saw one
    heard_before: float | None = None
    #: matching events from the incarnation the fault ended, not counted as recovery; the last one's time
    old_words: int = 0
    old_words_at: float | None = None
    #: stable: when it came up (its ``since`` event), and the first ``down`` event after that
    up_at: float | None = None
    down_at: float | None = None
    down_event: str = ""
    #: decided FAILED or INCONCLUSIVE at the deadline: until when a late match is still reported
    late_until: float = 0.0
    late_status: str = ""
    #: onlyAfter: when the gate's event came (None: not yet); matching events before it (the latest
    #: MAX_HELD, to count when an earlier gate event turns up) and how many there were in all
    gate_at: float | None = None
    held: list[dict[str, Any]] = field(default_factory=list)
    held_count: int = 0

    # -- feeding ---------------------------------------------------------------------------------
    def hear(self, service: str, timestamp: float, instance: str = "") -> bool:
        """Note that ``service`` sent an audit event (any type) at ``timestamp``; True when it changed
        what this watch knows. The incarnation the fault ended does not count as the service heard.
        ``PLATFORM_VOICE`` as the instance: the platform told of the service (a platform event), which
        counts only for an expectation that waits for a platform event type (``pod_ready``, a
        ``stable`` whose ``since`` is ``pod_ready``): there the platform is the one that speaks, and
        its word on any incarnation shows it is not silent."""
        if instance == PLATFORM_VOICE:
            if not self.hears_platform():
                return False
            instance = ""
        if not self.service or service != self.service or self.ended(service, instance):
            return False
        if timestamp >= self.injected_at:
            if self.heard_at is None or timestamp < self.heard_at:
                self.heard_at = timestamp
                return True
        elif self.heard_before is None or timestamp > self.heard_before:
            self.heard_before = timestamp
            return True
        return False

    def hears_platform(self) -> bool:
        """Does this watch wait for a platform event type (so the platform's words count as hearing)?"""
        return not self.rules.awaited_types(self).isdisjoint(PLATFORM_EVENT_TYPES)

    def observe(self, event: AuditObservation, grace: float) -> bool:
        """Offer one audit event; True when it changed what this watch knows (it counted, or it was
        noted as the ended incarnation's)."""
        # the platform speaking is not the service speaking (but for a platform event type)
        self.hear(event.service, event.timestamp, PLATFORM_VOICE if event.metadata.get("platform") else event.instance)
        if self.decided:
            return False
        opened = self._open(event)
        if not self._attributed(event, grace) or not self._matches(event):
            return opened
        own = self.rules.take(self, event)
        if own is not None:
            return own
        if (self.rules.waits_for_recovery(self) and self.ended(event.service, event.instance)
                and event.timestamp >= self.injected_at):
            if not self._first_time(event):
                return False  # the same last words delivered (or replayed to this watch) again
            self.old_words += 1  # the old process's last words: not evidence that the service recovered
            self.old_words_at = max(self.old_words_at or 0.0, event.timestamp)
            return True
        if self.gate and (self.gate_at is None or event.timestamp < self.gate_at):
            return self._hold(event) or opened
        return self._take(event) or opened

    def _take(self, event: AuditObservation) -> bool:
        if event.event_id and event.event_id in self.counted_ids:
            return False  # the same event delivered again
        counted = self._count(event)
        if counted:
            self._first_time(event)
        return counted

    def _first_time(self, event: AuditObservation) -> bool:
        """Note ``event`` as counted; False when it was already (a repeated delivery or a replay)."""
        if not event.event_id:
            return True
        if event.event_id in self.counted_ids:
            return False
        self.counted_ids.append(event.event_id)
        del self.counted_ids[:-MAX_COUNTED_IDS]
        return True

    def _open(self, event: AuditObservation) -> bool:
        """onlyAfter: is this the gate's event (the earliest so far)? Then events held before it that
        come at or after it count now."""
        if (not self.gate or event.service != self.service or event.event_type != self.gate_type
                or event.metadata.get("platform") or self.ended(event.service, event.instance)
                or event.timestamp < self.injected_at
                or not all(event.metadata.get(k) == v for k, v in self.gate_match.items())):
            return False
        if self.gate_at is not None and event.timestamp >= self.gate_at:
            return False
        self.gate_at = event.timestamp
        now_open = [h for h in self.held if h["timestamp"] >= event.timestamp]
        self.held = [h for h in self.held if h["timestamp"] < event.timestamp]
        self.held_count -= len(now_open)
        for held in sorted(now_open, key=lambda h: h["timestamp"]):
            self._take(AuditObservation(**held))
        return True

    def _hold(self, event: AuditObservation) -> bool:
        """onlyAfter: a matching event before the gate's: kept (bounded), not counted."""
        if event.event_id and any(h["event_id"] == event.event_id for h in self.held):
            return False
        self.held.append(asdict(event))
        self.held_count += 1
        if len(self.held) > MAX_HELD:
            self.held.sort(key=lambda h: h["timestamp"])
            del self.held[:-MAX_HELD]
        return True

    def _count(self, event: AuditObservation) -> bool:
        return self.rules.count(self, event)

    def late_evidence(self, event: AuditObservation) -> bool:
        """Is this, for a watch that missed its deadline, the evidence that came too late? (Matching,
        after the deadline and its grace, tied to the injection by id or by the target's service.)"""
        if not self.late_until or event.timestamp <= self.deadline or not self._matches(event):
            return False
        if self.ended(event.service, event.instance) or event.metadata.get("platform"):
            return False
        victim = self.service or self.target_service
        return self._by_id(event) or (self.attribution != "correlation-id" and (not victim or event.service == victim))

    def late_message(self, at: float) -> str:
        return (f"'{self.what()}' came at {ts(at)}, {at - self.deadline:.3f}s after the deadline "
                f"{ts(self.deadline)}")

    def keep_for_late_evidence(self, verdict: Verdict, until: float) -> bool:
        """After ``verdict``: should this watch stay, to report late evidence until ``until``? Only
        recovery rules decided at their deadline without the event do."""
        if verdict.status == PASSED or not self.rules.late_evidence or self.late_first:
            return False
        self.late_until, self.late_status = until, verdict.status
        return True

    def ended(self, service: str, instance: str) -> bool:
        """Is this event from the incarnation of the target that the fault ended?"""
        return (bool(self.ended_instance) and bool(instance) and service == self.target_service
                and instance in self.ended_instance.split(","))

    def _by_id(self, event: AuditObservation) -> bool:
        """Tied to the injection by its correlation id, or, having none, by the injection's trace."""
        if event.correlation_id:
            return event.correlation_id == self.correlation_id
        return bool(self.trace_id) and event.metadata.get("trace_id") == self.trace_id

    def _attributed(self, event: AuditObservation, grace: float) -> bool:
        by_id = self._by_id(event)
        victim = self.service or self.target_service
        in_window = self.injected_at <= event.timestamp <= self.deadline + grace
        by_window = in_window and (not victim or event.service == victim)
        if self.attribution == "correlation-id":
            return by_id
        if self.attribution == "target-window":
            return by_window
        if self.attribution == "window":
            return in_window and (not self.service or event.service == self.service)
        return by_id or by_window

    def _matches(self, event: AuditObservation) -> bool:
        return self.rules.matches(self, event)

    # -- deciding --------------------------------------------------------------------------------
    def decide(self, now: float, watermark: float, grace: float) -> Verdict | None:
        """A verdict once certain. ``now`` is processing time, ``watermark`` the latest audit event
        time seen on the trail (any service)."""
        if self.decided:
            return None
        early = self.rules.early(self) or self.rules.before_deadline(self, now, watermark, grace)
        if early is not None:
            self.decided = True
            return early
        if now < self.deadline + grace:
            return None
        self.decided = True
        if watermark < self.deadline:
            return self.verdict(INCONCLUSIVE, f"the audit trail was silent: no audit event at or after the deadline "
                                              f"{ts(self.deadline)} (latest seen {ts(watermark)})")
        return self._final()

    def _final(self) -> Verdict:
        expects_presence = self.rules.expects_presence(self)
        if expects_presence and self.service and self.heard_at is None and self.late_first is None:
            before = f"the last one at {ts(self.heard_before)}" if self.heard_before else "none seen before it"
            return self._with_old_words(self.verdict(
                INCONCLUSIVE, f"no audit event from {self.service} since the injection ({before})"
                              f"{self.rules.silent_reason(self)}"))
        if self.gate and self.gate_at is None:
            # nothing came after the gate: a presence expectation is not met, an absence has nothing to judge
            status = FAILED if expects_presence else INCONCLUSIVE
            return self._with_old_words(self.verdict(
                status, f"no '{self.what()}' after '{self.gate}', which never came: no '{self.gate_type} from "
                        f"{self.service}' since the injection"))
        verdict = self.rules.at_deadline(self)
        if verdict.status == FAILED and expects_presence and self.service and self.heard_at is not None:
            verdict.reason += (f"; {self.service} did send audit events since the injection "
                               f"(the first at {ts(self.heard_at)})")
        return self._with_old_words(verdict)

    def _with_old_words(self, verdict: Verdict) -> Verdict:
        if self.held_count and verdict.status != PASSED:
            last = max(h["timestamp"] for h in self.held) if self.held else None
            when = f"{self.gate_type} at {ts(self.gate_at)}" if self.gate_at is not None else "which never came"
            verdict.reason += (f"; {self.held_count} matching event(s) came before '{self.gate}' ({when}), "
                               f"the last at {ts(last)}, and do not count")
        if self.old_words and verdict.status != PASSED:
            verdict.reason += (f"; {self.old_words} matching event(s) came from the incarnation the fault ended "
                               f"({self.target_service} {self.ended_instance}, the last at "
                               f"{ts(self.old_words_at)}) and do not count as recovery")
        return verdict

    def verdict(self, status: str, reason: str, *, took: float | None = None, seen: float | None = None) -> Verdict:
        """A verdict of this watch: ``took`` and ``seen`` when the kind's default would not say them."""
        first = seen if seen is not None else self.rules.first_seen(self)
        if took is None:
            took = self.rules.took(self)
        return Verdict(status=status, reason=reason, expected=self.rules.expected(self),
                       observed=self.rules.observed(self), first_seen_at=first, time_to_recover=took,
                       count=self.count)

    def what(self) -> str:
        parts = [self.event_type or "event"]
        if self.service:
            parts.append(f"from {self.service}")
        return " ".join(parts)

    @property
    def rules(self) -> Kind:
        """The rules of this watch's kind (``KINDS``)."""
        found = KINDS.get(self.kind)
        if found is None:
            raise ValueError(f"unknown expectation kind {self.kind!r}; known: {', '.join(sorted(KINDS))}")
        return found

    def to_dict(self) -> dict[str, Any]:
        """The watch as the judge's table keeps it (JSON): the fields that differ from their defaults,
        under ``STATE_VERSION`` (most of a watch's fields are unset, and the changelog carries every
        change)."""
        out: dict[str, Any] = {VERSION_KEY: STATE_VERSION}
        for name, default in _DEFAULTS.items():
            value = getattr(self, name)
            if default is _REQUIRED or value != default:
                out[name] = copy.deepcopy(value) if isinstance(value, list | dict) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Watch:
        """A watch from ``to_dict``'s form, or from the full form of workers before ``STATE_VERSION``."""
        version = data.get(VERSION_KEY, 0)
        if version > STATE_VERSION:
            raise ValueError(f"watch state version {version} is newer than this worker's ({STATE_VERSION}): "
                             "upgrade every worker")
        return cls(**{k: v for k, v in data.items() if k != VERSION_KEY})


#: the form of a stored watch: 0 (or none): every field; 1: the fields that differ from their defaults;
#: 2: and ``trace_id`` (a worker before it cannot read it)
STATE_VERSION = 2
VERSION_KEY = "v"
_REQUIRED = object()
_DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING
    else _REQUIRED for f in fields(Watch)}
