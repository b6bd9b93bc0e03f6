"""Verdicts for a containerised service: the sim's risk monitor runs as a container of the stack's
engine (a compose-labelled service), the agent restarts it through the docker driver, and the
stream worker joins its audit events to the injection: PASSED when it comes back and reports, FAILED
with the reason when the restarted container never becomes ready."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import pytest

from agent import client
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.devstack.engine import BASE_IMAGE, STACK_LABEL, python_binds
from agent.devstack.procs import free_port
from agent.drivers.docker import COMPOSE_PROJECT, COMPOSE_SERVICE
from agent.settings import Settings
from sim.runtime import ensure_topics
from tests.helpers.agent import ROOT, AgentProcess, worker_and_agent
from tests.helpers.engine import applied_settings, chatter, engine_env

pytestmark = pytest.mark.timeout(600)

RESTART = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: {name}}}
spec:
  targets:
    risk: {{driver: docker, service: risk-monitor,
           selector: {{compose: {{project: {project}, service: risk-monitor}}}}}}
  steps:
    - {{name: restart-risk, fault: restart, target: risk, parameters: {{timeout: 5s}}}}
  expectations:
"""
BACK = """\
    - {name: ready-again, after: restart-risk, attribution: target-window,
       event: {type: service_ready, service: risk-monitor}, appears: {within: 30s}}
    - {name: reports-resume, after: restart-risk, attribution: target-window, onlyAfter: ready-again,
       event: {type: risk_report, service: risk-monitor}, appears: {within: 30s}}
"""
STAYS_UP = """\
    - {name: stays-up, after: restart-risk, event: {service: risk-monitor}, stable: {for: 15s, within: 30s}}
"""


def restart_scenario(risk_monitor: RiskMonitor, name: str, expectations: str) -> str:
    """A file restarting the risk monitor's container once, with these expectations (YAML lines)."""
    scenario = risk_monitor.dir / f"{name}.yaml"
    scenario.write_text(RESTART.format(name=name, project=risk_monitor.project) + expectations)
    return str(scenario)


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = engine_env(stack_env, "http://127.0.0.1:9/RPC2")  # no supervisord: the target is a container
    alive = tmp_path_factory.mktemp("alive") / "worker.alive"  # what the compose healthcheck reads
    return {**base, "COORDINATOR_WORKER_APP_ID": f"{base['COORDINATOR_REDIS_KEY_PREFIX']}-worker",
            "COORDINATOR_WORKER_TICK_INTERVAL": "0.2", "COORDINATOR_VERDICT_GRACE": "8",
            "COORDINATOR_WORKER_ALIVE_FILE": str(alive)}


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    applied = await applied_settings(env)
    await ensure_topics(applied.kafka_bootstrap_servers, applied.topics.audit_events)
    return applied


@pytest.fixture(scope="module")
def running(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    with worker_and_agent(env, tmp_path_factory.mktemp("containers")) as both:
        yield both


class RiskMonitor:
    """The sim's risk monitor as a container: the host's Python and this checkout mounted read-only,
    the host's network and process ids (so its audit events name the pid the engine reports)."""

    def __init__(self, docker: aiodocker.Docker, settings: Settings, directory: Path) -> None:
        self.docker, self.settings, self.dir = docker, settings, directory
        self.project = f"p{uuid.uuid4().hex[:8]}"
        self.knobs = directory / "knobs.json"
        self.knobs.write_text("{}")
        self.container: aiodocker.containers.DockerContainer | None = None

    async def start(self) -> None:
        http = free_port()
        command = [str(ROOT / ".venv" / "bin" / "python"), "-m", "sim", "run", "risk-monitor", "--grpc-port",
                   str(free_port()), "--http-port", str(http), "--report-interval", "1"]
        environment = {"SIM_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap_servers,
                       "SIM_REDIS_URL": self.settings.redis_url.get_secret_value(),
                       "SIM_AUDIT_TOPIC": self.settings.topics.audit_events, "SIM_KNOBS_FILE": str(self.knobs),
                       "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        self.container = await self.docker.containers.create(name=f"{self.project}-risk-monitor-1", config={
            "Image": BASE_IMAGE, "Cmd": command, "WorkingDir": str(ROOT),
            "Env": [f"{k}={v}" for k, v in environment.items()],
            "Labels": {COMPOSE_PROJECT: self.project, COMPOSE_SERVICE: "risk-monitor", STACK_LABEL: "test"},
            "HostConfig": {"NetworkMode": "host", "PidMode": "host",
                           "Binds": [*python_binds(ROOT), f"{self.dir}:{self.dir}:ro"]}})
        await self.container.start()

    async def logs(self) -> str:
        assert self.container is not None
        return "".join(await self.container.log(stdout=True, stderr=True))[-3000:]

    async def remove(self) -> None:
        if self.container is not None:
            await self.container.delete(force=True)


