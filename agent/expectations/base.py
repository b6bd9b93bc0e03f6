"""What every expectation kind shares: the audit observation offered to a watch, the verdict it
gives, and how verdicts write times and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

PASSED, FAILED, INCONCLUSIVE = "PASSED", "FAILED", "INCONCLUSIVE"


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


def describe(event: AuditObservation) -> str:
    """An event as a verdict names it: its type, and what the platform said about an exit."""
    status = event.metadata.get("exit_status")
    return f"{event.event_type} (exit status {status})" if status not in (None, "") else event.event_type


def ts(seconds: float | None) -> str:
    if seconds is None or seconds <= 0:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
