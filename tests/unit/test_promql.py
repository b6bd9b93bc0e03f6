"""What a prometheus probe observes: the one number a Prometheus query API answer holds, or an
error naming what is wrong (answers in the shapes Prometheus's HTTP API gives)."""

from __future__ import annotations

import pytest

from agent.drivers.probes import promql_number
from agent.errors import ProbeError
from agent.scenario.probes import Probe

Q = 'sum(rate(sim_requests_total{outcome="error"}[5s]))'


def _vector(*values: str, metric: dict[str, str] | None = None) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": metric or {}, "value": [1_800_000_000.1, value]} for value in values]}}


def test_a_vector_of_one_series_and_a_scalar_are_numbers() -> None:
    assert promql_number(_vector("0.25"), Q) == 0.25
    assert promql_number({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, Q) == 3.0


@pytest.mark.parametrize(("body", "message"), [
    (_vector(), "returned no series (append 'or vector(0)' where no data means 0)"),
    (_vector("1", "2", metric={"service": "risk-monitor"}),
     "returned 2 series ({'service': 'risk-monitor'}, {'service': 'risk-monitor'}); aggregate it to one"),
    ({"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected <by>"},
     "Prometheus refused the query 'sum(rate(sim_requests_total{outcome=\"error\"}[5s]))': 1:5: parse error"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "gave a matrix, not a number"),
])
def test_anything_else_is_a_failed_observation_saying_what_to_change(body: dict, message: str) -> None:
    with pytest.raises(ProbeError) as caught:
        promql_number(body, Q)
    assert message in str(caught.value)


def test_a_prometheus_probe_is_written_like_the_others() -> None:
    probe = Probe.model_validate({"name": "error-rate", "mode": "Continuous", "prometheus": {"query": Q},
                                  "tolerance": {"range": {"max": 0.05}}})
    assert probe.kind == "prometheus" and probe.prometheus is not None and probe.prometheus.url is None
    assert probe.tolerance.check(promql_number(_vector("0.01"), Q))[0]
    assert not probe.tolerance.check(promql_number(_vector("0.5"), Q))[0]
    with pytest.raises(ValueError, match="String should match pattern"):
        Probe.model_validate({"name": "p", "prometheus": {"query": Q, "url": "file:///etc/passwd"},
                              "tolerance": {"equals": 1}})
