"""Steady-state probes and tolerances (Chaos Toolkit's hypothesis, Litmus's modes and comparators).

A probe observes one thing (gRPC health, an HTTP endpoint, a Kafka topic or consumer lag, a Redis
key, a Prometheus query); its tolerance says which observations are fine. ``Tolerance.check`` is pure and unit-tested.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from agent.scenario.base import Duration, Strict

ProbeMode = Literal["SOT", "EOT", "Edge", "Continuous", "OnChaos"]
Comparator = Literal["==", "!=", ">", "<", ">=", "<="]
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}


def exactly_one(model: Strict, options: tuple[str, ...], what: str) -> None:
    chosen = [name for name in options if getattr(model, name) is not None]
    if len(chosen) != 1:
        fields = type(model).model_fields
        aliases = [fields[name].alias or name for name in options]
        given = ", ".join(fields[n].alias or n for n in chosen) or "none"
        raise ValueError(f"{what} needs exactly one of {', '.join(aliases)} (given: {given})")


class Range(Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


class Compare(Strict):
    op: Comparator
    value: float | str


class Tolerance(Strict):
    equals: str | int | float | bool | None = None
    one_of: list[str | int | float | bool] | None = None
    range: Range | None = None
    regex: str | None = None
    contains: str | None = None
    comparator: Compare | None = None

    @model_validator(mode="after")
    def _one(self) -> Tolerance:
        exactly_one(self, ("equals", "one_of", "range", "regex", "contains", "comparator"), "a tolerance")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self

    def check(self, observed: Any) -> tuple[bool, str]:
        """Does ``observed`` satisfy the tolerance? Returns (ok, a sentence saying why)."""
        if self.equals is not None:
            ok = _same(observed, self.equals)
            return ok, f"observed {observed!r}, expected {self.equals!r}"
        if self.one_of is not None:
            ok = any(_same(observed, v) for v in self.one_of)
            return ok, f"observed {observed!r}, expected one of {self.one_of!r}"
        if self.range is not None:
            number = _number(observed)
            if number is None:
                return False, f"observed {observed!r}, expected a number in range"
            ok = (self.range.min is None or number >= self.range.min) and (
                self.range.max is None or number <= self.range.max)
            return ok, f"observed {number}, expected within [{self.range.min}, {self.range.max}]"
        if self.regex is not None:
            ok = re.search(self.regex, str(observed)) is not None
            return ok, f"observed {observed!r}, expected to match /{self.regex}/"
        if self.contains is not None:
            ok = self.contains in str(observed)
            return ok, f"observed {observed!r}, expected to contain {self.contains!r}"
        assert self.comparator is not None
        op, value = self.comparator.op, self.comparator.value
        left: Any = _number(observed) if isinstance(value, int | float) else str(observed)
        if left is None:
            return False, f"observed {observed!r}, expected a number {op} {value}"
        return _COMPARE[op](left, value), f"observed {left!r}, expected {op} {value!r}"


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


def _same(observed: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(observed, bool):
        return str(observed).lower() == str(expected).lower()
    if isinstance(expected, int | float):
        number = _number(observed)
        return number is not None and number == expected
    return str(observed) == str(expected)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
