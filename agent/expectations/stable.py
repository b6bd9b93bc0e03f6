"""``stable``: after its ``since`` event the service stays up for ``stable_for`` (none of the ``down``
events). FAILED as soon as it goes down within that time; PASSED once the time has passed on the
audit trail; FAILED at the deadline when it never came up (in time to stay up by the deadline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from agent import vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.expectations.base import FAILED, PASSED, AuditObservation, Verdict, describe, ts
from agent.expectations.watch import Kind, Watch, register
from agent.fields import Duration, Strict


class StableRule(Strict):
    """The service stays up: once its ``since`` event comes (within ``within`` of the injection), none
    of its ``down`` events may follow for ``for``."""

    #: how long the service must stay up
    for_: Duration = Field(alias="for")
    #: the event that says it is up (from the incarnation the fault started, when events say which)
    since: str = "service_ready"
    #: by when ``since`` must come, after the injection
    within: Duration = 60.0
    #: events that say it went down: its process exited (a platform event), it stopped, it started again
    down: list[str] = Field(default_factory=lambda: list(vocabulary.STABLE_DOWN_DEFAULT), min_length=1)


class Stable(Kind):
    name = "stable"
    rule = StableRule

    def check(self, event: Any, only_after: str | None) -> str | None:
        if only_after is not None:
            return "a stable expectation opens with its own 'since' event: it takes no onlyAfter"
        if not event.service or event.type:
            return ("a stable expectation watches one service: give event.service, and no event.type "
                    "(stable.since and stable.down name the events)")
        return None

    def window(self, rule: Any) -> float:
        return float(rule.within + rule.for_)

    def to_message(self, rule: Any, message: events_pb2.Expectation) -> None:
        super().to_message(rule, message)
        message.stable_for.FromNanoseconds(int(rule.for_ * 1e9))
        message.since = rule.since
        message.down.extend(rule.down)

    def from_expectation(self, expectation: events_pb2.Expectation) -> tuple[float, dict[str, Any]]:
        stable_for = expectation.stable_for.ToNanoseconds() / 1e9  # up by the deadline, then that long
        return expectation.within.ToNanoseconds() / 1e9 + stable_for, {"stable_for": stable_for}

    def event_types(self, rule: Mapping[str, Any]) -> set[str] | None:
        return {rule.get("since", ""), *rule.get("down", ())}

    def expects_presence(self, watch: Watch) -> bool:
        return True

    def awaited_types(self, watch: Watch) -> set[str]:
        return {watch.since}

    def matches(self, watch: Watch, event: AuditObservation) -> bool:
        return event.service == watch.service and (event.event_type == watch.since or event.event_type in watch.down)

    def take(self, watch: Watch, event: AuditObservation) -> bool | None:
        if watch.ended(event.service, event.instance) or event.timestamp < watch.injected_at:
            return False  # the old process going down is the fault itself, not instability
        if event.event_type == watch.since and watch.up_at is None:
            if event.timestamp > watch.deadline - watch.stable_for:
                watch.late_first = event.timestamp if watch.late_first is None else min(watch.late_first,
                                                                                         event.timestamp)
                return True
            watch.up_at = event.timestamp
            return True
        if event.event_type in watch.down and watch.up_at is not None and event.timestamp >= watch.up_at:
            if event.timestamp <= watch.up_at + watch.stable_for and (watch.down_at is None or
                                                                      event.timestamp < watch.down_at):
                watch.down_at, watch.down_event = event.timestamp, describe(event)
                return True
        return False

    def early(self, watch: Watch) -> Verdict | None:
        if watch.down_at is None or watch.up_at is None:
            return None
        return watch.verdict(FAILED, f"{watch.service} went down {watch.down_at - watch.up_at:.3f}s after its "
                                     f"'{watch.since}' at {ts(watch.up_at)}: {watch.down_event} at "
                                     f"{ts(watch.down_at)}, within the {watch.stable_for:.3f}s it had to stay up",
                             took=watch.up_at - watch.injected_at, seen=watch.up_at)

    def before_deadline(self, watch: Watch, now: float, watermark: float, grace: float) -> Verdict | None:
        if watch.up_at is None or watch.down_at is not None:
            return None
        until = watch.up_at + watch.stable_for
        if now < until + grace or watermark < until:
            return None
        return watch.verdict(PASSED, f"{watch.service} stayed up for {watch.stable_for:.3f}s after its "
                                     f"'{watch.since}' at {ts(watch.up_at)}",
                             took=watch.up_at - watch.injected_at, seen=watch.up_at)

    def at_deadline(self, watch: Watch) -> Verdict:
        came = (f"; it came at {ts(watch.late_first)}, too late to stay up {watch.stable_for:.3f}s by the deadline"
                if watch.late_first is not None else "")
        return watch.verdict(FAILED, f"{watch.service} never came up: no '{watch.since}' from it within "
                                     f"{watch.deadline - watch.stable_for - watch.injected_at:.3f}s of the "
                                     f"injection{came}")

    def expected(self, watch: Watch) -> str:
        return (f"'{watch.since}' from {watch.service}, then none of {', '.join(watch.down)} for "
                f"{watch.stable_for:.3f}s")

    def observed(self, watch: Watch) -> str:
        if watch.up_at is None:
            return "never up"
        return f"up at {ts(watch.up_at)}" + (f"; {watch.down_event} at {ts(watch.down_at)}" if watch.down_at else "")


KIND = register(Stable())
