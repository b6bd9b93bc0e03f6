"""The flagship on a secured stack: Kafka with only TLS listeners (SASL_SSL with SCRAM, and mTLS),
Redis over TLS with an ACL user and no default user; the agent, the stream worker and the sim all on
the secured listener. A wrong password and an untrusted CA are named at start-up, with /ready 503.
No log or event of these runs carries a password or a key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from agent import client
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.devstack import Stack
from agent.devstack.secure import authority
from agent.settings import Settings
from sim import kafka_security
from sim.launch import Sim, SimInfo, SimOptions
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import applied_settings, engine_env, read_all

pytestmark = pytest.mark.timeout(900)

FLAGSHIP = "restart-risk-monitor-during-trading"
PARAMS = {"recoveryDeadline": "25s", "observation": "2s", "reportDeadline": "30s", "lossWindow": "10s"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("secured"))
    started = time.monotonic()
    try:
        stack.up(("kafka", "redis"), secure=True)
        print(f"secured stack (kafka, redis) up in {time.monotonic() - started:.1f}s")
        yield stack
    finally:
        stack.down()


class Running:
    def __init__(self, env: dict[str, str], settings: Settings, sim: Sim, info: SimInfo, logs: Path,
                 worker: AgentProcess, agent: AgentProcess) -> None:
        self.env, self.settings, self.sim, self.info, self.logs = env, settings, sim, info, logs
        self.worker, self.agent = worker, agent


@pytest.fixture(scope="module", params=["sasl", "mtls"])
def running(request: pytest.FixtureRequest, secured: Stack, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Running]:
    listener = request.param
    stack_env = secured.env(listener)
    base = engine_env({**stack_env, "COORDINATOR_TOXIPROXY_URL": "http://127.0.0.1:9"}, "http://127.0.0.1:9/RPC2")
    sfx = base["COORDINATOR_REDIS_KEY_PREFIX"]
    directory = tmp_path_factory.mktemp(f"secured-{listener}")
    sim = Sim(directory / "sim")
    info = sim.up(SimOptions(kafka=stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
                             redis_url=stack_env["COORDINATOR_REDIS_URL"], rate=20, order_timeout=30,
                             loss_timeout=30, audit_topic=f"test.{sfx}.audit", orders_topic=f"test.{sfx}.orders",
                             kafka_env=kafka_security.from_agent(stack_env)), timeout=120)
    env = {**base, **info.agent_env(), "COORDINATOR_WORKER_APP_ID": f"{sfx}-worker",
           "COORDINATOR_WORKER_TICK_INTERVAL": "0.2", "COORDINATOR_VERDICT_GRACE": "8"}
    settings = asyncio.run(applied_settings(env))
    worker = AgentProcess(env, directory / "worker.log", ("worker", "--loglevel", "info"), r"Ready").start(timeout=120)
    agent = AgentProcess(env, directory / "agent.log").start(timeout=90)
    try:
        yield Running(env, settings, sim, info, directory, worker, agent)
    finally:
        agent.stop()
        worker.stop()
        sim.down()


async def test_the_flagship_passes_with_every_client_on_the_secured_listener(running: Running) -> None:
    protocol = running.env["COORDINATOR_KAFKA__SECURITY_PROTOCOL"]
    assert protocol in {"SASL_SSL", "SSL"} and running.env["COORDINATOR_REDIS_URL"].startswith("rediss://")
    result = await client.run_and_follow(running.settings, client.build_request(FLAGSHIP, PARAMS), timeout=240)
    assert result is not None, "no result"
    verdicts = {v.expectation_name: (S.VerdictStatus.Name(v.status), v.reason) for v in result.verdicts}
    assert result.status == S.EXECUTION_STATUS_PASSED, (result.reason, verdicts)
    assert verdicts["risk-monitor-ready-again"][0] == "VERDICT_STATUS_PASSED"
    assert verdicts["risk-reports-resume"][0] == "VERDICT_STATUS_PASSED", "the sim's audit events came through"


async def test_no_log_or_event_carries_a_password_or_a_key(running: Running, secured: Stack) -> None:
    material = (secured.dir / "secure")
    secrets_ = [line for line in (material / "client.key").read_text().splitlines()[1:3]]
    secrets_ += [line for line in (material / "server.key").read_text().splitlines()[1:3]]
    for name in ("COORDINATOR_KAFKA__SASL_PASSWORD", "COORDINATOR_REDIS_URL"):
        if name in running.env:
            secrets_.append(running.env[name].split("@")[0].rpartition(":")[2] if "URL" in name
                            else running.env[name])
    secrets_ = [s for s in secrets_ if len(s) >= 12]
    assert len(secrets_) >= 5, "the key lines and passwords to look for"
    texts = {str(p): p.read_text(errors="replace") for p in running.logs.rglob("*.log")}
    texts |= {str(p): p.read_text(errors="replace") for p in (running.logs / "sim").rglob("*.out")}
    for topic in (running.settings.topics.scenario_results, running.settings.topics.chaos_events,
                  running.settings.topics.verdicts, running.settings.topics.audit_events,
                  running.settings.topics.dead_letters):
        records = await read_all(running.settings.kafka_bootstrap_servers, topic, settings=running.settings)
        texts[topic] = "\n".join(repr(r.value) + repr(r.headers) for r in records)
    assert len(texts) >= 8, sorted(texts)
    leaks = {where: s[:6] + "..." for where, text in texts.items() for s in secrets_ if s in text}
    assert not leaks, leaks


def _untrusted_ca() -> str:
    _, cert = authority("not the stack's CA")
    handle = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)  # noqa: SIM115 - read by the agent
    handle.write(cert.public_bytes(serialization.Encoding.PEM))
    handle.close()
    return handle.name


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("COORDINATOR_KAFKA__SASL_PASSWORD", "not-the-password-0123", "SASL authentication failed"),
    ("COORDINATOR_KAFKA__SSL_CAFILE", "untrusted", "the broker's certificate is not trusted"),
])
async def test_a_wrong_password_or_an_untrusted_ca_is_named_at_start_up_and_ready_is_503(
        secured: Stack, tmp_path: Path, setting: str, value: str, said: str) -> None:
    env = {**engine_env({**secured.env("sasl"), "COORDINATOR_TOXIPROXY_URL": "http://127.0.0.1:9"},
                        "http://127.0.0.1:9/RPC2"),
           setting: _untrusted_ca() if value == "untrusted" else value}
    agent = AgentProcess(env, tmp_path / "agent.log").start(timeout=90)
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{agent.url}/api/v1/ready") as response:
                    body = await response.json()
                if said in body.get("message", ""):
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.5)
        assert response.status == 503
        await asyncio.sleep(2)  # a retry or two
        log = agent.output()
        assert said in log, "the agent's own log names the cause"
        assert "Traceback" not in log
        assert value not in log or value == "untrusted", "the wrong password is not logged either"
        assert agent.proc is not None and agent.proc.poll() is None, "it waits for a fix, it does not die"
    finally:
        agent.stop()
    worker = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "agent.cli", "worker"], env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, check=False)
    assert worker.returncode == 3, worker.stderr[-2000:]
    assert said in worker.stderr and "Traceback" not in worker.stderr, worker.stderr[-2000:]
