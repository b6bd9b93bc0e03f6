"""The flagship on the real stack: the sim under supervisord, the agent, the stream worker, and the
scenario that restarts the risk monitor during trading. Healthy sim -> PASSED; a risk monitor that
never becomes ready again -> FAILED with the reason; requests and results through kcat."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import xmlrpc.client
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from junitparser import Failure, JUnitXml

from agent import client
from agent._proto.coordinator.v1 import events_pb2
from agent.settings import Settings
from sim.launch import Sim, SimInfo, SimOptions
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env, read_all

S = events_pb2
FLAGSHIP = "restart-risk-monitor-during-trading"
# short enough for a test, long enough for the sim: the engine calls an order lost after 4s
PARAMS = {"recoveryDeadline": "8s", "observation": "2s", "reportDeadline": "10s", "lossWindow": "10s"}


@pytest.fixture(scope="module")
def sim(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, SimInfo]]:
    audit_topic = f"test.{uuid.uuid4().hex[:8]}.audit"
    sim = Sim(tmp_path_factory.mktemp("sim"))
    info = sim.up(SimOptions(kafka=stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
                             redis_url=stack_env["COORDINATOR_REDIS_URL"],
                             toxiproxy_url=stack_env["COORDINATOR_TOXIPROXY_URL"], rate=20, order_timeout=4,
                             loss_timeout=5, audit_topic=audit_topic,
                             orders_topic=audit_topic.replace(".audit", ".orders")))
    yield sim, info
    sim.down()


def flagship_env(stack_env: dict[str, str], info: SimInfo, **extra: str) -> dict[str, str]:
    """The agent's and the worker's settings for the flagship on ``info``'s sim (``extra`` on top)."""
    base = engine_env(stack_env, info.supervisor_url)
    sfx = base["COORDINATOR_REDIS_KEY_PREFIX"]
    # late evidence is looked for 30 s: a restart on a loaded machine can take 10-25 s
    return {**base, **info.agent_env(), "COORDINATOR_WORKER_APP_ID": f"{sfx}-worker",
            "COORDINATOR_WORKER_TICK_INTERVAL": "0.2", "COORDINATOR_VERDICT_GRACE": "8",
            "COORDINATOR_LATE_EVIDENCE": "30", **extra}


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str], sim: tuple[Sim, SimInfo]) -> dict[str, str]:
    return flagship_env(stack_env, sim[1])


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    return await applied_settings(env)


