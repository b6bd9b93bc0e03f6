"""The service registry in the real Redis: the agent's own entry, and targets found through it."""

from __future__ import annotations

import asyncio
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
