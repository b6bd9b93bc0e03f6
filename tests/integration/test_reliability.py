"""The agent survives its own faults, on the real stack.

Agents are killed at every failpoint and at random moments, paused while another agent takes their
runs over, cut off from Redis and Kafka mid-fault, and fed oversized and empty records on every input
topic and hostile selectors. Every test counts what a user would see: results per request (exactly
one), faults left in Toxiproxy once leases have expired (none), agent processes still serving (all).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from agent import client, failpoints
from agent.devstack import Stack
from agent.devstack.procs import free_port
from agent.settings import Settings
from agent.store import Lease, RedisStore
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import chaos, engine_env, header, read_all, results, settings_from, status, wait_for
from tests.helpers.kafka import produce
from tests.unit.test_reliability_logic import SCENARIO as HOSTILE

pytestmark = pytest.mark.timeout(600)

TWO_STEPS = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: two-slow-links}}
spec:
  targets:
    first: {{driver: toxiproxy, selector: {{proxy: {first}, listen: "127.0.0.1:{p1}", upstream: "127.0.0.1:{p2}"}}}}
    second: {{driver: toxiproxy, selector: {{proxy: {second}, listen: "127.0.0.1:{p3}", upstream: "127.0.0.1:{p4}"}}}}
  steps:
    - {{name: slow-first, fault: latency, target: first, duration: {hold}, parameters: {{latency: 200ms}}}}
    - {{name: slow-second, fault: latency, target: second, duration: 2s, parameters: {{latency: 200ms}}}}
"""


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    # no supervisord here: these runs use Toxiproxy faults only
    return engine_env(stack_env, "http://127.0.0.1:9/RPC2")


@pytest.fixture(scope="module")
async def engine_settings(env: dict[str, str]) -> Settings:
    from agent import topics

    settings = settings_from(env)
    await topics.apply(settings)
    return settings


@pytest.fixture
def agents(env: dict[str, str], tmp_path: Path) -> Iterator[_Agents]:
    started = _Agents(env, tmp_path)
    yield started
    for agent in started.all:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGCONT)
        agent.stop()


class _Agents:
    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.dir = directory
        self.all: list[AgentProcess] = []

    def start(self, name: str, failpoint_spec: str = "", *, serving: bool = True,
              env: dict[str, str] | None = None) -> AgentProcess:
        env = {**self.env, **(env or {}), "COORDINATOR_INSTANCE_ID": name, failpoints.ENV: failpoint_spec}
        agent = AgentProcess(env, self.dir / f"{name}.log")
        self.all.append(agent)
        agent.start(timeout=90)
        if serving:
            deadline = time.monotonic() + 90
            while '"agent serving"' not in agent.output():
                assert agent.proc is not None and agent.proc.poll() is None, agent.output()[-3000:]
                assert time.monotonic() < deadline, "the agent did not start serving\n" + agent.output()[-3000:]
                time.sleep(0.1)
        return agent


async def _submit_slow(settings: Settings, hold: str = "1s") -> tuple[str, str]:
    proxy = f"link-{uuid.uuid4().hex[:8]}"
    request = client.build_request("slow-link", {"proxy": proxy, "listen": f"127.0.0.1:{free_port()}",
                                                 "upstream": f"127.0.0.1:{free_port()}", "hold": hold})
    await client.submit(settings, request)
    return request.request_id, proxy


async def _toxics(settings: Settings, proxy: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{settings.toxiproxy_url}/proxies/{proxy}/toxics") as r:
        return await r.json() if r.status == 200 else []


async def _results_for(settings: Settings, request_id: str) -> list:
    return [r for r in results(await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results))
            if r.request_id == request_id]


async def _one_result(settings: Settings, request_id: str, timeout: float = 120.0):  # noqa: ANN202
    """Wait for the request's result, give a second one time to show up, and insist there is one."""
    deadline = time.monotonic() + timeout
    while not (found := await _results_for(settings, request_id)):
        assert time.monotonic() < deadline, f"no result for request {request_id} within {timeout}s"
        await asyncio.sleep(0.5)
    await asyncio.sleep(3 * settings.reconcile_interval + settings.lease_ttl)
    found = await _results_for(settings, request_id)
    assert len(found) == 1, [(status(r), r.reason) for r in found]
    return found[0]


