"""``reaction``, the worker's own (no scenario writes it): the target's service says anything at all
after the injection. PASSED when it does; INCONCLUSIVE when it stays silent ("nothing reacted")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.expectations.base import FAILED, PASSED, Verdict, ts
from agent.expectations.watch import Kind, Watch, register


class Reaction(Kind):
    name = "reaction"

    def waits_for_recovery(self, watch: Watch) -> bool:
        return True

    def expects_presence(self, watch: Watch) -> bool:
        return True

    def event_types(self, rule: Mapping[str, Any]) -> set[str] | None:
        return set()  # decided by hearing its service at all

    def silent_reason(self, watch: Watch) -> str:
        return ""

    def early(self, watch: Watch) -> Verdict | None:
        if watch.heard_at is None:
            return None
        return watch.verdict(PASSED, f"{watch.service} sent an audit event {watch.heard_at - watch.injected_at:.3f}s "
                                     f"after the injection", seen=watch.heard_at)

    def at_deadline(self, watch: Watch) -> Verdict:
        return watch.verdict(FAILED, f"no audit event from {watch.service or 'the target'} by the deadline "
                                     f"{ts(watch.deadline)}")

    def expected(self, watch: Watch) -> str:
        return f"any audit event from {watch.service} by {ts(watch.deadline)}"

    def observed(self, watch: Watch) -> str:
        return f"the first at {ts(watch.heard_at)}" if watch.heard_at is not None else "none"


KIND = register(Reaction())
