"""``order``: the event types of ``sequence`` in that order by the deadline. PASSED when the sequence
completes; FAILED at the deadline with how far it got."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from agent._proto.coordinator.v1 import events_pb2
from agent.expectations.base import FAILED, PASSED, AuditObservation, Verdict, ts
from agent.expectations.watch import Kind, Watch, register, service_and_match
from agent.fields import Duration, Strict


class OrderRule(Strict):
    #: event types that must appear in this order
    events: list[str] = Field(min_length=2)
    within: Duration


class Order(Kind):
    name = "order"
    rule = OrderRule

    def check(self, event: Any, only_after: str | None) -> str | None:
        if only_after is not None and not event.service:
            return "onlyAfter needs event.service: the event it waits for comes from that service"
        if not event.service:
            return "an order expectation needs event.service (whose events must come in order)"
        return None

    def to_message(self, rule: Any, message: events_pb2.Expectation) -> None:
        super().to_message(rule, message)
        message.sequence.extend(rule.events)

    def waits_for_recovery(self, watch: Watch) -> bool:
        return True

    def expects_presence(self, watch: Watch) -> bool:
        return True

    def event_types(self, rule: Mapping[str, Any]) -> set[str] | None:
        return set(rule.get("sequence", ())) | ({rule["gate_type"]} if rule.get("gate_type") else set())

    def awaited_types(self, watch: Watch) -> set[str]:
        return set(watch.sequence)

    def matches(self, watch: Watch, event: AuditObservation) -> bool:
        return event.event_type in watch.sequence and service_and_match(watch, event)

    def count(self, watch: Watch, event: AuditObservation) -> bool:
        position = len(watch.sequence_seen)
        if (event.timestamp <= watch.deadline and position < len(watch.sequence)
                and event.event_type == watch.sequence[position]):
            watch.sequence_seen.append(event.timestamp)
            return True
        return False

    def first_seen(self, watch: Watch) -> float | None:
        return watch.sequence_seen[0] if watch.sequence_seen else None

    def early(self, watch: Watch) -> Verdict | None:
        if len(watch.sequence_seen) < len(watch.sequence):
            return None
        return watch.verdict(PASSED, f"{' -> '.join(watch.sequence)} in order, the last "
                                     f"{watch.sequence_seen[-1] - watch.injected_at:.3f}s after the injection")

    def at_deadline(self, watch: Watch) -> Verdict:
        got = len(watch.sequence_seen)
        return watch.verdict(FAILED, f"the sequence stopped after {got} of {len(watch.sequence)}: "
                                     f"{' -> '.join(watch.sequence[:got]) or 'nothing'} by the deadline")

    def expected(self, watch: Watch) -> str:
        return f"{' -> '.join(watch.sequence)} in order by {ts(watch.deadline)}"

    def observed(self, watch: Watch) -> str:
        return f"{len(watch.sequence_seen)} of {len(watch.sequence)} in order"


KIND = register(Order())
