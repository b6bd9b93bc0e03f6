"""Schedules on the real stack: two agents, a schedule every 20 s on the schedules topic, each tick
fired by exactly one agent as an ordinary request. Over two minutes: exactly six runs, one per tick,
none twice, none missed; a tick while the agents are halted is skipped and reported; the schedule
survives a restart of every agent; paused, its ticks are skipped; deleted, it is gone."""

from __future__ import annotations

import asyncio
import getpass
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agent import schedules
from agent._proto.coordinator.v1 import events_pb2
from agent.devstack.procs import free_port
from agent.settings import Settings
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env, read_all, results

S = events_pb2
ROOT = Path(__file__).resolve().parents[2]
EVERY = 20


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


async def _runs(settings: Settings, name: str) -> dict[str, list[S.ScenarioResult]]:
    """The results of the schedule's runs, by the tick they say."""
    found: dict[str, list[S.ScenarioResult]] = {}
    for result in results(await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results)):
        if result.labels.get("schedule") == name:
            found.setdefault(result.labels["schedule-tick"], []).append(result)
    return found


async def _until(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        await asyncio.sleep(1)


def _iso(tick: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tick))


async def _outcomes(env: dict[str, str], name: str) -> list[schedules.Outcome]:
    redis = aioredis.from_url(env["COORDINATOR_REDIS_URL"], decode_responses=True)
    try:
        return await schedules.outcomes(redis, env["COORDINATOR_REDIS_KEY_PREFIX"], name, 100)
    finally:
        await redis.aclose()


@pytest.mark.timeout(900)
async def test_a_schedule_fires_each_tick_once_across_two_agents_skips_while_halted_and_outlives_them(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = engine_env(stack_env, "http://127.0.0.1:1/RPC2")
    settings = await applied_settings(env)
    name = f"every-{EVERY}s-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "schedule.yaml"
    path.write_text(f"""\
apiVersion: coordinator/v1
kind: Schedule
metadata: {{name: {name}, labels: {{team: trading}}}}
spec:
  scenario: slow-link
  parameters: {{proxy: {name}, hold: 1s, listen: '127.0.0.1:{free_port()}', upstream: '127.0.0.1:{free_port()}'}}
  every: {EVERY}s
""")
    agents = [AgentProcess({**env, "COORDINATOR_INSTANCE_ID": f"agent-{n}"}, tmp_path / f"agent-{n}.log").start()
              for n in ("a", "b")]
    try:
        applied = _cli(env, "schedule", "apply", str(path))
        assert applied.returncode == 0, applied.stderr
        after = time.time()
        assert applied.stdout.startswith(f"schedule {name} applied: every 20s; next tick "), applied.stdout

        # two minutes: the six ticks after the apply, each run once
        first = math.floor(after / EVERY) * EVERY + EVERY
        six = [first + EVERY * k for k in range(6)]

        async def six_ran() -> bool:
            return _iso(six[-1]) in await _runs(settings, name)

        await _until("the sixth tick's result", six_ran, timeout=six[-1] - time.time() + 90)
        runs = await _runs(settings, name)
        assert sorted(runs) == [_iso(t) for t in six], sorted(runs)
        for tick in six:
            ran = runs[_iso(tick)]
            assert [r.status for r in ran] == [S.EXECUTION_STATUS_PASSED], (tick, [r.reason for r in ran])
            assert ran[0].request_id == f"schedule-{name}-{schedules.tick_ms(tick)}"
            assert ran[0].labels["team"] == "trading" and ran[0].requester == f"cli:{getpass.getuser()}"
        fired = [o for o in await _outcomes(env, name) if o.fired]
        assert sorted(o.tick for o in fired) == six, "one claim per tick, across both agents"

        # halted: the next tick is skipped, and says why
        assert _cli(env, "halt", "--reason", "maintenance").returncode == 0
        halted_tick = math.floor(time.time() / EVERY) * EVERY + EVERY

        async def skipped() -> bool:
            return any(o.tick == halted_tick for o in await _outcomes(env, name))

        await _until("the tick while halted", skipped, timeout=halted_tick - time.time() + 30)
        [outcome] = [o for o in await _outcomes(env, name) if o.tick == halted_tick]
        assert not outcome.fired and outcome.reason == "the agents are halted (maintenance)", outcome
        listed = _cli(env, "schedule", "list")
        assert f"{_iso(halted_tick).replace('T', ' ').rstrip('Z')} UTC  skipped: the agents are halted (maintenance)" \
            in listed.stdout, listed.stdout
        assert _cli(env, "resume").returncode == 0
        assert _iso(halted_tick) not in await _runs(settings, name)

        # every agent restarted: a new one reads the schedule from the topic and fires it
        for agent in agents:
            agent.stop()
        agents = [AgentProcess({**env, "COORDINATOR_INSTANCE_ID": "agent-c"}, tmp_path / "agent-c.log").start()]
        restarted = time.time()

        async def fired_after_restart() -> bool:
            return any(tick > _iso(restarted) for tick in await _runs(settings, name))

        await _until("a run after the restart", fired_after_restart, timeout=EVERY + 90)

        # paused: skipped and reported; deleted: gone
        assert _cli(env, "schedule", "pause", name).returncode == 0
        paused_at = time.time()

        async def paused_skip() -> bool:
            return any(o.tick > paused_at and o.reason == "the schedule is paused" for o in await _outcomes(env, name))

        await _until("a tick skipped while paused", paused_skip, timeout=EVERY + 60)
        deleted = _cli(env, "schedule", "delete", name)
        assert deleted.returncode == 0 and deleted.stdout.strip() == f"schedule {name} deleted", deleted.stdout
        assert name not in _cli(env, "schedule", "list").stdout
        missing = _cli(env, "schedule", "pause", name)
        assert missing.returncode == 1 and f"no schedule named '{name}'" in missing.stderr
    finally:
        for agent in agents:
            agent.stop()
        _cli(env, "resume")


def test_an_invalid_schedule_is_refused_with_every_problem_and_nothing_published(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = engine_env(stack_env, "http://127.0.0.1:1/RPC2")
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: coordinator/v1\nkind: Schedule\nmetadata: {name: Broken}\n"
                    "spec: {scenario: slow-link, every: 20s, cron: '* * * * *'}\n")
    done = _cli(env, "schedule", "apply", str(path))
    assert done.returncode == 1
    assert f"{path}:3:" in done.stderr and "metadata.name" in done.stderr
    assert "give exactly one of 'every' (an interval) and 'cron'" in done.stderr
    assert "2 problem(s); nothing applied" in done.stderr
