"""``count``: between ``min`` and ``max`` matching events by the deadline. FAILED as soon as ``max``
is exceeded; at the deadline PASSED when ``min`` is reached, else FAILED. A count with only a minimum
waits for recovery (the ended incarnation's events do not count)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from agent._proto.coordinator.v1 import events_pb2
from agent.expectations.base import FAILED, PASSED, Verdict, ts
from agent.expectations.watch import Kind, Watch, register
from agent.fields import Duration, Strict


class CountRule(Strict):
    within: Duration
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> CountRule:
        if self.min is None and self.max is None:
            raise ValueError("a count needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"count min {self.min} is above max {self.max}")
        return self


class Count(Kind):
    name = "count"
    rule = CountRule

    def to_message(self, rule: Any, message: events_pb2.Expectation) -> None:
        super().to_message(rule, message)
        message.min_count = rule.min if rule.min is not None else 0
        message.max_count = rule.max if rule.max is not None else -1  # -1: no maximum

    def from_expectation(self, expectation: events_pb2.Expectation) -> tuple[float, dict[str, Any]]:
        return expectation.within.ToNanoseconds() / 1e9, {"min_count": expectation.min_count,
                                                           "max_count": expectation.max_count}

    def waits_for_recovery(self, watch: Watch) -> bool:
        return bool(watch.min_count) and watch.max_count is None

    def expects_presence(self, watch: Watch) -> bool:
        return bool(watch.min_count)

    def early(self, watch: Watch) -> Verdict | None:
        if watch.max_count is not None and watch.max_count >= 0 and watch.count > watch.max_count:
            return watch.verdict(FAILED, f"'{watch.what()}' appeared {watch.count} times, more than {watch.max_count}")
        return None

    def at_deadline(self, watch: Watch) -> Verdict:
        if watch.min_count is not None and watch.count < watch.min_count:
            return watch.verdict(FAILED, f"'{watch.what()}' appeared {watch.count} times, fewer than {watch.min_count}")
        return watch.verdict(PASSED, f"'{watch.what()}' appeared {watch.count} times")

    def expected(self, watch: Watch) -> str:
        most = "any" if watch.max_count is None or watch.max_count < 0 else watch.max_count
        return f"'{watch.what()}' between {watch.min_count} and {most} times by {ts(watch.deadline)}"


KIND = register(Count())
