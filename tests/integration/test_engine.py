"""The engine on the real stack: requests from Kafka, real faults, leases, reverts, one result each."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import client, topics
from agent.settings import Settings
from tests.helpers.agent import ROOT, AgentProcess
from tests.helpers.engine import (
    chaos,
    engine_env,
    header,
    is_result,
    read_all,
    results,
    settings_from,
    status,
    wait_for,
)
from tests.helpers.supervisor import Supervised, supervisord


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    with supervisord(tmp_path_factory.mktemp("supervisor")) as running:
        yield running


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str], supervised: Supervised) -> dict[str, str]:
    base = engine_env(stack_env, supervised.url)
    prefix = base["COORDINATOR_TOPICS__SCENARIO_REQUESTS"].rsplit(".", 1)[0]
    relays = [{"source": f"{prefix}.orders-in", "topic": f"{prefix}.orders"}]
    return {**base, "COORDINATOR_RELAYS": json.dumps(relays)}


@pytest.fixture(scope="module")
async def engine_settings(env: dict[str, str]) -> Settings:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    settings = settings_from(env)
    await topics.apply(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        relay = settings.relays[0]
        await admin.create_topics([NewTopic(relay.source, 1, 1), NewTopic(relay.topic, 1, 1)])
    finally:
        await admin.close()
    return settings


@pytest.fixture(scope="module")
def agent(env: dict[str, str], engine_settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[AgentProcess]:
    process = AgentProcess(env, tmp_path_factory.mktemp("agent") / "agent.log").start()
    yield process
    process.stop()


def _kcat(settings: Settings, key: str, value: bytes, headers: dict[str, str]) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by the project's set-up (coordinator devstack install)"
    args = [kcat, "-P", "-b", settings.kafka_bootstrap_servers, "-t", settings.topics.scenario_requests, "-k", key]
    for name, text in headers.items():
        args += ["-H", f"{name}={text}"]
    subprocess.run(args, input=value, check=True, timeout=30)


async def test_a_request_published_with_kcat_kills_a_supervised_process_and_runs_once(
    agent: AgentProcess, engine_settings: Settings, supervised: Supervised
) -> None:
    settings = engine_settings
    before = supervised.wait_running()
    request_id = str(uuid.uuid4())
    body = json.dumps({"requestId": request_id, "scenarioName": "kill-victim", "requester": "kcat",
                       "parameters": {"victimUrl": f"http://127.0.0.1:{supervised.victim_port}/"}}).encode()
    headers = {"content-type": "application/json", "ce_type": "coordinator.v1.ScenarioRequest"}
    await asyncio.to_thread(_kcat, settings, request_id, body, headers)

    found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results,
                           is_result(request_id=request_id), timeout=90)
    result = results(found)[0]
    assert status(result) == "PASSED", result.reason
    assert [i.fault for i in result.injections] == ["kill"]
    correlation_id = result.injections[0].correlation_id
    assert uuid.UUID(correlation_id).version == 4

    events = await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                            lambda r: r.key == correlation_id.encode(), count=2)
    kinds = [e.type for e in chaos(events)]
    assert kinds == [1, 2]  # INJECTED, then REVERTED
    assert all(header(r, "correlation-id") == correlation_id for r in events)
    assert chaos(events)[0].execution_id == result.execution_id
    after = supervised.wait_running()
    assert after["pid"] != before["pid"], "the victim was killed and brought back"

    # the same request again, then a marker on the same partition (same key): once the marker's
    # result is out, the duplicate has been read, and it must not have run
    _kcat(settings, request_id, body, headers)
    marker = str(uuid.uuid4())
    _kcat(settings, request_id, json.dumps({"requestId": marker, "scenarioName": "kill-victim",
                                            "dryRun": True}).encode(), headers)
    await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results, is_result(request_id=marker))
    everything = results(await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results))
    assert [r.execution_id for r in everything if r.request_id == request_id] == [result.execution_id]


async def test_bad_requests_are_rejected_with_a_reason_dead_lettered_and_the_agent_keeps_serving(
    agent: AgentProcess, engine_settings: Settings
) -> None:
    settings = engine_settings
    unknown, bad_param = str(uuid.uuid4()), str(uuid.uuid4())
    json_headers = {"content-type": "application/json"}
    garbage_key = f"garbage-{uuid.uuid4()}"
    _kcat(settings, garbage_key, b"\xff\xfe\x00 not a request", {"content-type": "application/protobuf"})
    _kcat(settings, unknown, json.dumps({"requestId": unknown, "scenarioName": "kill-victm"}).encode(), json_headers)
    _kcat(settings, bad_param, json.dumps({"requestId": bad_param, "scenarioName": "kill-victim",
                                           "parameters": {"victimUrl": 42, "colour": "red"}}).encode(), json_headers)

    dead = await wait_for(settings.kafka_bootstrap_servers, settings.topics.dead_letters,
                          lambda r: r.key in {garbage_key.encode(), unknown.encode(), bad_param.encode()}, count=3)
    by_key = {r.key.decode(): r for r in dead}
    assert header(by_key[garbage_key], "dlq-reason") == "bad-protobuf"
    assert by_key[garbage_key].value == b"\xff\xfe\x00 not a request"
    assert header(by_key[garbage_key], "dlq-source-topic") == settings.topics.scenario_requests
    assert header(by_key[unknown], "dlq-reason") == "unknown-scenario"
    assert "did you mean 'kill-victim'" in header(by_key[unknown], "dlq-error")
    assert header(by_key[bad_param], "dlq-reason") == "invalid-parameters"

    everything = results(await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results))
    rejected = {r.request_id: r for r in everything if status(r) == "REJECTED"}
    assert "unknown scenario 'kill-victm'" in rejected[unknown].reason
    assert "parameter 'victimUrl': value 42.0 is not a string" in rejected[bad_param].reason
    assert "the scenario has no parameter 'colour'" in rejected[bad_param].reason
    garbage_offset = header(by_key[garbage_key], "dlq-source-offset")
    assert garbage_offset is not None
    assert "bad-protobuf" in rejected[garbage_key].reason, "undecodable: named by its key, the requester's id"

    request = client.build_request("kill-victim", {}, dry_run=True)
    result = await client.run_and_follow(settings, request, timeout=60)
    assert result is not None and status(result) == "PASSED"
    assert "dry run" in result.reason


async def _toxics(settings: Settings, proxy: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{settings.toxiproxy_url}/proxies/{proxy}/toxics") as r:
        return await r.json() if r.status == 200 else []


async def test_cancelling_during_a_network_fault_removes_the_toxic_runs_rollbacks_and_publishes_aborted(
    agent: AgentProcess, engine_settings: Settings
) -> None:
    settings = engine_settings
    proxy, execution_id, request_id = await _start_slow_proxy(settings)
    assert [t["type"] for t in await _toxics(settings, proxy)] == ["latency"]

    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "agent.cli", "cancel", execution_id], env=_env(settings, agent),
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr

    found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results,
                           is_result(execution_id=execution_id), timeout=60)
    result = results(found)[0]
    assert status(result) == "ABORTED"
    assert "cancelled from the command line" in result.reason
    assert await _toxics(settings, proxy) == []
    assert [(e.phase, e.name, e.status) for e in result.journal if e.phase == "rollbacks"] == [
        ("rollbacks", "clear-link", 2)]
    assert result.injections[0].final_state == 2  # REVERTED


async def test_a_fault_left_by_a_killed_agent_is_reverted_by_the_next_one_and_the_run_ends_once(
    env: dict[str, str], engine_settings: Settings, tmp_path: Path, agent: AgentProcess
) -> None:
    settings = engine_settings
    agent.stop()  # only the agent under test consumes requests now
    try:
        victim = AgentProcess({**env, "COORDINATOR_INSTANCE_ID": "doomed"}, tmp_path / "doomed.log").start()
        proxy, execution_id, _ = await _start_slow_proxy(settings)
        assert await _toxics(settings, proxy), "the toxic is in place"
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        assert await _toxics(settings, proxy), "nobody reverted it yet"

        successor = AgentProcess({**env, "COORDINATOR_INSTANCE_ID": "successor"}, tmp_path / "successor.log").start()
        try:
            found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results,
                                   is_result(execution_id=execution_id), timeout=60)
            result = results(found)[0]
            assert status(result) == "ABORTED"
            assert "reverted by lease reconciliation" in result.reason
            assert await _toxics(settings, proxy) == []
            reverted = await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                                      lambda r: any(e.execution_id == execution_id and e.type == 2 for e in chaos([r])))
            assert chaos(reverted)[0].owner.startswith("successor/")
            await asyncio.sleep(2 * float(env["COORDINATOR_RECONCILE_INTERVAL"]))  # let any second result show up
            everything = results(await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results))
            assert [r.execution_id for r in everything].count(execution_id) == 1
        finally:
            successor.stop()
    finally:
        agent.start()


async def test_sigterm_aborts_running_executions_cleans_up_and_exits_zero(
    env: dict[str, str], engine_settings: Settings, tmp_path: Path, agent: AgentProcess
) -> None:
    settings = engine_settings
    agent.stop()
    try:
        target = AgentProcess({**env, "COORDINATOR_INSTANCE_ID": "terminated"}, tmp_path / "t.log").start()
        proxy, execution_id, _ = await _start_slow_proxy(settings)
        target.signal(signal.SIGTERM)
        assert target.wait(60) == 0
        found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results,
                               is_result(execution_id=execution_id), timeout=10)
        result = results(found)[0]
        assert status(result) == "ABORTED"
        assert "shutting down" in result.reason
        assert await _toxics(settings, proxy) == []
    finally:
        agent.start()


async def _start_slow_proxy(settings: Settings) -> tuple[str, str, str]:
    from agent.devstack.procs import free_port

    proxy = f"link-{uuid.uuid4().hex[:6]}"
    request = client.build_request("slow-link", {"proxy": proxy, "listen": f"127.0.0.1:{free_port()}",
                                                 "upstream": f"127.0.0.1:{free_port()}", "hold": "120s"})
    await client.submit(settings, request)
    deadline = time.monotonic() + 60
    while True:
        for record in await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events):
            event = chaos([record])[0]
            if event.type == 1 and event.fault == "latency":
                records = await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results)
                mine = [r for r in _progress_of(records) if r.get("executionId") == event.execution_id
                        and r.get("requestId") == request.request_id]
                if mine:
                    return proxy, event.execution_id, request.request_id
        if time.monotonic() > deadline:
            raise AssertionError("the slow-link fault was not injected")
        await asyncio.sleep(0.3)


def _progress_of(records: list) -> list[dict]:
    from agent import codec
    from agent._proto.coordinator.v1 import events_pb2
    from tests.helpers.engine import as_dict

    out = []
    for record in records:
        if header(record, "ce_type") == "coordinator.v1.ExecutionProgress":
            out.append(as_dict(codec.decode_event(record.value, record.headers, events_pb2.ExecutionProgress)))
    return out


def _env(settings: Settings, agent: AgentProcess) -> dict[str, str]:
    import os

    return {**os.environ, **agent.env}


RELAY_SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: duplicate-through-relay}}
spec:
  targets:
    orders: {{driver: kafka, selector: {{source: {source}, topic: {topic}}}}}
  steps:
    - {{name: dupes, fault: duplicate-events, target: orders, duration: 6s, parameters: {{copies: 1}}}}
"""


