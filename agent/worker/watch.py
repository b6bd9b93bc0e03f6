"""Deciding one expectation of one injection from audit events: pure logic, no Kafka.

A *watch* follows one expectation after one injection. Audit events are offered to it
(``observe``); it answers with a verdict as soon as one is certain (``decide``):

=================  ===================================  ============================================
rule               decided early                        decided at deadline + grace
=================  ===================================  ============================================
appears            PASSED on a match by the deadline    FAILED (with the late match, if any)
time-to-recover    PASSED on a match by ``max``         FAILED, with the time it took if it came
absent             FAILED on a match by the deadline    PASSED
count              FAILED once ``max`` is exceeded      PASSED when ``min`` is reached, else FAILED
order              PASSED when the sequence completes   FAILED with how far the sequence got
=================  ===================================  ============================================

Everything is judged on event time (the audit event's own timestamp); the grace period waits,
in processing time, for late events. A verdict that needs the audit trail to have been alive
through the deadline (every verdict decided at the deadline) is INCONCLUSIVE instead when no
audit event at or after the deadline has been seen at all: silence proves nothing.

Attribution: ``correlation-id`` counts events that carry the injection's id; ``target-window``
counts events from the expectation's service (or the fault's target service) stamped inside the
window [injection, deadline + grace]; ``window`` counts events from any service (or the
expectation's service) inside that window; ``any`` counts what ``correlation-id`` or
``target-window`` counts. Overlapping faults on one target
share its events under ``target-window``: each watch counts them (see docs/correlation.md).

Identity: audit trails are at least once, so one event may arrive twice. An event that carries an
identity (its CloudEvents ``source`` and ``id``: see ``agent.worker.app.row_from``) counts once per
watch, whatever the expectation kind: each watch keeps the identities it has counted (the last
``MAX_COUNTED_IDS``) and ignores repeats. Events without an id are counted as they come.

Sequencing (``onlyAfter``): a watch may count only what comes after the event another expectation
of the same injection waits for (its type and match, from the same service): "risk reports resume"
only after "ready again", so that a report the stopping process sent is not taken for recovery when
events carry no incarnation. Matching events before that event are held (the last ``MAX_HELD``),
counted if an earlier gate event turns up, and named in a verdict that does not pass. When the gate
event never came, an expectation of presence FAILS (nothing came after it) and one of absence is
INCONCLUSIVE (there was nothing after it to judge).

Silent targets: a watch that names a service notes whether that service sent any audit event at
all since the injection (``hear``). An expectation of presence (appears, time to recover, a count
with a minimum, order) that is not met is INCONCLUSIVE when the service was silent ("no audit event
from X since the injection"), and FAILED, saying the service did send other events, when it was not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

PASSED, FAILED, INCONCLUSIVE = "PASSED", "FAILED", "INCONCLUSIVE"
#: identities a watch remembers; a repeat of one older than that would count again
MAX_COUNTED_IDS = 1000
#: onlyAfter: matching events kept while waiting for the gate's event
MAX_HELD = 100


@dataclass(frozen=True)
class AuditObservation:
    service: str
    event_type: str
    timestamp: float
    correlation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    #: "source#id" of the event, "" when it has none (then every delivery counts)
    event_id: str = ""
    #: the emitting incarnation (a pid under supervisord), "" when the event does not say
    instance: str = ""


@dataclass
class Verdict:
    status: str
    reason: str
    expected: str
    observed: str
    first_seen_at: float | None = None
    time_to_recover: float | None = None
    count: int = 0


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
    #: stable: how long ``service`` must stay up after its ``since`` event, and what says it went down
    stable_for: float = 0.0
    since: str = ""
    down: list[str] = field(default_factory=list)
    #: onlyAfter: the expectation whose event opens this one (its name, event type and metadata
    #: match, from ``service``); until that event, matching events are held, not counted
    gate: str = ""
    gate_type: str = ""
    gate_match: dict[str, str] = field(default_factory=dict)
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
        what this watch knows. The incarnation the fault ended does not count as the service heard."""
        if not self.service or service != self.service or self._ended(service, instance):
            return False
        if timestamp >= self.injected_at:
            if self.heard_at is None or timestamp < self.heard_at:
                self.heard_at = timestamp
                return True
        elif self.heard_before is None or timestamp > self.heard_before:
            self.heard_before = timestamp
            return True
        return False

    def observe(self, event: AuditObservation, grace: float) -> bool:
        """Offer one audit event; True when it changed what this watch knows (it counted, or it was
        noted as the ended incarnation's)."""
        if not event.metadata.get("platform"):  # the platform speaking is not the service speaking
            self.hear(event.service, event.timestamp, event.instance)
        if self.decided:
            return False
        opened = self._open(event)
        if not self._attributed(event, grace) or not self._matches(event):
            return opened
        if self.kind == "stable":
            return self._stability(event)
        if self._recovery() and self._ended(event.service, event.instance) and event.timestamp >= self.injected_at:
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
                or event.metadata.get("platform") or self._ended(event.service, event.instance)
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
        in_time = event.timestamp <= self.deadline
        if self.kind == "order":
            position = len(self.sequence_seen)
            if in_time and position < len(self.sequence) and event.event_type == self.sequence[position]:
                self.sequence_seen.append(event.timestamp)
                return True
            return False
        if in_time:
            self.count += 1
            if self.first_seen is None or event.timestamp < self.first_seen:
                self.first_seen = event.timestamp
        elif self.late_first is None or event.timestamp < self.late_first:
            self.late_first = event.timestamp
        return True

    def late_evidence(self, event: AuditObservation) -> bool:
        """Is this, for a watch that missed its deadline, the evidence that came too late? (Matching,
        after the deadline and its grace, tied to the injection by id or by the target's service.)"""
        if not self.late_until or event.timestamp <= self.deadline or not self._matches(event):
            return False
        if self._ended(event.service, event.instance) or event.metadata.get("platform"):
            return False
        by_id = bool(event.correlation_id) and event.correlation_id == self.correlation_id
        victim = self.service or self.target_service
        return by_id or (self.attribution != "correlation-id" and (not victim or event.service == victim))

    def late_message(self, at: float) -> str:
        return (f"'{self._what()}' came at {_ts(at)}, {at - self.deadline:.3f}s after the deadline "
                f"{_ts(self.deadline)}")

    def keep_for_late_evidence(self, verdict: Verdict, until: float) -> bool:
        """After ``verdict``: should this watch stay, to report late evidence until ``until``? Only
        recovery rules decided at their deadline without the event do."""
        if verdict.status == PASSED or self.kind not in {"appears", "time_to_recover"} or self.late_first:
            return False
        self.late_until, self.late_status = until, verdict.status
        return True

    def _stability(self, event: AuditObservation) -> bool:
        if self._ended(event.service, event.instance) or event.timestamp < self.injected_at:
            return False  # the old process going down is the fault itself, not instability
        if event.event_type == self.since and self.up_at is None:
            if event.timestamp > self.deadline - self.stable_for:
                self.late_first = event.timestamp if self.late_first is None else min(self.late_first, event.timestamp)
                return True
            self.up_at = event.timestamp
            return True
        if event.event_type in self.down and self.up_at is not None and event.timestamp >= self.up_at:
            if event.timestamp <= self.up_at + self.stable_for and (self.down_at is None or
                                                                    event.timestamp < self.down_at):
                self.down_at, self.down_event = event.timestamp, _describe(event)
                return True
        return False

    def _recovery(self) -> bool:
        """Does this watch wait for evidence of recovery (something must appear)?"""
        return self.kind in {"appears", "time_to_recover", "order", "reaction"} or (
            self.kind == "count" and bool(self.min_count) and self.max_count is None)

    def _ended(self, service: str, instance: str) -> bool:
        """Is this event from the incarnation of the target that the fault ended?"""
        return (bool(self.ended_instance) and bool(instance) and service == self.target_service
                and instance in self.ended_instance.split(","))

    def _attributed(self, event: AuditObservation, grace: float) -> bool:
        by_id = bool(event.correlation_id) and event.correlation_id == self.correlation_id
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
        if self.kind == "stable":
            return event.service == self.service and (event.event_type == self.since or event.event_type in self.down)
        if self.kind != "order" and self.event_type and event.event_type != self.event_type:
            return False
        if self.kind == "order" and event.event_type not in self.sequence:
            return False
        if self.service and event.service != self.service:
            return False
        return all(event.metadata.get(k) == v for k, v in self.match.items())

    # -- deciding --------------------------------------------------------------------------------
    def decide(self, now: float, watermark: float, grace: float) -> Verdict | None:
        """A verdict once certain. ``now`` is processing time, ``watermark`` the latest audit event
        time seen on the trail (any service)."""
        if self.decided:
            return None
        early = self._early()
        if early is not None:
            self.decided = True
            return early
        if self.kind == "stable" and self.up_at is not None and self.down_at is None:
            until = self.up_at + self.stable_for
            if now >= until + grace and watermark >= until:
                self.decided = True
                return self._verdict(PASSED, f"{self.service} stayed up for {self.stable_for:.3f}s after its "
                                             f"'{self.since}' at {_ts(self.up_at)}",
                                     took=self.up_at - self.injected_at, seen=self.up_at)
        if now < self.deadline + grace:
            return None
        self.decided = True
        if watermark < self.deadline:
            return self._verdict(INCONCLUSIVE, f"the audit trail was silent: no audit event at or after the deadline "
                                               f"{_ts(self.deadline)} (latest seen {_ts(watermark)})")
        return self._final()

    def _early(self) -> Verdict | None:
        if self.kind == "reaction" and self.heard_at is not None:
            return self._verdict(PASSED, f"{self.service} sent an audit event {self.heard_at - self.injected_at:.3f}s "
                                         f"after the injection", seen=self.heard_at)
        if self.kind in {"appears", "time_to_recover"} and self.first_seen is not None:
            took = self.first_seen - self.injected_at
            return self._verdict(PASSED, f"'{self._what()}' appeared {took:.3f}s after the injection", took=took)
        if self.kind == "absent" and self.first_seen is not None:
            return self._verdict(FAILED, f"'{self._what()}' appeared at {_ts(self.first_seen)}, "
                                         f"{self.first_seen - self.injected_at:.3f}s after the injection")
        if self.kind == "count" and self.max_count is not None and self.max_count >= 0 and self.count > self.max_count:
            return self._verdict(FAILED, f"'{self._what()}' appeared {self.count} times, more than {self.max_count}")
        if self.kind == "stable" and self.down_at is not None and self.up_at is not None:
            return self._verdict(FAILED, f"{self.service} went down {self.down_at - self.up_at:.3f}s after its "
                                         f"'{self.since}' at {_ts(self.up_at)}: {self.down_event} at "
                                         f"{_ts(self.down_at)}, within the {self.stable_for:.3f}s it had to stay up",
                                 took=self.up_at - self.injected_at, seen=self.up_at)
        if self.kind == "order" and len(self.sequence_seen) == len(self.sequence):
            return self._verdict(PASSED, f"{' -> '.join(self.sequence)} in order, the last "
                                         f"{self.sequence_seen[-1] - self.injected_at:.3f}s after the injection")
        return None

    def _final(self) -> Verdict:
        expects_presence = self.kind in {"appears", "time_to_recover", "order", "stable", "reaction"} or (
            self.kind == "count" and bool(self.min_count))
        if expects_presence and self.service and self.heard_at is None and self.late_first is None:
            before = f"the last one at {_ts(self.heard_before)}" if self.heard_before else "none seen before it"
            why = "" if self.kind == "reaction" else ": a silent service cannot show it recovered"
            return self._with_old_words(self._verdict(
                INCONCLUSIVE, f"no audit event from {self.service} since the injection ({before}){why}"))
        if self.gate and self.gate_at is None:
            # nothing came after the gate: a presence expectation is not met, an absence has nothing to judge
            status = FAILED if expects_presence else INCONCLUSIVE
            return self._with_old_words(self._verdict(
                status, f"no '{self._what()}' after '{self.gate}', which never came: no '{self.gate_type} from "
                        f"{self.service}' since the injection"))
        verdict = self._decided_at_deadline()
        if verdict.status == FAILED and expects_presence and self.service and self.heard_at is not None:
            verdict.reason += (f"; {self.service} did send audit events since the injection "
                               f"(the first at {_ts(self.heard_at)})")
        return self._with_old_words(verdict)

    def _with_old_words(self, verdict: Verdict) -> Verdict:
        if self.held_count and verdict.status != PASSED:
            last = max(h["timestamp"] for h in self.held) if self.held else None
            when = f"{self.gate_type} at {_ts(self.gate_at)}" if self.gate_at is not None else "which never came"
            verdict.reason += (f"; {self.held_count} matching event(s) came before '{self.gate}' ({when}), "
                               f"the last at {_ts(last)}, and do not count")
        if self.old_words and verdict.status != PASSED:
            verdict.reason += (f"; {self.old_words} matching event(s) came from the incarnation the fault ended "
                               f"({self.target_service} {self.ended_instance}, the last at "
                               f"{_ts(self.old_words_at)}) and do not count as recovery")
        return verdict

    def _decided_at_deadline(self) -> Verdict:
        what = self._what()
        if self.kind in {"appears", "time_to_recover"}:
            if self.late_first is not None:
                took = self.late_first - self.injected_at
                return self._verdict(FAILED, f"'{what}' appeared at {_ts(self.late_first)}, {took:.3f}s after the "
                                             f"injection: after the deadline {_ts(self.deadline)}",
                                     took=took, seen=self.late_first)
            return self._verdict(FAILED, f"no '{what}' by the deadline {_ts(self.deadline)}")
        if self.kind == "absent":
            return self._verdict(PASSED, f"no '{what}' until the deadline {_ts(self.deadline)}")
        if self.kind == "count":
            if self.min_count is not None and self.count < self.min_count:
                return self._verdict(FAILED, f"'{what}' appeared {self.count} times, fewer than {self.min_count}")
            return self._verdict(PASSED, f"'{what}' appeared {self.count} times")
        if self.kind == "stable":
            came = (f"; it came at {_ts(self.late_first)}, too late to stay up {self.stable_for:.3f}s by the deadline"
                    if self.late_first is not None else "")
            return self._verdict(FAILED, f"{self.service} never came up: no '{self.since}' from it within "
                                         f"{self.deadline - self.stable_for - self.injected_at:.3f}s of the "
                                         f"injection{came}")
        got = len(self.sequence_seen)
        return self._verdict(FAILED, f"the sequence stopped after {got} of {len(self.sequence)}: "
                                     f"{' -> '.join(self.sequence[:got]) or 'nothing'} by the deadline")

    def _verdict(self, status: str, reason: str, *, took: float | None = None, seen: float | None = None) -> Verdict:
        first = seen if seen is not None else (self.first_seen if self.kind != "order" else
                                               (self.sequence_seen[0] if self.sequence_seen else None))
        if took is None and self.kind in {"appears", "time_to_recover"} and self.first_seen is not None:
            took = self.first_seen - self.injected_at
        return Verdict(status=status, reason=reason, expected=self._expected(), observed=self._observed(),
                       first_seen_at=first, time_to_recover=took, count=self.count)

    def _what(self) -> str:
        parts = [self.event_type or "event"]
        if self.service:
            parts.append(f"from {self.service}")
        return " ".join(parts)

    def _expected(self) -> str:
        by = f"by {_ts(self.deadline)}"
        return {
            "appears": f"'{self._what()}' {by}",
            "time_to_recover": f"'{self._what()}' within {self.deadline - self.injected_at:.3f}s of the injection",
            "absent": f"no '{self._what()}' {by}",
            "count": f"'{self._what()}' between {self.min_count} and "
                     f"{'any' if self.max_count is None or self.max_count < 0 else self.max_count} times {by}",
            "order": f"{' -> '.join(self.sequence)} in order {by}",
            "stable": f"'{self.since}' from {self.service}, then none of {', '.join(self.down)} for "
                      f"{self.stable_for:.3f}s",
            "reaction": f"any audit event from {self.service} {by}",
        }[self.kind]

    def _observed(self) -> str:
        if self.kind == "reaction":
            return f"the first at {_ts(self.heard_at)}" if self.heard_at is not None else "none"
        if self.kind == "stable":
            if self.up_at is None:
                return "never up"
            return f"up at {_ts(self.up_at)}" + (f"; {self.down_event} at {_ts(self.down_at)}" if self.down_at else "")
        if self.kind == "order":
            return f"{len(self.sequence_seen)} of {len(self.sequence)} in order"
        seen = self.first_seen if self.first_seen is not None else self.late_first
        return f"{self.count} in time; first at {_ts(seen)}" if seen is not None else "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Watch:
        return cls(**data)


def _describe(event: AuditObservation) -> str:
    """An event as a verdict names it: its type, and what the platform said about an exit."""
    status = event.metadata.get("exit_status")
    return f"{event.event_type} (exit status {status})" if status not in (None, "") else event.event_type


def _ts(seconds: float | None) -> str:
    if seconds is None or seconds <= 0:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
