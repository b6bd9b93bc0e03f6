"""Prometheus metrics of the agent (``/metrics``). No execution or correlation ids as labels."""

from __future__ import annotations

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


def render() -> bytes:
    return generate_latest(REGISTRY)


__all__ = ["CONTENT_TYPE", "REGISTRY", "render"]