async def test_the_relay_duplicates_events_during_the_fault_tagged_with_its_correlation_id(
    agent: AgentProcess, engine_settings: Settings, tmp_path: Path
) -> None:
    from tests.helpers.kafka import produce

    settings = engine_settings
    relay = settings.relays[0]
    bootstrap = settings.kafka_bootstrap_servers
    run_id = uuid.uuid4().hex[:6]

    def sent(prefix: str):  # noqa: ANN202
        return lambda r: r.value.startswith(f"{run_id}-{prefix}".encode())

    for i in range(3):
        await produce(bootstrap, relay.source, f"{run_id}-before-{i}".encode())
    before = await wait_for(bootstrap, relay.topic, sent("before"), count=3)
    assert all(header(r, "correlation-id") is None for r in before)

    scenario = tmp_path / "dupes.yaml"
    scenario.write_text(RELAY_SCENARIO.format(source=relay.source, topic=relay.topic))
    request = client.build_request(str(scenario), {})
    await client.submit(settings, request)
    injected = await wait_for(bootstrap, settings.topics.chaos_events,
                              lambda r: any(e.fault == "duplicate-events" and e.type == 1 for e in chaos([r])))
    correlation_id = chaos(injected)[-1].correlation_id
    await asyncio.sleep(0.5)  # the relay reads active faults every 0.2 s
    for i in range(4):
        await produce(bootstrap, relay.source, f"{run_id}-during-{i}".encode())
    during = await wait_for(bootstrap, relay.topic, sent("during"), count=8)
    assert len(during) == 8
    assert {header(r, "correlation-id") for r in during} == {correlation_id}

    found = await wait_for(bootstrap, settings.topics.scenario_results, is_result(request_id=request.request_id),
                           timeout=60)
    assert status(results(found)[0]) == "PASSED"
    await asyncio.sleep(0.5)
    for i in range(2):
        await produce(bootstrap, relay.source, f"{run_id}-after-{i}".encode())
    await produce(bootstrap, relay.source, f"{run_id}-marker".encode())
    await wait_for(bootstrap, relay.topic, sent("marker"))  # one partition, kept in order by the relay
    after = [r for r in await read_all(bootstrap, relay.topic) if sent("after")(r)]
    assert len(after) == 2 and all(header(r, "correlation-id") is None for r in after)