@pytest.fixture(scope="module")
def running(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    logs = tmp_path_factory.mktemp("flagship")
    worker = AgentProcess(env, logs / "worker.log", ("worker", "--loglevel", "info"), r"Ready").start(timeout=90)
    agent = AgentProcess(env, logs / "agent.log").start()
    yield worker, agent
    agent.stop()
    worker.stop()


def _processes(info: SimInfo) -> dict[str, dict[str, Any]]:
    with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
        return {p["name"]: p for p in proxy.supervisor.getAllProcessInfo()}  # type: ignore[union-attr]


def _restart(sim: Sim, info: SimInfo, name: str, knobs: dict[str, Any] | None = None) -> None:
    """Restart ``name`` under supervisord with these knobs (none: healthy) and wait until it is ready."""
    sim.knobs_file.write_text(json.dumps({name: knobs or {}}))
    with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
        proxy.supervisor.stopProcess(name)
        proxy.supervisor.startProcess(name)
    _wait_ready(sim, name)


def _wait_ready(sim: Sim, name: str) -> None:
    deadline = time.monotonic() + 30
    while sim.status()["processes"][name]["ready"] is not True:
        assert time.monotonic() < deadline, f"{name} not ready again"
        time.sleep(0.2)


def _kcat(*args: str, data: bytes | None = None) -> bytes:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by the project's set-up (coordinator devstack install)"
    return subprocess.run([kcat, *args], input=data, capture_output=True, check=True, timeout=30).stdout


async def _kcat_result(settings: Settings, request_id: str, timeout: float) -> dict[str, Any]:
    """Read the results topic with kcat until the result of ``request_id`` is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = await asyncio.to_thread(_kcat, "-C", "-b", settings.kafka_bootstrap_servers, "-t",
                                      settings.topics.scenario_results, "-o", "beginning", "-e", "-q", "-J")
        for line in out.decode().splitlines():
            envelope = json.loads(line)
            headers = dict(zip(envelope.get("headers", [])[::2], envelope.get("headers", [])[1::2], strict=True))
            if headers.get("ce_type") != "coordinator.v1.ScenarioResult":
                continue
            payload = json.loads(envelope["payload"])
            if payload.get("requestId") == request_id:
                return payload
        await asyncio.sleep(1)
    raise AssertionError(f"no result for {request_id} within {timeout}s")


async def test_sim_services_serve_health_reflection_and_register_with_a_ttl(
    sim: tuple[Sim, SimInfo], stack_env: dict[str, str]
) -> None:
    _, info = sim
    registry = redis.Redis.from_url(stack_env["COORDINATOR_REDIS_URL"], decode_responses=True)
    for name in ("risk-monitor", "trading-engine", "exchange", "load-generator"):
        entry = registry.hgetall(f"registry:services:{name}")
        assert entry["status"] == "ready" and entry["host"] == "127.0.0.1", entry
        assert int(entry["grpc_port"]) == info.ports[name]["grpc"]
        assert int(entry["http_port"]) == info.ports[name]["http"]
        assert entry["updated_at"].endswith("Z")
        assert 0 < registry.ttl(f"registry:services:{name}") <= 10
    async with grpc.aio.insecure_channel(f"127.0.0.1:{info.ports['risk-monitor']['grpc']}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name async for r in stream for s in r.list_services_response.service}
        assert {"sim.v1.RiskMonitorService", "grpc.health.v1.Health"} <= names


async def test_the_flagship_passes_against_a_healthy_sim_with_request_and_result_through_kcat(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings
) -> None:
    _, info = sim
    before = _processes(info)["risk-monitor"]["pid"]
    request_id = str(uuid.uuid4())
    body = json.dumps({"requestId": request_id, "scenarioName": FLAGSHIP, "requester": "kcat",
                       "parameters": PARAMS}).encode()
    await asyncio.to_thread(_kcat, "-P", "-b", settings.kafka_bootstrap_servers, "-t",
                            settings.topics.scenario_requests, "-k", request_id, "-H", "content-type=application/json",
                            data=body)

    result = await _kcat_result(settings, request_id, timeout=90)
    assert result["status"] == "EXECUTION_STATUS_PASSED", result.get("reason")
    verdicts = {v["expectationName"]: v for v in result["verdicts"]}
    assert set(verdicts) == {"risk-monitor-ready-again", "risk-monitor-time-to-recover", "risk-reports-resume",
                             "no-order-lost"}
    assert all(v["status"] == "VERDICT_STATUS_PASSED" for v in verdicts.values()), verdicts
    recovered = float(verdicts["risk-monitor-time-to-recover"]["timeToRecover"].rstrip("s"))
    assert 0 < recovered < 8
    assert _processes(info)["risk-monitor"]["pid"] != before, "the risk monitor was restarted"

    # the audit trail says why: the risk monitor's own lifecycle events, from the injection on
    [injection] = result["injections"]
    injected = datetime.fromisoformat(injection["injectedAt"])
    audit = [json.loads(r.value) for r in await read_all(settings.kafka_bootstrap_servers,
                                                        settings.topics.audit_events)]
    lifecycle = [a["event_type"] for a in audit if a["service_name"] == "risk-monitor"
                 and a["event_type"].startswith("service_") and datetime.fromisoformat(a["timestamp"]) >= injected]
    assert lifecycle[:3] == ["service_stopping", "service_started", "service_ready"], lifecycle


async def test_the_flagship_fails_with_the_reason_when_the_risk_monitor_never_becomes_ready_again(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings,
    env: dict[str, str], tmp_path: Path
) -> None:
    sim_, info = sim
    sim_.knobs_file.write_text(json.dumps({"risk-monitor": {"never_ready": True}}))  # for its next start
    try:
        request = client.build_request(FLAGSHIP, PARAMS)
        result = await client.run_and_follow(settings, request, timeout=90)
        assert result is not None, "no result"
        assert result.status == S.EXECUTION_STATUS_FAILED
        assert "risk-monitor-ready-again: no 'service_ready from risk-monitor' by the deadline" in result.reason
        verdicts = {v.expectation_name: v for v in result.verdicts}
        assert verdicts["risk-monitor-ready-again"].status == S.VERDICT_STATUS_FAILED
        assert verdicts["risk-reports-resume"].status == S.VERDICT_STATUS_FAILED
        # orders wait for the risk check, then time out: the loss is reported and the scenario says so
        assert verdicts["no-order-lost"].status == S.VERDICT_STATUS_FAILED, verdicts["no-order-lost"].reason
        assert "steady state not met after the steps: risk-monitor-serving" in result.reason
        assert sim_.status()["processes"]["risk-monitor"]["ready"] is False

        # the JUnit report, as CI reads it
        report = tmp_path / "flagship.xml"
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "agent.cli", "report", result.execution_id, "--format", "junit",
                             "-o", str(report)], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        [suite] = list(JUnitXml.fromfile(str(report)))
        cases = {case.name: case for case in suite}
        [failure] = cases["risk-monitor-ready-again"].result
        assert isinstance(failure, Failure)
        assert failure.message.startswith("no 'service_ready from risk-monitor' by the deadline")
    finally:
        _restart(sim_, info, "risk-monitor")


async def test_a_stalled_trading_engine_looks_healthy_but_the_audit_trail_fails_the_scenario(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings
) -> None:
    """Health probes cannot see an engine that stopped working; the orders it no longer fills can."""
    sim_, info = sim
    try:
        _restart(sim_, info, "trading-engine", {"stall": True})
        request = client.build_request(FLAGSHIP, PARAMS)
        result = await client.run_and_follow(settings, request, timeout=90)
        assert result is not None, "no result"
        verdicts = {v.expectation_name: v for v in result.verdicts}
        assert verdicts["risk-monitor-ready-again"].status == S.VERDICT_STATUS_PASSED
        assert verdicts["no-order-lost"].status == S.VERDICT_STATUS_FAILED
        assert "'order_lost' appeared" in verdicts["no-order-lost"].reason
        assert result.status == S.EXECUTION_STATUS_FAILED
        probes = [j for j in result.journal if j.phase.startswith("steady-state")]
        assert probes and all(j.status == S.JOURNAL_ENTRY_STATUS_SUCCEEDED for j in probes), "every health probe passed"
    finally:
        _restart(sim_, info, "trading-engine")



async def test_the_last_words_of_the_stopped_risk_monitor_do_not_count_as_reports_resumed(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings
) -> None:
    """The process being restarted sends one more risk_report as it stops; its successor sends none.
    Evidence from the incarnation the fault ended must not pass "risk reports resume"."""
    sim_, info = sim
    try:
        _restart(sim_, info, "risk-monitor", {"last_words": "risk_report"})  # the process the fault will end
        old_pid = str(_processes(info)["risk-monitor"]["pid"])
        sim_.knobs_file.write_text(json.dumps({"risk-monitor": {"stall": True}}))  # for its successor
        request = client.build_request(FLAGSHIP, PARAMS)
        result = await client.run_and_follow(settings, request, timeout=90)
        assert result is not None, "no result"
        verdicts = {v.expectation_name: v for v in result.verdicts}
        assert verdicts["risk-monitor-ready-again"].status == S.VERDICT_STATUS_PASSED
        resumed = verdicts["risk-reports-resume"]
        assert resumed.status == S.VERDICT_STATUS_FAILED, resumed.reason
        assert f"came from the incarnation the fault ended (risk-monitor {old_pid}" in resumed.reason
        assert result.status == S.EXECUTION_STATUS_FAILED
        injected = [i for i in result.injections if i.fault == "restart"]
        assert injected, "the restart is listed"
    finally:
        _restart(sim_, info, "risk-monitor")


ANONYMOUS = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: risk-reports-after-ready}
spec:
  targets:
    risk-monitor: {driver: supervisor, selector: {program: risk-monitor}}
  steps:
    - {name: restart-risk-monitor, fault: restart, target: risk-monitor}
  expectations:
    - {name: ready-again, after: restart-risk-monitor, attribution: target-window,
       event: {type: service_ready, service: risk-monitor}, appears: {within: 25s}}
    - {name: reports-by-time-alone, after: restart-risk-monitor, attribution: target-window,
       event: {type: risk_report, service: risk-monitor}, appears: {within: 25s}}
    - {name: reports-resume, after: restart-risk-monitor, attribution: target-window, onlyAfter: ready-again,
       event: {type: risk_report, service: risk-monitor}, appears: {within: 25s}}
"""


@pytest.mark.timeout(300)  # two restarts and a run sized for a loaded machine (25 s bounds, 8 s grace)
async def test_last_words_without_an_instance_do_not_count_after_the_named_recovery_event(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings, tmp_path: Path
) -> None:
    """The sim's events say no instance, so the agent cannot tell the old process from the new. The
    stopping risk monitor sends one more risk_report; its successor is ready but reports nothing.
    By time alone that report passes "reports resume" (the wrong verdict this guards against);
    with ``onlyAfter: ready-again`` it is held and the expectation FAILS, naming it."""
    sim_, info = sim
    scenario = tmp_path / "anonymous.yaml"
    scenario.write_text(ANONYMOUS)
    try:
        _restart(sim_, info, "risk-monitor", {"last_words": "risk_report", "no_instance": True})
        sim_.knobs_file.write_text(json.dumps({"risk-monitor": {"stall": True, "no_instance": True}}))
        result = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=120)
        assert result is not None, "no result"
        verdicts = {v.expectation_name: v for v in result.verdicts}
        assert verdicts["ready-again"].status == S.VERDICT_STATUS_PASSED, verdicts["ready-again"].reason
        assert verdicts["reports-by-time-alone"].status == S.VERDICT_STATUS_PASSED, \
            "without an instance or a sequence, the old process's report counts"
        resumed = verdicts["reports-resume"]
        assert resumed.status == S.VERDICT_STATUS_FAILED, resumed.reason
        assert "matching event(s) came before 'ready-again' (service_ready at " in resumed.reason, resumed.reason
        assert result.status == S.EXECUTION_STATUS_FAILED
    finally:
        _restart(sim_, info, "risk-monitor")


