"""Prometheus probes on real parts: Debian's Prometheus in the local stack scrapes the sim's services
(each serves /metrics), and a Continuous probe on the risk monitor's error rate fails the run when
the knob makes it answer errors, and passes otherwise. The Grafana dashboard's queries are parsed by
the same Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import client
from agent._proto.coordinator.v1 import events_pb2
from agent.devstack import Stack
from agent.devstack.procs import free_port
from agent.settings import Settings
from sim.launch import Sim, SimInfo, SimOptions
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env
from tests.integration.test_flagship import _restart
from tests.unit.test_grafana_dashboard import as_prometheus_reads_it, queries

S = events_pb2
ERROR_RATE = ('sum(rate(sim_requests_total{service="risk-monitor",outcome="error"}[5s])) '
              '/ (sum(rate(sim_requests_total{service="risk-monitor"}[5s])) > 0) or vector(0)')
SCENARIO = f"""\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: restart-risk-monitor-error-rate}}
spec:
  targets:
    risk-monitor: {{driver: supervisor, selector: {{program: risk-monitor}}}}
  steadyState:
    probes:
      - name: risk-error-rate
        mode: Continuous
        interval: 1s
        prometheus:
          query: '{ERROR_RATE}'
        tolerance: {{range: {{max: 0.05}}}}
  steps:
    - {{name: restart-risk-monitor, fault: restart, target: risk-monitor, delay: 1s}}
    - {{name: keep-trading, wait: 12s}}
