"""The agent on a three-broker KRaft cluster (``devstack up --brokers 3``): topics with three
replicas and two in sync, producers with acks=all and idempotence. Killing the broker that leads the
requests and results partitions mid-run, and restarting every broker in turn during runs, loses no
request, repeats no result, leaves no fault, and every verdict is the one a quiet cluster gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agent.devstack import Stack
from agent.devstack.brokers import nodes
from agent.kafkaio import client_options
from agent.settings import Settings
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import engine_env, header, read_all, results, settings_from, status
from tests.integration.test_reliability import _no_fault_left, _submit_slow

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("cluster"))
    try:
        stack.up(("kafka", "redis", "toxiproxy"), brokers=3)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def env(cluster: Stack) -> dict[str, str]:
    return {**engine_env(cluster.env(), "http://127.0.0.1:9/RPC2"), "COORDINATOR_PLATFORM_EVENTS": "false"}


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    from agent import topics

    applied = settings_from(env)
    assert applied.topic_replication_factor == 3
    await topics.apply(applied)
    return applied


@pytest.fixture(scope="module")
def agent(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = AgentProcess(env, tmp_path_factory.mktemp("cluster-agent") / "agent.log").start(timeout=90)
    yield running
    running.stop()


async def _leaders(settings: Settings, *topics: str) -> dict[int, int]:
    """How many partitions of ``topics`` each broker leads."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        counts: dict[int, int] = {}
        for topic in await admin.describe_topics(list(topics)):
            for partition in topic["partitions"]:
                counts[partition["leader"]] = counts.get(partition["leader"], 0) + 1
        return counts
    finally:
        await admin.close()


async def _every_request_has_one_passed_result(settings: Settings, submitted: list[tuple[str, str]],
                                               timeout: float = 240.0) -> None:
    wanted = {rid for rid, _ in submitted}
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in results(await read_all(settings.kafka_bootstrap_servers,
                                                   settings.topics.scenario_results)) if r.request_id in wanted]
        if {r.request_id for r in found} == wanted or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(3 * settings.reconcile_interval + settings.lease_ttl)  # room for a repeat to show
    found = [r for r in results(await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results))
             if r.request_id in wanted]
    per_request = {rid: [status(r) for r in found if r.request_id == rid] for rid in wanted}
    assert all(statuses == ["PASSED"] for statuses in per_request.values()), per_request
    records = await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results)
    listed = {r.request_id: header(record, "correlation-ids") for record in records for r in results([record])
              if r.request_id in wanted}
    assert all(ids and ids.split(",") == [i.correlation_id for r in found if r.request_id == rid
                                          for i in r.injections] for rid, ids in listed.items()), listed
    await _no_fault_left(settings, *(proxy for _, proxy in submitted))


async def _first_result_after(settings: Settings, moment: float, timeout: float = 120.0) -> float:
    """When the first result record after ``moment`` was produced (its own timestamp)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results)
        later = [r.timestamp / 1000 for r in records if r.timestamp / 1000 > moment]
        if later:
            return min(later)
        await asyncio.sleep(0.2)
    raise AssertionError(f"no result produced within {timeout}s of the kill")


async def test_killing_the_leader_of_requests_and_results_mid_run_loses_and_repeats_nothing(
        cluster: Stack, settings: Settings, agent: AgentProcess) -> None:
    submitted = [await _submit_slow(settings, "2s") for _ in range(3)]
    leaders = await _leaders(settings, settings.topics.scenario_requests, settings.topics.scenario_results)
    victim = max(leaders, key=lambda broker: leaders[broker])  # the broker leading the most of them
    name = nodes(3)[victim - 1]
    killed_at = time.time()
    cluster.kill(name)
    try:
        submitted += [await _submit_slow(settings, "2s") for _ in range(5)]
        carried_on = await _first_result_after(settings, killed_at)
        print(f"broker {victim} ({name}) led {leaders[victim]} of {sum(leaders.values())} partitions; "
              f"first result produced {carried_on - killed_at:.2f}s after the kill")
        await _every_request_has_one_passed_result(settings, submitted)
        assert agent.proc is not None and agent.proc.poll() is None, "the agent rode it out"
    finally:
        cluster.start(name)


async def test_a_rolling_restart_of_every_broker_during_runs_loses_and_repeats_nothing(
        cluster: Stack, settings: Settings, agent: AgentProcess) -> None:
    submitted: list[tuple[str, str]] = []
    for name in nodes(3):
        submitted.append(await _submit_slow(settings, hold="3s"))
        await asyncio.sleep(1.0)  # mid-run
        await asyncio.to_thread(cluster.stop, name)
        submitted.append(await _submit_slow(settings, hold="1s"))
        await asyncio.to_thread(cluster.start, name)  # waits until it answers again
    await _every_request_has_one_passed_result(settings, submitted)
    assert agent.proc is not None and agent.proc.poll() is None, "the agent rode it out"


async def test_three_brokers_make_topics_with_three_replicas_and_two_in_sync(cluster: Stack,
                                                                            settings: Settings) -> None:
    text = await asyncio.to_thread((cluster.dir / "kafka" / "server.properties").read_text)
    assert "controller.quorum.voters=1@" in text and ",3@127.0.0.1:" in text
    assert "offsets.topic.replication.factor=3" in text and "transaction.state.log.min.isr=2" in text
    assert len(cluster.env()["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [topic] = await admin.describe_topics([settings.topics.scenario_results])
        [answer] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                settings.topics.scenario_results)])
    finally:
        await admin.close()
    assert all(len(p["replicas"]) == 3 for p in topic["partitions"])
    entries = {entry[0]: entry[1] for entry in answer.resources[0][4]}
    assert entries["min.insync.replicas"] == "2"