def restart_risk_monitor(name: str, expectation: str) -> str:
    """A scenario that restarts the risk monitor once, with one expectation (YAML, after the step)."""
    return f"""\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: {name}}}
spec:
  targets:
    risk-monitor: {{driver: supervisor, selector: {{program: risk-monitor}}}}
  steps:
    - {{name: restart-risk-monitor, fault: restart, target: risk-monitor}}
  expectations:
    - {{after: restart-risk-monitor, {expectation}}}
"""


STAYS_UP = restart_risk_monitor("risk-monitor-stays-up",
                                "name: stays-up, event: {service: risk-monitor}, stable: {for: 15s, within: 30s}")


def _bring_back(sim: Sim, info: SimInfo, name: str) -> None:
    """Healthy knobs, and the program running again whatever state a crash loop left it in."""
    sim.knobs_file.write_text(json.dumps({}))
    with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
        try:
            proxy.supervisor.stopProcess(name)
        except xmlrpc.client.Fault:
            pass  # not running
        proxy.supervisor.startProcess(name)
    _wait_ready(sim, name)


async def test_a_service_that_crashes_after_recovering_fails_stable_and_a_steady_one_passes(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings, tmp_path: Path
) -> None:
    """The crash is seen without the service's help: the agent publishes process_exited for what
    supervisord shows, and the stable expectation fails on it."""
    sim_, info = sim
    scenario = tmp_path / "stays-up.yaml"
    scenario.write_text(STAYS_UP)
    try:
        steady = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=90)
        assert steady is not None, "no result"
        [verdict] = steady.verdicts
        assert (steady.status, verdict.status) == (S.EXECUTION_STATUS_PASSED, S.VERDICT_STATUS_PASSED), verdict.reason
        assert "stayed up for 15.000s after its 'service_ready'" in verdict.reason

        # its next start crashes 8 s after it starts: after it is ready even on a loaded machine
        sim_.knobs_file.write_text(json.dumps({"risk-monitor": {"crash_after": 8}}))
        looping = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=90)
        assert looping is not None, "no result"
        [verdict] = looping.verdicts
        assert (looping.status, verdict.status) == (S.EXECUTION_STATUS_FAILED, S.VERDICT_STATUS_FAILED), \
            verdict.reason
        assert "risk-monitor went down" in verdict.reason and "process_exited (exit status 3)" in verdict.reason
    finally:
        _bring_back(sim_, info, "risk-monitor")


