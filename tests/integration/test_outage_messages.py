"""What a user meets first when Kafka or Redis is away: one line naming what is unreachable and the
setting to check, exit 3 (a broken set-up, not a failed experiment), no traceback; processes that
wait say so once and back off; the worker stops on SIGTERM whatever it waits for."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.devstack import Stack
from agent.devstack.procs import free_port
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]


def coordinator(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def nowhere() -> dict[str, str]:
    """Settings whose Kafka and Redis are ports nothing listens on."""
    return {"COORDINATOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "COORDINATOR_REDIS_URL": f"redis://:s3cret@127.0.0.1:{free_port()}/0",
            "COORDINATOR_SCENARIO_DIRS": f'["{ROOT / "tests" / "fixtures" / "engine"}"]'}


@pytest.mark.parametrize("command", [("run", "kill-victim"), ("submit", "kill-victim"),
                                     ("run", "kill-victim", "--dry-run")])
def test_a_request_with_kafka_away_is_one_line_naming_it_and_exit_3(command: tuple[str, ...],
                                                                    nowhere: dict[str, str]) -> None:
    done = coordinator(*command, env=nowhere)
    kafka = nowhere["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"]
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"error: kafka unreachable at {kafka} (COORDINATOR_KAFKA_BOOTSTRAP_SERVERS): cannot connect to {kafka}: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {kafka.rsplit(':', 1)[1]})"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr


def test_with_v_the_same_error_shows_its_traceback(nowhere: dict[str, str]) -> None:
    done = coordinator("-v", "submit", "kill-victim", env=nowhere)
    assert done.returncode == 3 and "Traceback" in done.stderr
    assert "error: kafka unreachable at" in done.stderr


def test_a_query_with_redis_away_is_one_line_naming_it_and_exit_3(nowhere: dict[str, str]) -> None:
    done = coordinator("executions", "list", env=nowhere)
    port = nowhere["COORDINATOR_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines() == [
        f"error: redis unreachable (COORDINATOR_REDIS_URL): Error 111 connecting to 127.0.0.1:{port}. "
        f"Connect call failed ('127.0.0.1', {port})."], done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_an_agent_waiting_for_redis_says_so_once_not_once_per_retry(nowhere: dict[str, str], tmp_path: Path) -> None:
    agent = AgentProcess({**nowhere, "COORDINATOR_INSTANCE_ID": "waiting"}, tmp_path / "agent.log").start(timeout=60)
    try:
        time.sleep(20)  # back-off 0.5, 1, 2, 4, 8 s: five retries
        lines = agent.output().splitlines()
        assert sum('"waiting for dependencies"' in line for line in lines) == 1, lines
        assert sum("registry heartbeat" in line for line in lines) <= 1, lines
        assert "s3cret" not in agent.output()
    finally:
        started = time.monotonic()
        agent.stop(grace=10)
        assert time.monotonic() - started < 10, "stopped on SIGTERM while waiting"


async def test_the_worker_with_kafka_down_for_a_minute_writes_few_lines_and_stops_on_sigterm_within_5s(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = engine_env(stack_env, "http://127.0.0.1:9/RPC2")
    await applied_settings(env)
    worker = AgentProcess(env, tmp_path / "worker.log", ("worker", "--loglevel", "info"), r"Ready").start(timeout=180)
    try:
        await asyncio.sleep(2)
        before = len(worker.output().splitlines())
        stack.stop("kafka")
        try:
            await asyncio.sleep(60)
            written = worker.output().splitlines()[before:]
            assert len(written) < 20, "\n".join(written)
            assert any("held back" in line for line in written), "what was held back is counted"
            started = time.monotonic()
            worker.signal(signal.SIGTERM)
            code = worker.wait(10)
            took = time.monotonic() - started
        finally:
            stack.start("kafka")
        assert took < 5, f"the worker took {took:.1f}s to stop"
        assert code == 0
    finally:
        worker.stop()
