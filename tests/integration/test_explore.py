"""``coordinator explore`` on the real stack: the sim under supervisord, Toxiproxy, the agent and the
stream worker; every run an ordinary scenario request over Kafka.

With the trading engine's latent bug on (knob forget_when_both_down: orders forgotten when its
exchange link is down and its risk monitor restarts within 5 s), a short exploration finds a failing
schedule and shrinks it to exactly those two faults (the latency beside them is dropped); the YAML it
writes fails 3 of 3 ``coordinator run``s. With the bug off, the same budget finds nothing. Halting
the agents mid-run stops the exploration with a report of what ran and no fault left."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import codec
from agent._proto.coordinator.v1 import events_pb2
from agent.settings import Settings
from sim.launch import Sim, SimInfo
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import read_all, until_verdicts
from tests.integration.test_flagship import _forgotten, _processes, _restart, env, running, settings, sim

__all__ = ["env", "running", "settings", "sim"]  # the flagship's fixtures, for this module's own sim
ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "tests" / "fixtures" / "explore" / "both-down.yaml"
#: its first schedule holds all three faults: slow-exchange at 0s, link-down at 0.2s, restart-risk at 0.8s
SEED = "5"


def _cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _proxy(stack_env: dict[str, str]) -> dict[str, Any]:
    url = f"{stack_env['COORDINATOR_TOXIPROXY_URL']}/proxies/engine-to-exchange"
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - the stack's own http URL
        return json.loads(answer.read())  # type: ignore[no-any-return]


def _nothing_left(stack_env: dict[str, str], info: SimInfo) -> None:
    proxy = _proxy(stack_env)
    assert proxy["enabled"] is True and proxy["toxics"] == [], proxy
    assert _processes(info)["risk-monitor"]["statename"] == "RUNNING"


@pytest.fixture(scope="module")
async def answering(running: tuple[AgentProcess, AgentProcess], settings: Settings,
                    tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tests below start once the worker gives verdicts (before that, a run is INCONCLUSIVE)."""
    await until_verdicts(settings, tmp_path_factory.mktemp("warm"))


@pytest.fixture
def buggy(sim: tuple[Sim, SimInfo]) -> Iterator[None]:
    _restart(*sim, "trading-engine", {"forget_when_both_down": True})
    yield
    _restart(*sim, "trading-engine")


@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("answering", "buggy")
async def test_explore_finds_the_two_fault_bug_shrinks_it_and_the_yaml_fails_every_run(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], env: dict[str, str], settings: Settings,
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    _, info = sim
    out = tmp_path / "out"
    done = await asyncio.to_thread(_cli, env, "explore", str(SPACE), "--seed", SEED, "--out", str(out))
    said = done.stdout + done.stderr
    assert done.returncode == 1, said  # a failure found
    assert "FAILURE_FOUND: failure found at run 1" in said, said
    report = json.loads((out / "report.json").read_text())
    assert report["found"]["faults"] == "slow-exchange at 0s for 1s, link-down at 0.2s for 1.5s, restart-risk at 0.8s"
    assert {p["fault"] for p in report["minimal"]["schedule"]} == {"link-down", "restart-risk"}, said
    assert "no smaller schedule fails" in report["reason"], said
    dropped = [t for t in report["trials"] if t["phase"] == "shrink" and t["stillFails"]]
    assert dropped and all(t["statuses"] == ["FAILED", "FAILED"] for t in dropped)
    assert _forgotten(info) > 0, "the bug's own mark: the engine forgot orders"
    assert (out / "report.html").read_text().count("<svg") == 2
    _nothing_left(stack_env, info)

    # the exploration's own event on the results topic, for dashboards
    records = await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results)
    events = [codec.decode_event(r.value, r.headers, events_pb2.ExplorationResult) for r in records
              if codec.headers_to_dict(r.headers).get("ce_type") == "coordinator.v1.ExplorationResult"]
    [event] = [e for e in events if e.name == "both-down" and e.outcome == events_pb2.EXPLORATION_OUTCOME_FAILURE_FOUND]
    assert event.runs == report["runs"] and event.first_failure_run == 1 and event.seed == int(SEED)
    assert sorted(f.split(" at ")[0] for f in event.minimal_faults) == ["link-down", "restart-risk"]
    assert event.minimal_scenario_yaml == (out / "minimal.yaml").read_text()

    # the minimal scenario is an ordinary one: valid, and it fails 3 of 3 runs
    checked = await asyncio.to_thread(_cli, env, "validate", str(out / "minimal.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for attempt in range(3):
        again = await asyncio.to_thread(_cli, env, "run", str(out / "minimal.yaml"), "--timeout", "180")
        assert again.returncode == 1, (attempt, again.stdout + again.stderr)
        assert "FAILED" in again.stdout and "'order_lost' appeared" in again.stdout, again.stdout
    _nothing_left(stack_env, info)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("answering")
async def test_with_the_bug_off_the_same_budget_reports_no_failure(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], env: dict[str, str], tmp_path: Path
) -> None:
    done = await asyncio.to_thread(_cli, env, "explore", str(SPACE), "--seed", SEED, "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "NO_FAILURE" and report["runs"] == 2, report
    assert [r["status"] for r in report["history"]] == ["PASSED", "PASSED"]
    assert not (tmp_path / "minimal.yaml").exists()


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("answering")
async def test_halting_the_agents_stops_the_exploration_with_a_report_and_no_fault_left(
    sim: tuple[Sim, SimInfo], running: tuple[AgentProcess, AgentProcess], env: dict[str, str],
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    _, info = sim
    exploring = subprocess.Popen(  # noqa: S603, ASYNC220 - our own CLI, waited for in a thread
        [sys.executable, "-m", "agent.cli", "explore", str(SPACE), "--seed", SEED, "--runs", "5", "--out",
         str(tmp_path)], env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 120
        while not _proxy(stack_env)["toxics"]:  # the first run's latency is on: a fault is live
            assert time.monotonic() < deadline and exploring.poll() is None, "no fault came"
            await asyncio.sleep(0.05)
        halted = await asyncio.to_thread(_cli, env, "halt", "--reason", "game day over")
        assert halted.returncode == 0, halted.stderr
        said, _ = await asyncio.to_thread(exploring.communicate, timeout=240)
    finally:
        if exploring.poll() is None:
            exploring.kill()
        resumed = await asyncio.to_thread(_cli, env, "resume")
        assert resumed.returncode == 0, resumed.stderr
    assert exploring.returncode == 2, said  # halted
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "HALTED" and report["runs"] == 1, said
    assert report["history"][0]["status"] == "ABORTED" and "game day over" in report["reason"], report
    assert report["history"][0]["executionId"], "the run is named, for coordinator report"
    _nothing_left(stack_env, info)
