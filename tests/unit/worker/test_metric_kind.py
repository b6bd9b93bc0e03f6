"""``metric`` expectations: written in a scenario, carried by the chaos event by name, judged by the
worker from the samples the agent publishes (audit events ``metric_sample``)."""

from __future__ import annotations

import json

import pytest

from agent._proto.coordinator.v1 import events_pb2 as S
from agent.engine.faults import expectation_message
from agent.errors import ScenarioError
from agent.expectations import FAILED, INCONCLUSIVE, PASSED, AuditObservation, Watch
from agent.expectations.metric import SAMPLE
from agent.scenario import load_scenario
from agent.worker.judge import Row, routing_key, row_keys, watches_from

QUERY = 'sum(rate(sim_requests_total{service="risk-monitor",outcome="error"}[5s])) or vector(0)'
SCENARIO = f"""\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: errors-recover}}
spec:
  targets:
    risk-monitor: {{driver: supervisor, selector: {{program: risk-monitor}}}}
  steps:
    - {{name: restart, fault: restart, target: risk-monitor}}
  expectations:
    - name: error-rate-low
      after: restart
      metric:
        query: '{QUERY}'
        tolerance: {{range: {{max: 0.05}}}}
        within: 30s
        interval: 2s
"""
CID = "c-1"


def watch(holds: bool = False) -> Watch:
    text = SCENARIO.replace("interval: 2s", "interval: 2s\n        holds: true") if holds else SCENARIO
    [expectation] = load_scenario(text, "errors.yaml").spec.expectations
    event = S.ChaosEvent(correlation_id=CID, execution_id="e", service="risk-monitor",
                         expectations=[expectation_message(expectation)])
    event.injected_at.FromSeconds(100)
    [found] = [w for w in watches_from(S.ChaosEvent.FromString(event.SerializeToString())) if w.kind == "metric"]
    return Watch.from_dict(json.loads(json.dumps(found.to_dict())))


def sample(at: float, accepted: bool, value: str = "0.5", *, name: str = "error-rate-low", cid: str = CID,
           ident: str = "") -> AuditObservation:
    reason = f"observed {value}, expected within [None, 0.05]"
    return AuditObservation("risk-monitor", SAMPLE, at, correlation_id=cid, event_id=ident or f"m#{at}",
                            metadata={"expectation": name, "value": value, "accepted": str(accepted).lower(),
                                      "reason": reason, "platform": "prometheus"})


def test_the_rule_travels_by_name_and_the_watch_knows_its_query_and_deadline() -> None:
    found = watch()
    assert (found.kind, found.deadline, found.service, found.target_service) == ("metric", 130.0, "", "risk-monitor")
    assert found.params["query"] == QUERY and found.params["tolerance"] == {"range": {"max": 0.05}}
    assert not found.params.get("holds")
    assert routing_key(found) == "type:metric_sample" and "type:metric_sample" in row_keys(
        Row("risk-monitor", SAMPLE, 101.0, CID, {}, "m#1", "")), "the watch waits where the samples go"


def test_recovery_passes_on_the_first_accepted_sample_with_its_time_to_recover() -> None:
    found = watch()
    assert found.observe(sample(101.0, False), 1.0)
    assert found.decide(now=101.5, watermark=101.0, grace=1.0) is None
    assert not found.observe(sample(102.0, True, "0", name="another"), 1.0), "another expectation's sample"
    assert not found.observe(sample(102.0, True, "0", cid="c-2"), 1.0), "another injection's sample"
    assert found.observe(sample(103.5, True, "0.01"), 1.0)
    verdict = found.decide(now=104.0, watermark=103.5, grace=1.0)
    assert verdict is not None and verdict.status == PASSED and verdict.time_to_recover == 3.5, verdict
    assert "within its tolerance 3.500s after the injection" in verdict.reason


def test_recovery_that_never_comes_fails_with_the_last_value_and_no_sample_is_inconclusive() -> None:
    found = watch()
    found.observe(sample(101.0, False, "0.5"), 1.0)
    found.observe(sample(129.0, False, "0.4"), 1.0)
    verdict = found.decide(now=132.0, watermark=131.0, grace=1.0)
    assert verdict is not None and verdict.status == FAILED
    assert "not within its tolerance by the deadline" in verdict.reason and "observed 0.4" in verdict.reason
    silent = watch()
    verdict = silent.decide(now=132.0, watermark=131.0, grace=1.0)
    assert verdict is not None and verdict.status == INCONCLUSIVE and "no sample of" in verdict.reason


def test_holds_fails_at_the_first_refused_sample_and_passes_when_every_one_was_accepted() -> None:
    broken = watch(holds=True)
    broken.observe(sample(101.0, True, "0"), 1.0)
    assert broken.decide(now=101.5, watermark=101.0, grace=1.0) is None
    broken.observe(sample(104.0, False, "0.3"), 1.0)
    verdict = broken.decide(now=104.5, watermark=104.0, grace=1.0)
    assert verdict is not None and verdict.status == FAILED and "left its tolerance 4.000s after" in verdict.reason
    held = watch(holds=True)
    for at in (101.0, 111.0, 121.0, 121.0):  # the last one delivered twice
        held.observe(sample(at, True, "0", ident=f"m#{at}"), 1.0)
    verdict = held.decide(now=132.0, watermark=131.0, grace=1.0)
    assert verdict is not None and verdict.status == PASSED and "3 sample(s)" in verdict.reason


@pytest.mark.parametrize(("change", "message"), [
    ("      metric:", "      event: {type: errors}\n      metric:"),
    ("      metric:", "      onlyAfter: other\n      metric:"),
])
def test_a_metric_expectation_names_no_event_and_waits_for_nothing(change: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(SCENARIO.replace(change, message), "errors.yaml")
    text = str(caught.value)
    assert "names no event type" in text or "cannot wait for another (onlyAfter)" in text, text
