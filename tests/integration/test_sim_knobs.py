"""Sim knobs on a real process: slow start, crash, duplicated audit events (Kafka and Redis real)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import redis

from agent.devstack.procs import free_port
from sim.runtime import ensure_topics
from tests.helpers.engine import read_all

ROOT = Path(__file__).resolve().parents[2]


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ready", timeout=1) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _run_exchange(env: dict[str, str], log: Path) -> tuple[list[int], int]:
    """Run the exchange with a start delay and a crash; the readiness answers seen, and its exit code."""
    http = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sim", "run", "exchange", "--grpc-port", str(free_port()),
                                 "--http-port", str(http), "--start-delay", "2", "--crash-after", "4"],
                                cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            status = _ready(http)
            if status and (not seen or seen[-1] != status):
                seen.append(status)
            time.sleep(0.1)
        return seen, proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_slow_starting_crashing_service_says_so_and_its_audit_events_can_be_doubled(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    audit_topic = f"test.{uuid.uuid4().hex[:8]}.audit"
    env = {"SIM_KAFKA_BOOTSTRAP": stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
           "SIM_REDIS_URL": stack_env["COORDINATOR_REDIS_URL"], "SIM_AUDIT_TOPIC": audit_topic,
           "SIM_AUDIT_DUPLICATE": "1", "PATH": "/usr/bin:/bin"}
    await ensure_topics(env["SIM_KAFKA_BOOTSTRAP"], audit_topic)
    seen, code = await asyncio.to_thread(_run_exchange, env, tmp_path / "exchange.log")
    assert code == 3, "crash_after exits with status 3"
    assert seen == [503, 200], f"not ready for the start delay, then ready: {seen}"
    registry = redis.Redis.from_url(stack_env["COORDINATOR_REDIS_URL"], decode_responses=True)
    assert registry.hget("registry:services:exchange", "status") == "ready", "a crash leaves the entry to expire"
    assert 0 < registry.ttl("registry:services:exchange") <= 10

    events = [json.loads(r.value) for r in await read_all(stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
                                                          audit_topic)]
    kinds = [e["event_type"] for e in events]
    assert kinds == ["service_started", "service_started", "service_ready", "service_ready"], kinds
    assert "service_stopping" not in kinds, "a crash says nothing"
