"""Prometheus metrics of the agent (``/metrics``). No execution or correlation ids as labels."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: N811
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "coordinator"

BUILD_INFO = Gauge(f"{PREFIX}_build_info", "Agent version", ["version"], registry=REGISTRY)
BUILD_INFO.labels(version=__version__).set(1)

READY_CHECKS = Counter(
    f"{PREFIX}_ready_checks_total", "Readiness checks by dependency and outcome", ["check", "outcome"],
    registry=REGISTRY,
)
READY_CHECK_SECONDS = Histogram(
    f"{PREFIX}_ready_check_seconds", "Time a readiness check took", ["check"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0),
)
HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests_total", "HTTP requests by route and status", ["route", "status"],
    registry=REGISTRY,
)

EXECUTIONS = Counter(f"{PREFIX}_executions_total", "Executions by final status", ["status"], registry=REGISTRY)
INJECTIONS = Counter(f"{PREFIX}_injections_total", "Fault injections by fault and outcome", ["fault", "outcome"],
                     registry=REGISTRY)
REVERTS = Counter(f"{PREFIX}_reverts_total", "Fault reverts by outcome (reverted, failed)", ["outcome"],
                  registry=REGISTRY)
ACTIVE_EXECUTIONS = Gauge(f"{PREFIX}_active_executions", "Executions running now", registry=REGISTRY)
ACTIVE_FAULTS = Gauge(f"{PREFIX}_active_faults", "Faults applied by this agent and not yet reverted",
                      registry=REGISTRY)
FIRST_FAULT_SECONDS = Histogram(
    f"{PREFIX}_request_to_first_fault_seconds", "From a request's record time to its first injection",
    registry=REGISTRY, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RUN_SECONDS = Histogram(
    f"{PREFIX}_execution_duration_seconds", "Execution duration", registry=REGISTRY,
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
)
VERDICTS = Counter(f"{PREFIX}_verdicts_total", "Expectation verdicts by scenario and status",
                   ["scenario", "status"], registry=REGISTRY)
TIME_TO_RECOVER = Histogram(
    f"{PREFIX}_time_to_recover_seconds", "From an injection to the recovery its expectation saw",
    ["scenario", "expectation"], registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
)
RESILIENCE_SCORE = Gauge(
    f"{PREFIX}_resilience_score", "Share of expectation verdicts PASSED over a scenario's recent runs (0..1)",
    ["scenario"], registry=REGISTRY)
TARGET_RESILIENCE_SCORE = Gauge(
    f"{PREFIX}_target_resilience_score",
    "Share of expectation verdicts PASSED over a scenario's recent runs, per target of the fault they followed",
    ["scenario", "target"], registry=REGISTRY)
SCHEDULE_TICKS = Counter(f"{PREFIX}_schedule_ticks_total", "Schedule ticks this agent claimed, fired or skipped",
                         ["schedule", "outcome"], registry=REGISTRY)
REQUESTS = Counter(f"{PREFIX}_requests_total", "Scenario requests by outcome (accepted, duplicate, rejected)",
                   ["outcome"], registry=REGISTRY)
DEPENDENCY_UP = Gauge(f"{PREFIX}_dependency_up", "1 while the agent reaches a dependency, 0 during an outage",
                      ["dependency"], registry=REGISTRY)
DEPENDENCY_OUTAGES = Counter(f"{PREFIX}_dependency_outages_total", "Outages of a dependency the agent rode out",
                             ["dependency"], registry=REGISTRY)
DEPENDENCY_ERRORS = Counter(f"{PREFIX}_dependency_errors_total", "Calls to a dependency that failed and were retried",
                            ["dependency"], registry=REGISTRY)
PART_RESTARTS = Counter(f"{PREFIX}_part_restarts_total", "Parts of the agent restarted after a failure", ["part"],
                        registry=REGISTRY)
DEAD_LETTER_FAILURES = Counter(f"{PREFIX}_dead_letter_failures_total",
                               "Records that could not be dead-lettered after every retry (logged, skipped)",
                               registry=REGISTRY)
STUCK_LEASES = Gauge(f"{PREFIX}_unrevertable_leases", "Leases whose revert keeps failing (retried with back-off)",
                     registry=REGISTRY)
LOG_LINES_SUPPRESSED = Counter(f"{PREFIX}_log_lines_suppressed_total",
                               "Repeated library log lines held back (one of each kind per 30 s is written)",
                               ["logger"], registry=REGISTRY)
FENCED_OUT = Counter(f"{PREFIX}_fenced_out_total", "Executions this agent stopped because another agent took them",
                     registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)


__all__ = ["CONTENT_TYPE", "REGISTRY", "render"]


# -- the stream worker's own (GET /metrics on COORDINATOR_WORKER_METRICS_PORT) ----------------------
WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
WORKER_EVENTS = Counter(f"{PREFIX}_worker_events_total", "Events the worker judged, by where they came from "
                        "(audit, otlp_logs, otlp_spans)", ["source"], registry=WORKER_REGISTRY)
WORKER_DEAD_LETTERS = Counter(f"{PREFIX}_worker_dead_letters_total", "Records the worker dead-lettered, by reason",
                              ["reason"], registry=WORKER_REGISTRY)
WORKER_VERDICTS = Counter(f"{PREFIX}_worker_verdicts_total", "Verdicts the worker decided, by status", ["status"],
                          registry=WORKER_REGISTRY)
WORKER_VERDICT_SECONDS = Histogram(
    f"{PREFIX}_worker_verdict_seconds", "From fetching the deciding event to publishing its verdict",
    registry=WORKER_REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def set_scores(figures: Any) -> None:
    """The resilience scores of one scenario's recent runs (``agent.history.Figures``)."""
    if figures.score is not None:
        RESILIENCE_SCORE.labels(scenario=figures.scenario).set(figures.score)
    for target, score in figures.targets.items():
        TARGET_RESILIENCE_SCORE.labels(scenario=figures.scenario, target=target).set(score)