async def _no_fault_left(settings: Settings, *proxies: str, timeout: float = 60.0) -> None:
    """Once leases have had time to expire and be reconciled, no toxic of ours is left anywhere."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p: t for p in proxies if (t := await _toxics(settings, p))}
        if not left:
            return
        assert time.monotonic() < deadline, f"faults left behind: {left}"
        await asyncio.sleep(0.5)


async def _ready(agent: AgentProcess) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{agent.url}/api/v1/ready") as response:
        return response.status, await response.json()


async def _serving(*agents: AgentProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for agent in agents:
        assert agent.proc is not None and agent.proc.poll() is None, f"an agent exited:\n{agent.output()[-2000:]}"
        while (found := await _ready(agent))[0] != 200:
            assert time.monotonic() < deadline, f"agent not ready: {found[1]}"
            await asyncio.sleep(0.5)


# -- 1. exactly one result per request, whatever crashes when ---------------------------------------
EXPECTED_AFTER_CRASH = {
    "after-consume": "PASSED",       # nothing was claimed: the successor runs the request itself
    "after-claim": "ABORTED",        # claimed and recorded: the reconciler finishes it
    "after-record": "ABORTED",
    "after-lease": "ABORTED",        # the lease is reverted (nothing was applied yet) and the run aborted
    "after-inject": "ABORTED",       # the applied fault is reverted by the successor
    "after-chaos-event": "ABORTED",
    "before-result": "PASSED",       # the stored result is published by the successor
    "after-result": "PASSED",        # the result was out: nothing more to do
}


@pytest.mark.parametrize("point", failpoints.POINTS)
async def test_a_crash_at_any_failpoint_ends_the_request_with_one_result_and_no_fault_left(
    point: str, agents: _Agents, engine_settings: Settings
) -> None:
    doomed = agents.start(f"doomed-{point}", f"{point}=exit")
    request_id, proxy = await _submit_slow(engine_settings)
    assert await asyncio.to_thread(doomed.wait, 120) == -signal.SIGKILL, "the failpoint killed the agent"

    successor = agents.start(f"successor-{point}")
    result = await _one_result(engine_settings, request_id)
    assert status(result) == EXPECTED_AFTER_CRASH[point], result.reason
    if status(result) == "ABORTED":
        assert "stopped" in result.reason and "reverted by lease reconciliation" in result.reason
        # the result the successor finished lists every fault the chaos events tell of, as the dead
        # agent's own result would have, with the correlation-ids header
        told = {e.correlation_id for e in chaos(await read_all(engine_settings.kafka_bootstrap_servers,
                                                                engine_settings.topics.chaos_events))
                if e.execution_id == result.execution_id}
        assert {i.correlation_id for i in result.injections} == told
        assert all(i.final_state == 2 and i.reverted_at.seconds for i in result.injections), result.injections
        assert set(filter(None, (await _result_header(engine_settings, result) or "").split(","))) == told
        if point in ("after-chaos-event",):
            assert len(told) == 1 and result.injections[0].injected_at.seconds, "applied and noted: listed"
    await _no_fault_left(engine_settings, proxy)
    await _serving(successor)


async def _result_header(settings: Settings, result, name: str = "correlation-ids") -> str | None:  # noqa: ANN001
    """A header of ``result``'s record on the results topic."""
    for record in await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results):
        if [r.execution_id for r in results([record])] == [result.execution_id]:
            return header(record, name)
    raise AssertionError(f"no result record for {result.execution_id}")


