"""The service registry in the real Redis: the agent's own entry, and targets found through it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.devstack.procs import free_port
from agent.drivers.probes import Prober
from agent.scenario.validation import load_scenario
from agent.settings import Settings
from agent.stopping import PARTS_STOP_S
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env

SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: registry-lookup}}
spec:
  targets:
    pricer: {{driver: supervisor, service: {service}, selector: {{program: pricer}}}}
  steadyState:
    probes:
      - {{name: pricer-serving, grpcHealth: {{target: pricer}}, tolerance: {{equals: SERVING}}, timeout: 3s}}
  steps:
    - {{name: settle, wait: 1s}}
"""


@pytest.fixture
async def health_server() -> AsyncIterator[int]:
    port = free_port()
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield port
    await server.stop(None)


async def test_a_target_without_an_address_is_found_through_the_registry_and_a_dead_entry_is_not_used(
    stack_env: dict[str, str], health_server: int
) -> None:
    settings = Settings(redis_url=stack_env["COORDINATOR_REDIS_URL"], registry_ttl=5)
    service = f"pricer-{uuid.uuid4().hex[:6]}"
    key = f"registry:services:{service}"
    scenario = load_scenario(SCENARIO.format(service=service))
    probe = scenario.spec.steady_state.probes[0]  # type: ignore[union-attr]
    registry = aioredis.from_url(stack_env["COORDINATOR_REDIS_URL"], decode_responses=True)
    prober = Prober(settings)
    try:
        missing = await prober.run(probe, scenario)
        assert not missing.ok and f"service '{service}' is not in the registry" in missing.reason

        fresh = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await registry.hset(key, mapping={"name": service, "host": "127.0.0.1", "grpc_port": str(health_server),
                                          "http_port": "1", "status": "ready", "updated_at": fresh})
        await registry.expire(key, 2)
        found = await prober.run(probe, scenario)
        assert found.ok and found.observed == "SERVING", found.reason

        await asyncio.sleep(2.5)  # the entry's TTL passes: Redis drops it
        expired = await prober.run(probe, scenario)
        assert not expired.ok and "not in the registry" in expired.reason

        stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        await registry.hset(key, mapping={"host": "127.0.0.1", "grpc_port": str(health_server), "status": "ready",
                                          "updated_at": stale})  # a writer that sets no expiry, gone quiet
        dead = await prober.run(probe, scenario)
        assert not dead.ok and "registry entry is stale" in dead.reason
    finally:
        await registry.delete(key)
        await registry.aclose()
        await prober.aclose()


async def test_the_agent_registers_itself_with_a_ttl_and_leaves_when_it_stops(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = engine_env(stack_env, "http://127.0.0.1:1/RPC2")
    await applied_settings(env)
    key = f"registry:services:{env['COORDINATOR_REGISTRY_NAME']}"
    registry = aioredis.from_url(stack_env["COORDINATOR_REDIS_URL"], decode_responses=True)
    agent = AgentProcess(env, tmp_path / "agent.log", ready=r"grpc on [\d.]+:(\d+)").start()
    try:
        deadline = time.monotonic() + 30
        while (await registry.hget(key, "status")) != "ready":
            assert time.monotonic() < deadline, await registry.hgetall(key)
            await asyncio.sleep(0.2)
        entry = await registry.hgetall(key)
        assert entry["grpc_port"] == agent.url and entry["type"] == "coordinator" and entry["host"] == "127.0.0.1"
        assert entry["updated_at"].endswith("Z") and int(entry["http_port"]) > 0
        assert 0 < await registry.ttl(key) <= 15
        agent.stop()
        assert agent.proc is not None and agent.proc.returncode == 0, agent.output()[-3000:]
        assert not await registry.exists(key), "a clean stop removes the entry\n" + agent.output()[-3000:]
    finally:
        agent.stop()
        await registry.aclose()


async def _serving(env: dict[str, str], tmp_path: Path) -> tuple[AgentProcess, aioredis.Redis, str]:
    await applied_settings(env)
    key = f"registry:services:{env['COORDINATOR_REGISTRY_NAME']}"
    registry = aioredis.from_url(env["COORDINATOR_REDIS_URL"], decode_responses=True)
    agent = AgentProcess(env, tmp_path / "agent.log", ready=r"grpc on [\d.]+:(\d+)").start()
    deadline = time.monotonic() + 30
    while (await registry.hget(key, "status")) != "ready":
        assert time.monotonic() < deadline, agent.output()[-3000:]
        await asyncio.sleep(0.2)
    return agent, registry, key


def _stopped_within(agent: AgentProcess, seconds: float) -> float:
    assert agent.proc is not None
    began = time.monotonic()
    agent.signal(signal.SIGTERM)
    try:
        agent.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"not stopped {seconds}s after SIGTERM:\n{agent.output()[-3000:]}")
    return time.monotonic() - began