@pytest.fixture
async def risk_monitor(stack_env: dict[str, str], settings: Settings, tmp_path: Path) -> AsyncIterator[RiskMonitor]:
    async with aiodocker.Docker(url=stack_env["COORDINATOR_DOCKER_URL"]) as docker:
        made = RiskMonitor(docker, settings, tmp_path)
        await made.start()
        try:
            yield made
        finally:
            await made.remove()


async def _run(settings: Settings, risk_monitor: RiskMonitor) -> S.ScenarioResult:
    scenario = restart_scenario(risk_monitor, "restart-the-risk-monitor-container", BACK)
    trail = asyncio.create_task(chatter(settings, "market-data", "quote_published"))
    try:
        result = await client.run_and_follow(settings, client.build_request(scenario, {}), timeout=150)
    finally:
        trail.cancel()
    assert result is not None, "no result\n" + await risk_monitor.logs()
    return result


async def test_a_restarted_container_that_comes_back_and_reports_passes(
        running: tuple[AgentProcess, AgentProcess], settings: Settings, risk_monitor: RiskMonitor) -> None:
    result = await _run(settings, risk_monitor)
    verdicts = {v.expectation_name: v for v in result.verdicts}
    assert result.status == S.EXECUTION_STATUS_PASSED, (result.reason, await risk_monitor.logs())
    assert verdicts["ready-again"].status == S.VERDICT_STATUS_PASSED
    assert verdicts["reports-resume"].status == S.VERDICT_STATUS_PASSED
    [injection] = result.injections
    assert (injection.driver, list(injection.touched)) == ("docker", [f"{risk_monitor.project}-risk-monitor-1"])
    assert injection.reacted, injection.reaction
    touched = await asyncio.to_thread(os.path.getmtime, running[0].env["COORDINATOR_WORKER_ALIVE_FILE"])
    assert time.time() - touched < 5, "the worker touches its alive file as it ticks"


async def test_a_restarted_container_that_never_becomes_ready_fails_with_the_reason(
        running: tuple[AgentProcess, AgentProcess], settings: Settings, risk_monitor: RiskMonitor) -> None:
    risk_monitor.knobs.write_text(json.dumps({"risk-monitor": {"never_ready": True}}))  # read at its next start
    result = await _run(settings, risk_monitor)
    verdicts = {v.expectation_name: v for v in result.verdicts}
    assert result.status == S.EXECUTION_STATUS_FAILED, result.reason
    ready = verdicts["ready-again"]
    assert ready.status == S.VERDICT_STATUS_FAILED, (ready.reason, await risk_monitor.logs())
    assert ready.reason.startswith("no 'service_ready from risk-monitor' by the deadline"), ready.reason
    assert "risk-monitor did send audit events since the injection" in ready.reason, "it restarted, not silent"
    assert verdicts["reports-resume"].status == S.VERDICT_STATUS_FAILED


async def test_a_container_that_crashes_after_coming_back_fails_stable_through_the_engines_events(
        running: tuple[AgentProcess, AgentProcess], settings: Settings, risk_monitor: RiskMonitor) -> None:
    """The crash is seen without the service's help: the engine's ``die`` event becomes the agent's
    process_exited platform event, and the stable expectation fails on it."""
    risk_monitor.knobs.write_text(json.dumps({"risk-monitor": {"crash_after": 8}}))  # read at its next start
    scenario = restart_scenario(risk_monitor, "the-risk-monitor-container-stays-up", STAYS_UP)
    result = await client.run_and_follow(settings, client.build_request(scenario, {}), timeout=150)
    assert result is not None, "no result\n" + await risk_monitor.logs()
    [verdict] = result.verdicts
    assert (result.status, verdict.status) == (S.EXECUTION_STATUS_FAILED, S.VERDICT_STATUS_FAILED), verdict.reason
    assert "risk-monitor went down" in verdict.reason and "process_exited (exit status 3)" in verdict.reason
