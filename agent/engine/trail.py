"""A run's trail: what it recorded in the store as it went, so that its result is the same whoever
finishes it (the agent running it, a takeover after that agent died, the reconciler, the kill switch).

The trail is one Redis hash per execution (``agent.store``, ``{p}:trail:{id}``) of protobuf values:

- ``i:{cid}``: an applied fault as its ``Injection`` (written with the lease's "injected" mark, in
  the same step, so no fault is applied and reported without it);
- ``r:{cid}``: its revert (``reverted_at``, ``final_state``, ``error``), written with the lease's
  deletion in one step by whoever reverted it, or when a revert failed;
- ``j:{n}``: the run's journal entries, in order;
- ``v:{cid}|{expectation}``: the verdicts the run received.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agent._proto.coordinator.v1 import events_pb2
from agent.store import INJECTION, JOURNAL, REVERT, VERDICT, Lease

S = events_pb2


def revert_key(correlation_id: str) -> str:
    return REVERT + correlation_id


def journal_key(index: int) -> str:
    return f"{JOURNAL}{index:06d}"


def verdict_key(correlation_id: str, expectation: str) -> str:
    return f"{VERDICT}{correlation_id}|{expectation}"


def revert(lease: Lease, kind: int, error: str = "", at: float | None = None, arrived: list[str] | None = None
           ) -> bytes:
    """A revert as the trail keeps it: the fault from its lease, when and how its revert ended
    (REVERTED or REVERT_FAILED), why, and what arrived under its selector meanwhile. It stands for
    the injection itself when the fault's agent died before noting it applied (the driver may have
    acted: the lease was reverted to be sure)."""
    record = events_pb2.Injection(correlation_id=lease.correlation_id, step_name=lease.step_name,
                                  target=lease.target, fault=lease.fault, driver=lease.driver,
                                  final_state=kind, error=error, arrived=arrived or [])  # type: ignore[arg-type]
    if lease.injected_at:
        record.injected_at.FromNanoseconds(int(lease.injected_at * 1e9))
    record.reverted_at.FromNanoseconds(int((time.time() if at is None else at) * 1e9))
    return record.SerializeToString()


@dataclass
class Trail:
    """A run's trail read back: its injections (with their reverts), journal and verdicts."""

    injections: list[events_pb2.Injection] = field(default_factory=list)
    journal: list[events_pb2.JournalEntry] = field(default_factory=list)
    verdicts: list[events_pb2.ExpectationVerdict] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: dict[str, bytes]) -> Trail:
        found = cls()
        reverts = {name.removeprefix(REVERT): value for name, value in raw.items() if name.startswith(REVERT)}
        for name in sorted(raw):
            value = raw[name]
            if name.startswith(INJECTION):
                injection = events_pb2.Injection.FromString(value)
                done = reverts.pop(name.removeprefix(INJECTION), None)
                if done is not None:
                    ended = events_pb2.Injection.FromString(done)
                    injection.reverted_at.CopyFrom(ended.reverted_at)
                    injection.final_state, injection.error = ended.final_state, ended.error
                    injection.arrived.extend(ended.arrived)
                found.injections.append(injection)
            elif name.startswith(JOURNAL):
                found.journal.append(events_pb2.JournalEntry.FromString(value))
            elif name.startswith(VERDICT):
                found.verdicts.append(events_pb2.ExpectationVerdict.FromString(value))
        # reverted, but never noted applied (its agent died between the driver call and the note)
        found.injections.extend(events_pb2.Injection.FromString(value) for value in reverts.values())
        found.injections.sort(key=lambda i: (i.injected_at.ToNanoseconds(), i.correlation_id))
        return found

    def reverted(self, correlation_id: str) -> events_pb2.Injection | None:
        """The injection ``correlation_id`` once its revert is noted, else None."""
        for injection in self.injections:
            if injection.correlation_id == correlation_id and injection.final_state != S.CHAOS_EVENT_TYPE_INJECTED:
                return injection
        return None
