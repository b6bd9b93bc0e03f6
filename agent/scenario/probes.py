"""Steady-state probes and tolerances (Chaos Toolkit's hypothesis, Litmus's modes and comparators).

A probe observes one thing (gRPC health, an HTTP endpoint, a Kafka topic or consumer lag, a Redis
key, a Prometheus query); its tolerance (``agent.tolerance``) says which observations are fine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent.scenario.base import Duration, Strict
from agent.tolerance import Tolerance, exactly_one

__all__ = ["PROBE_KINDS", "Probe", "ProbeMode", "SteadyState", "Tolerance", "exactly_one"]

ProbeMode = Literal["SOT", "EOT", "Edge", "Continuous", "OnChaos"]


class GrpcHealthProbe(Strict):
    target: str
    #: the service name asked of grpc.health.v1 ("" is the whole server)
    service: str = ""


class HttpProbe(Strict):
    target: str | None = None
    url: str | None = None
    path: str = "/api/v1/health"
    method: Literal["GET", "HEAD"] = "GET"

    @model_validator(mode="after")
    def _where(self) -> HttpProbe:
        if (self.target is None) == (self.url is None):
            raise ValueError("an http probe needs exactly one of target, url")
        return self


class KafkaTopicProbe(Strict):
    topic: str


class KafkaLagProbe(Strict):
    group: str
    topic: str | None = None


class RedisKeyProbe(Strict):
    key: str
    field: str | None = None


class PrometheusProbe(Strict):
    """A PromQL instant query whose answer is one number: a scalar, or a vector of one series (an
    aggregation such as ``sum(rate(...))``). No series at all is a failed observation: write
    ``... or vector(0)`` where no data means zero."""

    query: str = Field(min_length=1, max_length=4000)
    #: the Prometheus server (its base URL); default: the agent's ``COORDINATOR_PROMETHEUS_URL``
    url: str | None = Field(default=None, pattern=r"^https?://")


class Probe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    mode: ProbeMode = "Edge"
    grpc_health: GrpcHealthProbe | None = None
    http: HttpProbe | None = None
    kafka_topic: KafkaTopicProbe | None = None
    kafka_lag: KafkaLagProbe | None = None
    redis_key: RedisKeyProbe | None = None
    prometheus: PrometheusProbe | None = None
    tolerance: Tolerance
    timeout: Duration = 5.0
    interval: Duration = 2.0
    attempts: int = Field(default=1, ge=1, le=100)
    initial_delay: Duration = 0.0
    stop_on_failure: bool = False

    @model_validator(mode="after")
    def _one(self) -> Probe:
        exactly_one(self, PROBE_KINDS, "a probe")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in PROBE_KINDS if getattr(self, name) is not None)

    @property
    def target(self) -> str | None:
        spec = getattr(self, self.kind)
        return getattr(spec, "target", None)


PROBE_KINDS = ("grpc_health", "http", "kafka_topic", "kafka_lag", "redis_key", "prometheus")


class SteadyState(Strict):
    probes: list[Probe] = Field(default_factory=list)