"""


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[str]:
    stack.up(("prometheus",), extras=("prometheus",), timeout=120)
    yield stack.env()["COORDINATOR_PROMETHEUS_URL"]
    stack.stop("prometheus")


@pytest.fixture(scope="module")
def sim(stack: Stack, stack_env: dict[str, str], prometheus: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Sim, SimInfo]]:
    sim = Sim(tmp_path_factory.mktemp("sim"))
    sfx = uuid.uuid4().hex[:8]
    info = sim.up(SimOptions(kafka=stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
                             redis_url=stack_env["COORDINATOR_REDIS_URL"], rate=20, order_timeout=4, loss_timeout=5,
                             audit_topic=f"test.{sfx}.audit", orders_topic=f"test.{sfx}.orders"))
    scraped = stack.scrape_targets() / f"sim-{uuid.uuid4().hex[:8]}.json"
    shutil.copy(sim.scrape_targets, scraped)  # the stack's Prometheus reads it within a second
    yield sim, info
    scraped.unlink()
    sim.down()


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str], sim: tuple[Sim, SimInfo], prometheus: str) -> dict[str, str]:
    _, info = sim
    base = engine_env(stack_env, info.supervisor_url)
    sfx = base["COORDINATOR_REDIS_KEY_PREFIX"]
    return {**base, **info.agent_env(), "COORDINATOR_PROMETHEUS_URL": prometheus,
            "COORDINATOR_WORKER_APP_ID": f"{sfx}-worker", "COORDINATOR_WORKER_TICK_INTERVAL": "0.2",
            "COORDINATOR_VERDICT_GRACE": "8"}  # the engine waits longer than the worker's own grace


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    return await applied_settings(env)


@pytest.fixture(scope="module")
def agent(env: dict[str, str], settings: Settings, stack: Stack, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[None]:
    """The agent and the worker, both scraped by the stack's Prometheus (their own /metrics)."""
    logs = tmp_path_factory.mktemp("agent")
    http, metrics_port = free_port(), free_port()
    worker = AgentProcess({**env, "COORDINATOR_WORKER_METRICS_PORT": str(metrics_port)}, logs / "worker.log",
                          ("worker", "--loglevel", "info"), r"Ready").start(timeout=90)
    process = AgentProcess(env, logs / "agent.log", ("serve", "--http-port", str(http), "--grpc-port", "0")).start()
    scraped = stack.scrape_targets() / f"coordinator-{uuid.uuid4().hex[:8]}.json"
    scraped.write_text(json.dumps([{"targets": [f"127.0.0.1:{http}"], "labels": {"part": "agent"}},
                                   {"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"part": "worker"}}]))
    yield
    scraped.unlink()
    process.stop()
    worker.stop()


async def _query(prometheus: str, query: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{prometheus}/api/v1/query", params={"query": query}) as answer:
        return dict(await answer.json())


async def _scraped(prometheus: str) -> None:
    """Until Prometheus has the risk monitor's calls (the first scrapes after the targets file)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = await _query(prometheus, 'sum(sim_requests_total{service="risk-monitor"})')
        if body["data"]["result"] and float(body["data"]["result"][0]["value"][1]) > 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError("Prometheus never scraped the risk monitor's /metrics")


async def _run(settings: Settings, tmp_path: Path) -> Any:
    scenario = tmp_path / "error-rate.yaml"
    scenario.write_text(SCENARIO)
    result = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=150)
    assert result is not None, "no result"
    return result


@pytest.mark.timeout(300)
async def test_a_continuous_error_rate_probe_passes_while_the_risk_monitor_answers_well(
    sim: tuple[Sim, SimInfo], agent: None, settings: Settings, prometheus: str, tmp_path: Path
) -> None:
    await _scraped(prometheus)
    result = await _run(settings, tmp_path)
    assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert not [j for j in result.journal if j.phase == "steady-state-during"], "no probe failed during the run"


@pytest.mark.timeout(300)
async def test_the_probe_fails_the_run_when_the_knob_makes_the_risk_monitor_answer_errors(
    sim: tuple[Sim, SimInfo], agent: None, settings: Settings, prometheus: str, tmp_path: Path
) -> None:
    sim_, info = sim
    await _scraped(prometheus)
    sim_.knobs_file.write_text(json.dumps({"risk-monitor": {"error_rate": 0.5}}))  # for the restarted one
    try:
        result = await _run(settings, tmp_path)
        assert result.status == S.EXECUTION_STATUS_FAILED, result.reason
        assert "steady state broke during the run: risk-error-rate: observed 0." in result.reason, result.reason
        assert "expected within [None, 0.05]" in result.reason
        [failed, *_] = [j for j in result.journal if j.phase == "steady-state-during"]
        assert failed.name == "risk-error-rate"
    finally:
        _restart(sim_, info, "risk-monitor")


async def test_every_query_of_the_grafana_dashboard_is_promql_prometheus_accepts(prometheus: str) -> None:
    for query in queries():
        body = await _query(prometheus, as_prometheus_reads_it(query))
        assert body["status"] == "success", f"{query}: {body.get('error')}"


async def test_a_query_prometheus_refuses_fails_the_probe_with_prometheus_own_words(
    sim: tuple[Sim, SimInfo], agent: None, settings: Settings, tmp_path: Path
) -> None:
    scenario = tmp_path / "bad-query.yaml"
    scenario.write_text(SCENARIO.replace(ERROR_RATE, "sum(rate(sim_requests_total[5s]) by")
                        .replace("mode: Continuous", "mode: SOT"))
    result = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=120)
    assert result is not None and result.status == S.EXECUTION_STATUS_FAILED
    assert "steady state not met before the steps: risk-error-rate" in result.reason
    assert "Prometheus refused the query" in result.reason and "parse error" in result.reason, result.reason


RECOVERS = f"""\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: restart-fixes-the-error-rate}}
spec:
  targets:
    risk-monitor: {{driver: supervisor, selector: {{program: risk-monitor}}}}
  steps:
    - {{name: restart-risk-monitor, fault: restart, target: risk-monitor}}
  expectations:
    - name: error-rate-low-again
      after: restart-risk-monitor
      metric:
        query: '{ERROR_RATE}'
        tolerance: {{range: {{max: 0.05}}}}
        within: 25s
"""


@pytest.mark.timeout(400)
async def test_a_metric_expectation_measures_when_the_error_rate_is_low_again_after_the_injection(
    sim: tuple[Sim, SimInfo], agent: None, settings: Settings, prometheus: str, tmp_path: Path
) -> None:
    """The running risk monitor errs half the time; the restart replaces it with a healthy one (PASSED,
    with the time the error rate took to drop) or with one that errs as much (FAILED)."""
    sim_, info = sim
    scenario = tmp_path / "recovers.yaml"
    scenario.write_text(RECOVERS)
    try:
        for successor, status in (({}, S.VERDICT_STATUS_PASSED), ({"error_rate": 0.5}, S.VERDICT_STATUS_FAILED)):
            _restart(sim_, info, "risk-monitor", {"error_rate": 0.5})
            await asyncio.sleep(6)  # the erring one's rate in Prometheus
            sim_.knobs_file.write_text(json.dumps({"risk-monitor": successor}))
            result = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=150)
            assert result is not None, "no result"
            [verdict] = result.verdicts
            assert verdict.status == status, verdict.reason
            if status == S.VERDICT_STATUS_PASSED:
                recovered = verdict.time_to_recover.ToNanoseconds() / 1e9
                assert 0 < recovered < 25 and "within its tolerance" in verdict.reason, verdict.reason
            else:
                assert "not within its tolerance by the deadline" in verdict.reason, verdict.reason
                assert "expected within [None, 0.05]" in verdict.reason
    finally:
        _restart(sim_, info, "risk-monitor")


async def test_prometheus_has_the_agents_and_the_workers_own_metrics_the_dashboard_charts(
    agent: None, prometheus: str
) -> None:
    """After the runs above: what the dashboard's panels read is there, scraped from both."""
    wanted = {'sum(coordinator_executions_total{part="agent"})': "runs ended",
              'sum(coordinator_verdicts_total{part="agent"})': "verdicts the agent received",
              'sum(coordinator_worker_events_total{part="worker",source="audit"})': "audit events judged",
              'sum(coordinator_worker_verdicts_total{part="worker"})': "verdicts decided"}
    deadline = time.monotonic() + 30
    while True:
        values = {}
        for query in wanted:
            result = (await _query(prometheus, query))["data"]["result"]
            values[query] = float(result[0]["value"][1]) if result else 0.0
        if all(values.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert all(values.values()), {wanted[q]: v for q, v in values.items()}
