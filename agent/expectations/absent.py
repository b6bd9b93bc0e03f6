"""``absent``: no matching event until the deadline. FAILED as soon as one comes in time; PASSED at
the deadline."""

from __future__ import annotations

from agent.expectations.base import FAILED, PASSED, Verdict, ts
from agent.expectations.watch import Kind, Watch, register
from agent.fields import Duration, Strict


class AbsentRule(Strict):
    within: Duration


class Absent(Kind):
    name = "absent"
    rule = AbsentRule

    def early(self, watch: Watch) -> Verdict | None:
        if watch.first_seen is None:
            return None
        return watch.verdict(FAILED, f"'{watch.what()}' appeared at {ts(watch.first_seen)}, "
                                     f"{watch.first_seen - watch.injected_at:.3f}s after the injection")

    def at_deadline(self, watch: Watch) -> Verdict:
        return watch.verdict(PASSED, f"no '{watch.what()}' until the deadline {ts(watch.deadline)}")

    def expected(self, watch: Watch) -> str:
        return f"no '{watch.what()}' by {ts(watch.deadline)}"


KIND = register(Absent())