NOBODY_REACTS = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: a-link-nobody-notices}
spec:
  targets:
    link: {driver: toxiproxy, service: quiet-link, selector: {proxy: PROXY}}
  steps:
    - {name: slow-link, fault: latency, target: link, duration: 1s, parameters: {latency: 5ms}}
  expectations:
    - {name: orders-still-filled, after: slow-link, attribution: window,
       event: {type: order_filled, service: trading-engine}, appears: {within: 5s}}
"""


async def test_an_injection_its_target_never_reacted_to_is_named_on_a_passed_result(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings, tmp_path: Path
) -> None:
    """5 ms on the engine's link to the exchange: orders are still filled, and the link's service sends
    no audit event at all: the run passes, and its result says that nothing reacted to the fault."""
    _, info = sim
    scenario = tmp_path / "quiet.yaml"
    scenario.write_text(NOBODY_REACTS.replace("PROXY", info.proxy["name"]))
    result = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=90)
    assert result is not None, "no result"
    assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert result.reason.endswith("| nothing reacted to: latency on link (no audit event from quiet-link since the "
                                  "injection (none seen before it))"), result.reason
    [injection] = result.injections
    assert not injection.reacted and injection.reaction.startswith("no audit event from quiet-link")


LATE = restart_risk_monitor("risk-monitor-back-too-late",
                            "name: back-quickly, attribution: target-window, "
                            "event: {type: service_ready, service: risk-monitor}, appears: {within: 2s}")


async def test_a_recovery_after_the_deadline_and_its_grace_is_noted_on_the_failed_verdict(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings, tmp_path: Path
) -> None:
    """The restarted risk monitor is ready 6 s after it starts: past the 2 s deadline and the worker's
    grace. The verdict stays FAILED and says when the event came (late evidence)."""
    sim_, info = sim
    scenario = tmp_path / "late.yaml"
    scenario.write_text(LATE)
    sim_.knobs_file.write_text(json.dumps({"risk-monitor": {"start_delay": 6}}))  # for its next start
    try:
        result = await client.run_and_follow(settings, client.build_request(str(scenario), {}), timeout=90)
        assert result is not None, "no result"
        [verdict] = result.verdicts
        assert (result.status, verdict.status) == (S.EXECUTION_STATUS_FAILED, S.VERDICT_STATUS_FAILED), verdict.reason
        assert verdict.reason.startswith("no 'service_ready from risk-monitor' by the deadline")
        assert "(late evidence: 'service_ready from risk-monitor' came at " in verdict.reason
        late = verdict.late_evidence_at.ToNanoseconds() / 1e9
        assert late > verdict.deadline.ToNanoseconds() / 1e9 + 2, "after the deadline and the grace"
    finally:
        _restart(sim_, info, "risk-monitor")


BOTH_DOWN = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: exchange-down-while-risk-restarts}
spec:
  targets:
    risk-monitor: {driver: supervisor, selector: {program: risk-monitor}}
    engine-exchange-link: {driver: toxiproxy, service: exchange, selector: {proxy: engine-to-exchange}}
  steps:
    - parallel:
        - {name: link-down, fault: down, target: engine-exchange-link, duration: 1.5s}
        - {name: restart-risk-monitor, fault: restart, target: risk-monitor, delay: 0.3s}
    - {name: keep-trading, wait: 6s}
  expectations:
    - name: no-order-lost
      after: link-down
      attribution: window
      event: {type: order_lost}
      absent: {within: 15s}
"""


