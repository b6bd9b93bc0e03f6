"""``appears``: a matching event must come by the deadline. PASSED as soon as one comes in time;
FAILED at the deadline, naming the late one if it came after."""

from __future__ import annotations

from pydantic import BaseModel

from agent.expectations.base import FAILED, PASSED, Verdict, ts
from agent.expectations.watch import Kind, Watch, register
from agent.fields import Duration, Strict


class AppearsRule(Strict):
    within: Duration


class Appears(Kind):
    name = "appears"
    rule: type[BaseModel] | None = AppearsRule
    late_evidence = True

    def waits_for_recovery(self, watch: Watch) -> bool:
        return True

    def expects_presence(self, watch: Watch) -> bool:
        return True

    def took(self, watch: Watch) -> float | None:
        return watch.first_seen - watch.injected_at if watch.first_seen is not None else None

    def early(self, watch: Watch) -> Verdict | None:
        if watch.first_seen is None:
            return None
        took = watch.first_seen - watch.injected_at
        return watch.verdict(PASSED, f"'{watch.what()}' appeared {took:.3f}s after the injection", took=took)

    def at_deadline(self, watch: Watch) -> Verdict:
        if watch.late_first is not None:
            took = watch.late_first - watch.injected_at
            return watch.verdict(FAILED, f"'{watch.what()}' appeared at {ts(watch.late_first)}, {took:.3f}s after "
                                         f"the injection: after the deadline {ts(watch.deadline)}",
                                 took=took, seen=watch.late_first)
        return watch.verdict(FAILED, f"no '{watch.what()}' by the deadline {ts(watch.deadline)}")

    def expected(self, watch: Watch) -> str:
        return f"'{watch.what()}' by {ts(watch.deadline)}"


KIND = register(Appears())