async def test_an_agent_stopped_just_as_it_starts_serving_exits_cleanly_every_time(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM at the moment the entry says ready, eight times at offsets of 0-210 ms: each agent exits
    0 within seconds, its entry removed, nothing left behind. (Before parts were cancelled again at
    stop, about one such stop in three never ended: a cancellation dropped by asyncio.wait_for.)"""
    env = engine_env(stack_env, "http://127.0.0.1:1/RPC2")
    for attempt in range(8):
        logs = tmp_path / str(attempt)
        logs.mkdir()
        agent, registry, key = await _serving(env, logs)
        try:
            await asyncio.sleep(0.03 * attempt)
            took = _stopped_within(agent, PARTS_STOP_S + 20)
            out = agent.output()
            assert agent.proc is not None and agent.proc.returncode == 0, out[-3000:]
            assert "left behind" not in out, out[-3000:]
            assert took < PARTS_STOP_S, f"attempt {attempt}: {took:.1f}s\n{out[-3000:]}"
            assert not await registry.exists(key), out[-3000:]
        finally:
            agent.stop()
            await registry.aclose()


async def test_a_part_that_does_not_stop_is_left_behind_named_and_the_agent_still_leaves_cleanly(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """A part stuck at stop (the failpoint ignores cancellation, as a stuck client would) is named with
    where it waits; the registry entry is removed, the clients closed, and the process exits 0."""
    env = {**engine_env(stack_env, "http://127.0.0.1:1/RPC2"), "COORDINATOR_FAILPOINTS": "part-stopping=1*hang"}
    agent, registry, key = await _serving(env, tmp_path)
    try:
        took = _stopped_within(agent, PARTS_STOP_S + 30)
        out = agent.output()
        assert agent.proc is not None and agent.proc.returncode == 0, out[-3000:]
        assert PARTS_STOP_S - 1 <= took, f"stopped in {took:.1f}s without waiting for the stuck part"
        left = [json.loads(line) for line in out.splitlines() if "left behind" in line]
        assert len(left) == 1 and left[0]["seconds"] == PARTS_STOP_S, out[-3000:]
        assert "failpoints.py" in left[0]["waiting_at"] and "in point" in left[0]["waiting_at"], left
        assert '"agent stopped"' in out and left[0]["part"] in out.split('"agent stopped"')[0]
        assert not await registry.exists(key), "the entry is removed after a part is left behind\n" + out[-3000:]
    finally:
        agent.stop()
        await registry.aclose()


async def test_an_agent_whose_event_loop_is_blocked_at_stop_exits_after_its_grace_with_where_it_was(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The loop blocked (a synchronous call at stop): the watchdog thread exits the process with status 1
    ``stop_grace`` seconds after SIGTERM, having written every thread's stack."""
    env = {**engine_env(stack_env, "http://127.0.0.1:1/RPC2"), "COORDINATOR_FAILPOINTS": "part-stopping=1*block(120)",
           "COORDINATOR_STOP_GRACE": "3"}
    agent, registry, key = await _serving(env, tmp_path)
    try:
        took = _stopped_within(agent, 30)
        out = agent.output()
        assert agent.proc is not None and agent.proc.returncode == 1, out[-3000:]
        assert 3 <= took < 20, took
        assert "agent not stopped 3s after SIGTERM; exiting" in out, out[-3000:]
        assert "failpoints.py" in out and 'line' in out and "Thread" in out, out[-3000:]  # faulthandler's stacks
    finally:
        agent.stop()
        await registry.delete(key)
        await registry.aclose()


async def test_the_allow_list_comes_from_the_configuration_service_and_changes_while_the_agent_runs(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    from agent import client
    from agent._proto.coordinator.v1 import events_pb2
    from tests.helpers.config_server import ConfigServer

    server = ConfigServer()
    server.values = {"allowed_targets": {"key": "allowed_targets", "value": '["risk-*"]', "type": "json",
                                         "environment": "test", "last_updated": "2026-11-21T06:00:00Z"}}
    await server.start()
    env = {**engine_env(stack_env, "http://127.0.0.1:1/RPC2"), "COORDINATOR_CONFIG_SERVICE_URL":
           f"http://127.0.0.1:{server.port}", "COORDINATOR_CONFIG_ENVIRONMENT": "test",
           "COORDINATOR_CONFIG_SERVICE_TTL": "1"}
    settings = await applied_settings(env)
    agent = AgentProcess(env, tmp_path / "agent.log").start()
    try:
        def slow_link() -> events_pb2.ScenarioRequest:
            return client.build_request("slow-link", {"proxy": f"cfg-{uuid.uuid4().hex[:6]}", "hold": "1s",
                                                      "listen": f"127.0.0.1:{free_port()}",
                                                      "upstream": f"127.0.0.1:{free_port()}"})

        refused = await client.run_and_follow(settings, slow_link(), timeout=60)
        assert refused is not None and refused.status == events_pb2.EXECUTION_STATUS_REJECTED
        assert "target 'link' is not in the agent's allow-list (risk-*)" in refused.reason
        assert set(server.environments) == {"test"}

        server.values["allowed_targets"]["value"] = '["*"]'
        await asyncio.sleep(2.5)  # the cached answer expires; the agent asks again
        allowed = await client.run_and_follow(settings, slow_link(), timeout=60)
        assert allowed is not None and allowed.status == events_pb2.EXECUTION_STATUS_PASSED, allowed.reason
    finally:
        agent.stop()
        await server.stop()