async def test_sigkill_at_random_moments_loses_no_request_and_leaves_no_fault(
    agents: _Agents, engine_settings: Settings
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    submitted: list[tuple[str, str]] = []
    current = agents.start("random-0")
    for run in range(1, 11):
        submitted.append(await _submit_slow(engine_settings, hold="1s"))
        await asyncio.sleep(rng.uniform(0.0, 3.0))
        current.signal(signal.SIGKILL)
        await asyncio.to_thread(current.wait, 30)
        current = agents.start(f"random-{run}")
        # the next request goes in once this agent has the previous one: each kill lands mid-run
        await wait_for(engine_settings.kafka_bootstrap_servers, engine_settings.topics.scenario_results,
                       lambda r, rid=submitted[-1][0]: any(x.request_id == rid for x in results([r])), timeout=120)
    for request_id, _ in submitted:
        found = await _results_for(engine_settings, request_id)
        assert len(found) == 1, f"seed {seed}: {request_id}: {[(status(r), r.reason) for r in found]}"
    await _no_fault_left(engine_settings, *(proxy for _, proxy in submitted))
    await _serving(current)


# -- 2. fencing: a paused agent comes back to nothing --------------------------------------------------
async def test_a_paused_agent_that_lost_its_run_injects_and_publishes_nothing_when_resumed(
    agents: _Agents, engine_settings: Settings, tmp_path: Path
) -> None:
    settings = engine_settings
    first, second = f"first-{uuid.uuid4().hex[:6]}", f"second-{uuid.uuid4().hex[:6]}"
    scenario = tmp_path / "two.yaml"
    scenario.write_text(TWO_STEPS.format(first=first, second=second, hold="8s",
                                         p1=free_port(), p2=free_port(), p3=free_port(), p4=free_port()))
    paused = agents.start("paused")
    request = client.build_request(str(scenario), {})
    await client.submit(settings, request)
    injected = await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                              lambda r: any(e.type == 1 and e.step_name == "slow-first"
                                            and e.owner.startswith("paused/") for e in chaos([r])), timeout=60)
    execution_id = chaos(injected)[-1].execution_id
    paused.signal(signal.SIGSTOP)

    taker = agents.start("taker")
    result = await _one_result(settings, request.request_id)
    assert status(result) == "ABORTED" and "paused/" in result.reason
    assert await _toxics(settings, first) == []

    resumed_at = time.time()
    paused.signal(signal.SIGCONT)
    await asyncio.sleep(10)  # past the first step's hold: a zombie would revert it and inject the second now
    mine = [e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
            if e.execution_id == execution_id]
    assert [(e.type, e.step_name, e.owner.split("/")[0]) for e in mine] == [
        (1, "slow-first", "paused"), (2, "slow-first", "taker")]
    assert await _toxics(settings, second) == [], "the second step was never applied"
    assert len(await _results_for(settings, request.request_id)) == 1
    records = await read_all(settings.kafka_bootstrap_servers, settings.topics.scenario_results)
    late = [r for r in records if r.key == execution_id.encode() and r.timestamp / 1000 > resumed_at]
    assert late == [], "the resumed agent published progress or a result for a run it no longer owns"
    assert "execution taken over by another agent" in paused.output()
    await _serving(paused, taker)


# -- 3. outages are ridden out ---------------------------------------------------------------------------
async def _through_outage(agent: AgentProcess, settings: Settings, stack: Stack, part: str, hold: float
                          ) -> tuple[str, str]:
    """A fault in place, then ``part`` of the stack down for ``hold`` seconds while the agent runs it."""
    name = agent.env["COORDINATOR_INSTANCE_ID"]
    request_id, proxy = await _submit_slow(settings, hold="3s")
    await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                   lambda r: any(e.type == 1 for e in chaos([r]) if e.owner.startswith(f"{name}/")), timeout=60)
    await asyncio.to_thread(stack.stop, part)
    try:
        deadline = time.monotonic() + 30
        while (found := await _ready(agent))[0] != 503 or part not in found[1]["failing"]:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.3)
        await asyncio.sleep(hold)  # the fault's hold ends meanwhile
        assert agent.proc is not None and agent.proc.poll() is None, "the agent stayed up"
    finally:
        await asyncio.to_thread(stack.start, part)
    return request_id, proxy


