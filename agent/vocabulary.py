"""The event vocabulary, once: status, verdict and chaos-event names, expectation kinds and
attributions, and which statuses end a run.

The protobuf enums (``proto/coordinator/v1/events.proto``) are the wire form; the short names here
(``PASSED``, ``appears``, ``target-window``) are what the scenario language, Redis records, the
CLI, reports and metrics labels use. Engine, worker, API, CLI and reports convert through these
functions rather than rebuilding names from enum prefixes.
"""

from __future__ import annotations

from agent._proto.coordinator.v1 import events_pb2 as S

#: scenario expectation kind -> wire enum
EXPECTATION_KINDS: dict[str, int] = {
    "appears": S.EXPECTATION_KIND_APPEARS, "absent": S.EXPECTATION_KIND_ABSENT, "count": S.EXPECTATION_KIND_COUNT,
    "order": S.EXPECTATION_KIND_ORDER, "time_to_recover": S.EXPECTATION_KIND_TIME_TO_RECOVER,
    "stable": S.EXPECTATION_KIND_STABLE,
}
EXPECTATION_KIND_NAMES: dict[int, str] = {v: k for k, v in EXPECTATION_KINDS.items()}

#: scenario attribution -> wire enum; an unspecified attribution reads as "any"
ATTRIBUTIONS: dict[str, int] = {
    "correlation-id": S.ATTRIBUTION_CORRELATION_ID, "target-window": S.ATTRIBUTION_TARGET_WINDOW,
    "any": S.ATTRIBUTION_ANY, "window": S.ATTRIBUTION_WINDOW,
}
ATTRIBUTION_NAMES: dict[int, str] = {**{v: k for k, v in ATTRIBUTIONS.items()}, S.ATTRIBUTION_UNSPECIFIED: "any"}

#: the expectation name of the worker's verdict on whether the target reacted to an injection at all
#: (any audit event from its service after it); scenario names cannot start with '@'
REACTION = "@reaction"

#: audit event types the agent itself publishes about a target's platform (agent.platform)
PLATFORM_EVENT_TYPES = ("process_started", "process_exited", "pod_ready", "pod_not_ready")
#: what ends a ``stable`` period by default: the process died, stopped or started again
STABLE_DOWN_DEFAULT = ("process_exited", "service_stopping", "service_started")

#: statuses after which a run changes no more
TERMINAL = frozenset({"PASSED", "FAILED", "ERROR", "ABORTED", "TIMED_OUT", "REJECTED"})


def _short(enum: object, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)  # type: ignore[attr-defined]
    except ValueError:
        return f"UNKNOWN({value})"


def status_name(value: int) -> str:
    """``EXECUTION_STATUS_TIMED_OUT`` -> ``"TIMED_OUT"``."""
    return _short(S.ExecutionStatus, value, "EXECUTION_STATUS_")


def status_value(name: str) -> int:
    """``"TIMED_OUT"`` -> ``EXECUTION_STATUS_TIMED_OUT``; ``ValueError`` for an unknown name."""
    return int(S.ExecutionStatus.Value(f"EXECUTION_STATUS_{name}"))


def is_terminal(status: int | str) -> bool:
    """Has the run ended? Accepts the wire enum or the short name."""
    return (status_name(status) if isinstance(status, int) else status) in TERMINAL


def verdict_name(value: int) -> str:
    return _short(S.VerdictStatus, value, "VERDICT_STATUS_")


def verdict_value(name: str) -> int:
    return int(S.VerdictStatus.Value(f"VERDICT_STATUS_{name}"))


def chaos_type_name(value: int) -> str:
    """``CHAOS_EVENT_TYPE_REVERT_FAILED`` -> ``"REVERT_FAILED"``."""
    return _short(S.ChaosEventType, value, "CHAOS_EVENT_TYPE_")
