"""The agent's HTTP surface against the real stack, including Kafka going away and coming back."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from agent.devstack import Stack
from tests.helpers.processes import coordinator_serve


async def _get(url: str) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def _wait_for_status(url: str, status: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got, body = await _get(url)
        if got == status:
            assert isinstance(body, dict)
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} stayed {got}: {body}")
        await asyncio.sleep(0.2)


async def test_health_and_metrics_answer(stack_env: dict[str, str]) -> None:
    with coordinator_serve(stack_env) as base:
        status, body = await _get(f"{base}/api/v1/health")
        assert status == 200 and body["status"] == "ok"
        await _get(f"{base}/api/v1/ready")
        status, text = await _get(f"{base}/metrics")
        assert status == 200
        assert 'coordinator_ready_checks_total{check="kafka",outcome="ok"}' in text
        assert "coordinator_build_info" in text


async def test_ready_reports_503_naming_kafka_while_the_broker_is_down_and_200_once_it_is_back(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    with coordinator_serve({**stack_env, "COORDINATOR_CREATE_TOPICS": "true"}) as base:
        ready = f"{base}/api/v1/ready"
        body = await _wait_for_status(ready, 200, timeout=60)
        assert body["checks"]["kafka"]["ok"] and body["checks"]["redis"]["ok"]

        await asyncio.to_thread(stack.stop, "kafka")
        try:
            body = await _wait_for_status(ready, 503, timeout=20)
            assert body["failing"][0] == "kafka"  # "engine" may follow, naming a part that waits for it
            assert body["status"] == "not_ready"
            assert "kafka" in body["message"]
            assert body["checks"]["redis"]["ok"] is True
        finally:
            await asyncio.to_thread(stack.start, "kafka")

        body = await _wait_for_status(ready, 200, timeout=60)
        assert body["failing"] == []


async def test_ready_reports_503_naming_redis_when_redis_is_unreachable(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "COORDINATOR_REDIS_URL": "redis://127.0.0.1:1/0"}
    with coordinator_serve(env) as base:
        body = await _wait_for_status(f"{base}/api/v1/ready", 503, timeout=20)
        assert body["failing"] == ["redis", "engine"]
        deadline = time.monotonic() + 30
        while "waiting for Kafka and Redis" not in body["checks"]["engine"]["detail"]:
            assert time.monotonic() < deadline, body
            body = await _wait_for_status(f"{base}/api/v1/ready", 503, timeout=20)