async def test_redis_down_mid_fault_is_ridden_out_and_the_run_ends_with_one_result(
    agents: _Agents, engine_settings: Settings, stack: Stack
) -> None:
    settings = engine_settings
    agent = agents.start("through-redis-outage")
    # the revert waits for Redis (the lease must be checked first); nothing new is applied meanwhile
    request_id, proxy = await _through_outage(agent, settings, stack, "redis", 6)
    result = await _one_result(settings, request_id)
    assert status(result) == "PASSED", result.reason
    await _no_fault_left(settings, proxy)
    await _serving(agent)
    log_lines = agent.output().count("redis unreachable; retrying until it answers")
    assert 1 <= log_lines <= 3, f"{log_lines} outage warnings: one per change of state is expected"
    store = RedisStore(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
    try:  # the append-only file kept the claim across the restart: a redelivery is still a duplicate
        assert await store.claimed_request(request_id) == result.execution_id
    finally:
        await store.aclose()


async def test_a_redis_restart_shorter_than_the_lease_ttl_cuts_no_fault_short_and_takes_over_nothing(
    agents: _Agents, engine_settings: Settings, stack: Stack
) -> None:
    settings = engine_settings
    ttl = {"COORDINATOR_LEASE_TTL": "9"}  # the heartbeat renews every 3 s
    both = [agents.start("steady-a", env=ttl), agents.start("steady-b", env=ttl)]
    request_id, proxy = await _submit_slow(settings, hold="10s")
    seen: list[float] = []

    async def watch_toxic() -> None:  # when the toxic is live, as Toxiproxy itself says
        while True:
            if await _toxics(settings, proxy):
                seen.append(time.monotonic())
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_toxic())
    store = RedisStore(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
    try:
        deadline = time.monotonic() + 60
        while not (leases := [x for x in await store.leases() if proxy in json.dumps(x.recipe)]) or not seen:
            assert time.monotonic() < deadline, "the fault never went in"
            await asyncio.sleep(0.05)
        # Redis goes just before the owner's next heartbeat: its key (9 s) expires while Redis is away
        # (after about 6 s), so only the outage rule keeps the other agent from taking the run over
        heartbeat = store.key("owner", leases[0].owner)
        for _ in range(500):
            if await store.redis.pttl(heartbeat) <= 6300:
                break
            await asyncio.sleep(0.02)
        down = time.monotonic()
        await asyncio.to_thread(stack.stop, "redis")
        await asyncio.sleep(7)
        await asyncio.to_thread(stack.start, "redis")
        outage = time.monotonic() - down
        result = await _one_result(settings, request_id)
    finally:
        watcher.cancel()
        await store.aclose()
    assert 6.5 < outage < 9, f"Redis was away {outage:.1f}s: past a heartbeat key's expiry, within the TTL"
    assert status(result) == "PASSED", f"{result.reason} (Redis away {outage:.1f}s)"
    held = seen[-1] - seen[0]
    assert held >= 9.5, f"the 10s fault was live for {held:.1f}s (Redis away {outage:.1f}s)"
    for agent in both:
        assert "reverting orphaned fault" not in agent.output()
        assert "finishing an execution whose agent stopped" not in agent.output()
    owner = [a for a in both if "redis reachable again" in a.output() and "fault injected" in a.output()]
    assert owner, "the owner rode the outage out"
    await _no_fault_left(settings, proxy)
    await _serving(*both)


async def test_kafka_down_mid_fault_is_ridden_out_and_the_run_ends_with_one_result(
    agents: _Agents, engine_settings: Settings, stack: Stack
) -> None:
    settings = engine_settings
    agent = agents.start("through-kafka-outage")
    request_id, proxy = await _through_outage(agent, settings, stack, "kafka", 5)
    result = await _one_result(settings, request_id, timeout=180)
    assert status(result) == "PASSED", result.reason
    await _no_fault_left(settings, proxy)
    await _serving(agent)
    library_lines = [line for line in agent.output().splitlines() if line.startswith("aiokafka")]
    assert len(library_lines) < 40, f"{len(library_lines)} client-library lines for one short outage"


async def test_a_part_that_fails_for_good_stops_the_agent_non_zero_and_the_request_is_not_lost(
    agents: _Agents, engine_settings: Settings
) -> None:
    broken = agents.start("broken-ingress", "after-consume=raise")  # a bug, not an outage
    request_id, proxy = await _submit_slow(engine_settings)
    assert await asyncio.to_thread(broken.wait, 120) == 1, broken.output()[-3000:]
    assert "agent part failed for good; stopping" in broken.output()
    successor = agents.start("after-broken-ingress")
    result = await _one_result(engine_settings, request_id)
    assert status(result) == "PASSED", result.reason
    await _no_fault_left(engine_settings, proxy)
    await _serving(successor)


# -- 4. no poison pill ---------------------------------------------------------------------------------
async def test_oversized_and_empty_records_on_every_input_topic_are_dead_lettered_and_the_agent_keeps_serving(
    tmp_path: Path, stack_env: dict[str, str]
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from agent import topics

    base = engine_env(stack_env, "http://127.0.0.1:9/RPC2")  # fresh topics: the offsets below are ours
    prefix = base["COORDINATOR_TOPICS__SCENARIO_REQUESTS"].rsplit(".", 1)[0]
    relay = {"source": f"{prefix}.orders-in", "topic": f"{prefix}.orders"}
    env = {**base, "COORDINATOR_RELAYS": json.dumps([relay])}
    settings = settings_from(env)
    await topics.apply(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(relay["source"], 1, 1), NewTopic(relay["topic"], 1, 1)])
    finally:
        await admin.close()
    agents = _Agents(env, tmp_path)
    agent = agents.start("poison-proof")
    try:
        huge = b'{"requestId": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        assert len(gzip.compress(huge)) < 100_000, "compressed, the broker takes it"
        bootstrap = settings.kafka_bootstrap_servers
        inputs = [settings.topics.scenario_requests, settings.topics.verdicts, relay["source"]]
        for topic in inputs:
            for value, key in ((huge, b"huge"), (b"", b"empty")):
                await produce(bootstrap, topic, value, key=key, partition=0, compressed=True,
                              headers=[("content-type", b"application/json")])
        dead = await wait_for(bootstrap, settings.topics.dead_letters, lambda r: True, count=5, timeout=90)
        by_source = {(header(r, "dlq-source-topic"), r.key): r for r in dead}
        for topic in inputs[:2]:
            truncated = by_source[(topic, b"huge")]
            assert header(truncated, "dlq-reason") == "too-large"
            assert header(truncated, "dlq-original-size") == str(len(huge))
            assert header(truncated, "dlq-original-sha256") == hashlib.sha256(huge).hexdigest()
            assert huge.startswith(truncated.value) and 0 < len(truncated.value) < settings.dead_letter_max_bytes
            assert header(by_source[(topic, b"empty")], "dlq-reason") == "empty"
        refused = by_source[(relay["source"], b"huge")]
        assert header(refused, "dlq-reason") == "relay-refused"
        assert "MessageSizeTooLarge" in header(refused, "dlq-error")
        relayed = await wait_for(bootstrap, relay["topic"], lambda r: r.key == b"empty")
        assert relayed[0].value == b"", "the empty record was relayed as it is: used"

        found = results(await read_all(bootstrap, settings.topics.scenario_results))
        rejected = sorted((r.request_id, r.reason.split(":")[0]) for r in found if status(r) == "REJECTED")
        assert rejected == [("empty", "empty"), ("huge", "too-large")], "named by the record's key: the requester's"

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.consumer_group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            assert await consumer.committed(TopicPartition(settings.topics.scenario_requests, 0)) == 2
        finally:
            await consumer.stop()
        ok = await client.run_and_follow(settings, client.build_request("kill-victim", {}, dry_run=True), timeout=60)
        assert ok is not None and status(ok) == "PASSED"
        await _serving(agent)
        assert "Traceback" not in agent.output()
    finally:
        agent.stop()


async def test_nine_distinct_bad_records_with_one_key_leave_nine_dead_letters_and_one_rejected_result(
    tmp_path: Path, stack_env: dict[str, str]
) -> None:
    env = engine_env(stack_env, "http://127.0.0.1:9/RPC2")  # fresh topics: every record below is ours
    settings = settings_from(env)
    from agent import topics

    await topics.apply(settings)
    agent = _Agents(env, tmp_path).start("bad-records")
    try:
        bad = [b"not json at all", b"{", b"[]", b'{"scenarioName": "no-such-scenario"}',
               b'{"scenarioName": "another-missing-one"}', b'{"dryRun": true}', b'{"scenarioYaml": "kind: Nope"}',
               b'{"scenarioYaml": "apiVersion: coordinator/v1\\nkind: Scenario\\n'
               b'metadata: {name: x}\\nspec: {steps: 5}"}',
               b'{"scenarioName": "kill-victim", "parameters": {"nonesuch": 1}}']
        assert len(set(bad)) == 9
        bootstrap = settings.kafka_bootstrap_servers
        for value in bad:
            await produce(bootstrap, settings.topics.scenario_requests, value, key=b"one-key", partition=0,
                          headers=[("content-type", b"application/json")])
        dead = await wait_for(bootstrap, settings.topics.dead_letters, lambda r: True, count=9, timeout=90)
        assert sorted(int(header(r, "dlq-source-offset") or -1) for r in dead) == list(range(9))
        assert sorted(r.value for r in dead) == sorted(bad), "each record, byte for byte"
        await asyncio.sleep(3)
        found = results(await read_all(bootstrap, settings.topics.scenario_results))
        assert [(r.request_id, status(r)) for r in found] == [("one-key", "REJECTED")]
        assert len(await read_all(bootstrap, settings.topics.dead_letters)) == 9
        await _serving(agent)
    finally:
        agent.stop()


# -- 5. selectors are data, never paths ----------------------------------------------------------------------
async def test_hostile_selectors_are_refused_and_an_unrevertable_lease_never_stops_an_agent(
    agents: _Agents, engine_settings: Settings
) -> None:
    settings = engine_settings
    # leases whose revert cannot succeed (written by a tampered or older agent): one aims at
    # Toxiproxy's API root, one names a driver that does not exist
    store = RedisStore(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
    now = time.time()
    bad = [Lease(correlation_id=str(uuid.uuid4()), execution_id=str(uuid.uuid4()), driver=driver, target="link",
                 service="link", fault="down", step_name="evil", recipe=recipe, owner="gone/0", created_at=now,
                 expires_at=now - 1) for driver, recipe in (
        ("toxiproxy", {"action": "enable", "proxy": "../reset#", "url": settings.toxiproxy_url}),
        ("nonesuch", {"action": "whatever"}))]
    try:
        for lease in bad:
            await store.write_lease(lease)
        first = agents.start("hostile-first")  # starts and serves although those leases cannot be reverted
        deadline = time.monotonic() + 60
        while True:
            code, body = await _ready(first)
            detail = body["checks"]["unrevertable_faults"]["detail"]
            if all(lease.correlation_id in detail for lease in bad):
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.5)
        assert code == 200, body
        async with aiohttp.ClientSession() as http, http.get(f"{first.url}/metrics") as response:
            assert "coordinator_unrevertable_leases 2.0" in await response.text()
        failed = await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                                lambda r: any(e.type == 3 and e.correlation_id == bad[0].correlation_id
                                              for e in chaos([r])), timeout=60)
        assert "404" in chaos(failed)[0].error and "/proxies/..%2Freset%23" in chaos(failed)[0].error

        _, bystander = await _submit_slow(settings, hold="90s")  # a toxic that must survive all of this
        await wait_for(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                       lambda r: any(e.type == 1 and e.owner.startswith("hostile-first/") for e in chaos([r])),
                       timeout=60)
        for proxy in ("../reset#", "a/../../reset", "%2e%2e", "x?y"):
            request = client.build_request("hostile", {})
            request.scenario_yaml = HOSTILE.format(proxy=proxy, program="victim", topic="orders")
            result = await client.run_and_follow(settings, request, timeout=60)
            assert result is not None and status(result) == "REJECTED", proxy
            assert "spec.targets.link.selector.proxy" in result.reason and "is not a valid name" in result.reason

        second = agents.start("hostile-second")
        await asyncio.sleep(3 * settings.reconcile_interval + settings.lease_ttl)
        for lease in bad:
            assert await store.redis.exists(store.key("lease", lease.correlation_id)), "kept for a retry"
        assert await _toxics(settings, bystander), "nothing reached Toxiproxy's /reset or another proxy"
        ok = await client.run_and_follow(settings, client.build_request("kill-victim", {}, dry_run=True), timeout=60)
        assert ok is not None and status(ok) == "PASSED"
        await _serving(first, second)
    finally:
        for lease in bad:
            await store.redis.delete(store.key("lease", lease.correlation_id))
        await store.aclose()
