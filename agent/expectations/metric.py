"""``metric``: a Prometheus query after the injection, judged by a tolerance ("the risk monitor's error
rate is below 5% again within 30 s").

The agent that made the injection asks ``query`` every ``interval`` from the injection to the
deadline and publishes each answer as an audit event of type ``metric_sample`` (``SAMPLE``): from the
expectation's service (else the target's), with the injection's correlation id, metadata
``expectation``, ``value``, ``accepted`` (``true``/``false``), ``reason`` and ``platform:
prometheus`` (the agent speaking, not the service). The worker judges the samples like any events:

- ``holds: false`` (the default; recovery): PASSED at the first accepted sample, its time after the
  injection the time to recover; FAILED at the deadline when none was, with the last value seen.
- ``holds: true``: FAILED at the first refused sample; PASSED at the deadline when samples came and
  every one was accepted.

No sample by the deadline (Prometheus unreachable, the agent gone) is INCONCLUSIVE: nothing was
measured. Samples of another injection or expectation never count (correlation id and name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from agent._proto.coordinator.v1 import events_pb2
from agent.expectations.base import FAILED, INCONCLUSIVE, PASSED, AuditObservation, Verdict, ts
from agent.expectations.watch import Kind, Watch, register
from agent.fields import Duration, Strict
from agent.tolerance import Tolerance

#: the audit event type of one sample
SAMPLE = "metric_sample"


class MetricRule(Strict):
    #: a PromQL instant query whose answer is one number (see the ``prometheus`` probe)
    query: str = Field(min_length=1, max_length=4000)
    tolerance: Tolerance
    within: Duration
    #: seconds between samples
    interval: Duration = Field(default=1.0, gt=0)
    #: true: the value must stay accepted through the window; false: it must come back by the deadline
    holds: bool = False
    #: the Prometheus server; default: the agent's ``COORDINATOR_PROMETHEUS_URL``
    url: str | None = Field(default=None, pattern=r"^https?://")


class Metric(Kind):
    name = "metric"
    rule = MetricRule

    def check(self, event: Any, only_after: str | None) -> str | None:
        if only_after is not None:
            return "a metric expectation cannot wait for another (onlyAfter): its samples start at the injection"
        if event.type is not None or event.match:
            return "a metric expectation names no event type or match: its query says what is measured"
        return None

    def to_message(self, rule: Any, message: events_pb2.Expectation) -> None:
        super().to_message(rule, message)
        message.event_type = SAMPLE  # the watch waits with the samples (routed by event type)

    def event_types(self, rule: Mapping[str, Any]) -> set[str] | None:
        return {SAMPLE}

    def awaited_types(self, watch: Watch) -> set[str]:
        return {SAMPLE}

    def matches(self, watch: Watch, event: AuditObservation) -> bool:
        return (event.event_type == SAMPLE and event.metadata.get("expectation") == watch.name
                and event.correlation_id == watch.correlation_id)

    def take(self, watch: Watch, event: AuditObservation) -> bool | None:
        if event.timestamp > watch.deadline or (event.event_id and event.event_id in watch.counted_ids):
            return False
        if event.event_id:
            watch.counted_ids.append(event.event_id)
        watch.count += 1
        value = event.metadata.get("value", "")
        if event.metadata.get("accepted") == "true":
            if watch.first_seen is None or event.timestamp < watch.first_seen:
                watch.first_seen = event.timestamp
        else:  # the first refused sample's time; the latest one's reason
            if watch.down_at is None or event.timestamp < watch.down_at:
                watch.down_at = event.timestamp
            watch.down_event = event.metadata.get("reason", "") or value
        return True

    def holds(self, watch: Watch) -> bool:
        return bool(watch.params.get("holds"))

    def took(self, watch: Watch) -> float | None:
        if self.holds(watch) or watch.first_seen is None:
            return None
        return watch.first_seen - watch.injected_at

    def early(self, watch: Watch) -> Verdict | None:
        if self.holds(watch):
            if watch.down_at is None:
                return None
            return watch.verdict(FAILED, f"'{self.query(watch)}' left its tolerance "
                                         f"{watch.down_at - watch.injected_at:.3f}s after the injection: "
                                         f"{watch.down_event}", seen=watch.down_at)
        if watch.first_seen is None:
            return None
        took = watch.first_seen - watch.injected_at
        return watch.verdict(PASSED, f"'{self.query(watch)}' within its tolerance {took:.3f}s after the injection",
                             took=took)

    def at_deadline(self, watch: Watch) -> Verdict:
        if not watch.count:
            return watch.verdict(INCONCLUSIVE, f"no sample of '{self.query(watch)}' by the deadline "
                                               f"{ts(watch.deadline)} (is Prometheus reachable from the agent?)")
        if self.holds(watch):
            return watch.verdict(PASSED, f"'{self.query(watch)}' stayed within its tolerance: {watch.count} "
                                         f"sample(s) until the deadline {ts(watch.deadline)}")
        return watch.verdict(FAILED, f"'{self.query(watch)}' not within its tolerance by the deadline "
                                     f"{ts(watch.deadline)}; last: {watch.down_event or 'nothing refused'}")

    @staticmethod
    def query(watch: Watch) -> str:
        text = str(watch.params.get("query", "")).strip()
        return text if len(text) <= 80 else text[:77] + "..."

    def expected(self, watch: Watch) -> str:
        tolerance = watch.params.get("tolerance", {})
        how = "stays" if self.holds(watch) else "is back"
        return f"'{self.query(watch)}' {how} within {tolerance} by {ts(watch.deadline)}"

    def observed(self, watch: Watch) -> str:
        return f"{watch.count} sample(s)" + (f", refused: {watch.down_event}" if watch.down_at else "")


KIND = register(Metric())