@pytest.mark.timeout(300)
async def test_the_latent_bug_shows_only_when_the_exchange_link_is_down_while_the_risk_monitor_restarts(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], settings: Settings, tmp_path: Path
) -> None:
    """The knob forget_when_both_down: the trading engine forgets orders when both its peers fail
    together. The link down alone forgets none; with the risk monitor's restart beside it, orders are
    forgotten and lost (the load generator says so: no-order-lost FAILS)."""
    sim_, info = sim
    alone, both = tmp_path / "alone.yaml", tmp_path / "both.yaml"
    alone.write_text(BOTH_DOWN.replace("        - {name: restart-risk-monitor, fault: restart, target: risk-monitor, "
                                       "delay: 0.3s}\n", ""))
    both.write_text(BOTH_DOWN)
    try:
        _restart(sim_, info, "trading-engine", {"forget_when_both_down": True})
        # the bug's own mark is the engine's count of forgotten orders; the verdicts follow from it
        # (the link down alone can still lose an order to the engine's 4 s timeout on a loaded machine)
        result = await client.run_and_follow(settings, client.build_request(str(alone), {}), timeout=120)
        assert result is not None, "no result"
        assert _forgotten(info) == 0, "one fault alone never triggers it"
        result = await client.run_and_follow(settings, client.build_request(str(both), {}), timeout=120)
        assert result is not None, "no result"
        assert _forgotten(info) > 0, "both faults together do"
        [verdict] = result.verdicts
        assert verdict.status == S.VERDICT_STATUS_FAILED, verdict.reason
        assert "'order_lost' appeared" in verdict.reason
    finally:
        _restart(sim_, info, "trading-engine")
        _restart(sim_, info, "risk-monitor")


def _forgotten(info: SimInfo) -> int:
    """The trading engine's count of orders its latent bug forgot (its /api/v1/status counters)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{info.ports['trading-engine']['http']}/api/v1/status",
                                timeout=10) as answer:
        return int(json.loads(answer.read())["counters"].get("orders_forgotten", 0))