def _cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "agent.cli", *args], env={**os.environ, **agent.env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_halt_reverts_every_fault_aborts_runs_and_refuses_new_ones_until_resume(
    agent: AgentProcess, engine_settings: Settings
) -> None:
    settings = engine_settings
    proxy, execution_id, _ = await _start_slow_proxy(settings)
    try:
        done = await asyncio.to_thread(_cli, agent, "halt", "--reason", "incident 42")
        assert done.returncode == 0, done.stderr
        found = await wait_for(settings.kafka_bootstrap_servers, settings.topics.scenario_results,
                               is_result(execution_id=execution_id), timeout=60)
        assert status(results(found)[0]) == "ABORTED"
        assert "halt-all: incident 42" in results(found)[0].reason
        assert await _toxics(settings, proxy) == []

        refused = client.build_request("kill-victim", {}, dry_run=True)
        result = await client.run_and_follow(settings, refused, timeout=60)
        assert result is not None and status(result) == "REJECTED"
        assert "halted (incident 42)" in result.reason
    finally:
        done = await asyncio.to_thread(_cli, agent, "resume")
        assert done.returncode == 0, done.stderr
    again = await client.run_and_follow(settings, client.build_request("kill-victim", {}, dry_run=True), timeout=60)
    assert again is not None and status(again) == "PASSED"


EXPECTING = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: expects-audit}
spec:
  targets:
    victim: {driver: supervisor, selector: {program: victim}}
  steps:
    - {name: restart-victim, fault: restart, target: victim}
  expectations:
    - name: victim-ready
      after: restart-victim
      event: {type: service_ready, service: victim}
      appears: {within: 1s}
