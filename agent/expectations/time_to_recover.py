"""``timeToRecover``: ``appears`` whose window is the time the service may take to recover; the
verdict reports the time it took (also when it came too late)."""

from __future__ import annotations

from typing import Any

from agent._proto.coordinator.v1 import events_pb2
from agent.expectations.appears import Appears
from agent.expectations.watch import Watch, register
from agent.fields import Duration, Strict


class TimeToRecoverRule(Strict):
    max: Duration


class TimeToRecover(Appears):
    name = "time_to_recover"
    rule = TimeToRecoverRule

    def window(self, rule: Any) -> float:
        return float(rule.max)

    def to_message(self, rule: Any, message: events_pb2.Expectation) -> None:
        message.max_time_to_recover.FromNanoseconds(int(rule.max * 1e9))

    def from_expectation(self, expectation: events_pb2.Expectation) -> tuple[float, dict[str, Any]]:
        return expectation.max_time_to_recover.ToNanoseconds() / 1e9, {}

    def expected(self, watch: Watch) -> str:
        return f"'{watch.what()}' within {watch.deadline - watch.injected_at:.3f}s of the injection"


KIND = register(TimeToRecover())