"""


async def test_run_follows_to_the_result_and_exits_non_zero_when_no_verdict_comes(
    agent: AgentProcess, engine_settings: Settings, supervised: Supervised, tmp_path: Path
) -> None:
    scenario = tmp_path / "expects.yaml"
    scenario.write_text(EXPECTING)
    done = await asyncio.to_thread(_cli, agent, "run", str(scenario), "--timeout", "90")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: no evidence for expectation(s): victim-ready" in done.stdout
    assert "expectation victim-ready: INCONCLUSIVE no verdict from the stream worker" in done.stdout
    assert "[steps] restart-victim: ok" in done.stdout
    supervised.wait_running()

    ok = await asyncio.to_thread(_cli, agent, "run", "kill-victim", "--dry-run")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED: dry run" in ok.stdout
    named = re.findall(r"execution ([0-9a-f-]{36})", ok.stdout)
    assert len(named) >= 2 and len(set(named)) == 1, "the execution id, as soon as known and with the result"

    submitted = await asyncio.to_thread(_cli, agent, "submit", "kill-victim", "--dry-run")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    request_id, execution = submitted.stdout.splitlines()[:2]
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id) and re.fullmatch(r"execution [0-9a-f-]{36}", execution)
    reported = await asyncio.to_thread(_cli, agent, "report", execution.split()[1], "--format", "json")
    assert reported.returncode in (0, 4), reported.stderr  # written, or still running

    async with aiohttp.ClientSession() as http, http.get(f"{agent.url}/metrics") as response:
        text = await response.text()
    assert 'coordinator_executions_total{status="FAILED"}' in text
    assert 'coordinator_injections_total{fault="restart",outcome="injected"}' in text
    assert "coordinator_request_to_first_fault_seconds_count" in text


async def test_the_documented_kcat_request_in_json_gets_a_rejected_result_kcat_matches_by_request_id(
    agent: AgentProcess, engine_settings: Settings
) -> None:
    """docs/engine.md's example as a requester would paste it, with a parameter value the scenario
    refuses: published with kcat in JSON, the REJECTED result read back with kcat as JSON and found
    by the requestId the requester chose."""
    settings = engine_settings
    doc = (ROOT / "docs" / "engine.md").read_text()
    example = re.search(r"echo '(\{.*?\})' \| tr -d '\\n' \|\n\s*kcat -P (.*?)\n```", doc, re.S)
    assert example, "the example is in docs/engine.md"
    body = json.loads(example.group(1).replace("\n", ""))
    request_id = f"ci-{uuid.uuid4().hex[:8]}"
    body["requestId"] = request_id
    body["parameters"]["restartBound"] = "soon"
    headers = dict(re.findall(r"-H (\S+?)=(\S+)", example.group(2)))
    assert headers == {"content-type": "application/json", "ce_type": "coordinator.v1.ScenarioRequest"}
    _kcat(settings, request_id, json.dumps(body).encode(), headers)

    kcat = shutil.which("kcat")
    assert kcat
    deadline = time.monotonic() + 60
    found: dict[str, Any] = {}
    while not found and time.monotonic() < deadline:
        out = await asyncio.to_thread(subprocess.run, [kcat, "-C", "-b", settings.kafka_bootstrap_servers, "-t",
                                                       settings.topics.scenario_results, "-o", "beginning", "-e",
                                                       "-q", "-J"], capture_output=True, timeout=30, check=True)
        for line in out.stdout.decode("utf-8").splitlines():  # valid UTF-8: JSON payloads
            envelope = json.loads(line)
            payload = json.loads(envelope["payload"])
            if payload.get("requestId") == request_id and "reason" in payload:
                found = payload
        await asyncio.sleep(0.5)
    assert found, f"no result for {request_id}"
    assert found["status"] == "EXECUTION_STATUS_REJECTED", found
    assert found["reason"].startswith("invalid-parameters:") and "restartBound" in found["reason"], found["reason"]
    assert found["requester"] == "ci" and found["labels"] == {"pipeline": "nightly"}
