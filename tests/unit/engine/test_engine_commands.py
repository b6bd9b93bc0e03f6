"""The engine's command API on in-memory parts (agent.testing): requests accepted, duplicated,
rejected; submit, cancel, halt, get, list; reconciliation of a stopped agent's run; a drained
shutdown. The same commands over gRPC and Kafka are in tests/integration/test_grpc_api.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka.structs import ConsumerRecord

from agent import codec
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.drivers import DriverRegistry
from agent.engine import Engine
from agent.errors import NotFound, ScenarioError, StateError
from agent.settings import Settings
from agent.store import ExecutionRecord
from agent.testing import MemoryDriver, MemoryPublisher, MemoryStore


def scenario(seconds: float = 0.05) -> str:
    return f"""\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: one-step}}
spec:
  targets:
    link: {{driver: toxiproxy, selector: {{proxy: link}}}}
  steps:
    - {{name: slow, fault: latency, target: link, duration: {seconds}s, parameters: {{latency: 10ms}}}}
"""


OFFSETS = itertools.count()


def record(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord("requests", 0, next(OFFSETS), int(time.time() * 1000), 0, None, value, None, 0,
                          len(value), headers or [])


def request_record(request: S.ScenarioRequest) -> ConsumerRecord:  # type: ignore[type-arg]
    out = codec.encode_event(request, key=request.request_id, source="/test")
    return record(out.value, list(out.headers))


class Parts:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.publisher = MemoryPublisher()
        self.driver = MemoryDriver()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    settings = Settings(lease_ttl=3, reconcile_interval=1, verdict_grace=0.1, late_evidence=5)
    parts = Parts()
    drivers = DriverRegistry(settings)
    drivers.use("toxiproxy", parts.driver)
    async with Engine.open(settings, owner="agent-a/1", store=parts.store,  # type: ignore[arg-type]
                           publisher=parts.publisher, drivers=drivers) as engine:  # type: ignore[arg-type]
        await parts.store.renew_leases(engine.owner, [], 3)
        yield engine


def memory(engine: Engine) -> tuple[MemoryStore, MemoryPublisher, MemoryDriver]:
    driver = engine.drivers.get("toxiproxy")
    return engine.store, engine.publisher, driver  # type: ignore[return-value]


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition was not met in time")


async def finished(engine: Engine) -> None:
    await asyncio.gather(*(r.task for r in list(engine.running.values()) if r.task is not None))


async def test_a_request_runs_once_even_when_delivered_twice(engine: Engine) -> None:
    store, publisher, driver = memory(engine)
    request = S.ScenarioRequest(request_id="r-1", scenario_yaml=scenario())
    await engine.accept(request_record(request))
    await engine.accept(request_record(request))
    await finished(engine)
    assert [(r.request_id, r.status) for r in publisher.results] == [("r-1", S.EXECUTION_STATUS_PASSED)]
    assert driver.applied == set() and [k for k, _ in driver.log] == ["inject", "revert"]
    got = await engine.get(publisher.results[0].execution_id)
    assert got.status == S.EXECUTION_STATUS_PASSED and got.result.request_id == "r-1"
    with pytest.raises(StateError, match=r"already ended \(PASSED\)"):
        await engine.cancel(got.execution_id)


async def test_unusable_requests_are_dead_lettered_with_a_rejected_result_naming_why(engine: Engine) -> None:
    store, publisher, driver = memory(engine)
    await engine.accept(record(b"\x00not an event"))
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-2", scenario_name="no-such-scenario")))
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-3", scenario_yaml="spec: [")))
    reasons = [r.reason.split(":")[0] for r in publisher.results]
    assert all(r.status == S.EXECUTION_STATUS_REJECTED for r in publisher.results)
    assert reasons[1:] == ["unknown-scenario", "invalid-scenario"] and reasons[0]
    assert [reason for _, reason, _ in publisher.dead_letters] == reasons
    assert [r.request_id for r in publisher.results][1:] == ["r-2", "r-3"]
    assert driver.log == []


async def test_submit_validates_first_then_returns_the_execution_an_agent_claimed(engine: Engine) -> None:
    store, publisher, _ = memory(engine)
    without_id = S.ScenarioRequest(scenario_yaml=scenario())
    with pytest.raises(TimeoutError, match="no agent claimed it"):  # (no ingress runs here)
        await engine.submit(without_id, wait=0.2)
    assert without_id.request_id and publisher.requests[-1].request_id == without_id.request_id, \
        "a request without an id gets a new one, published with it"
    publisher.requests.clear()
    with pytest.raises(NotFound):
        await engine.submit(S.ScenarioRequest(request_id="x", scenario_name="no-such-scenario"))
    with pytest.raises(ScenarioError) as caught:
        await engine.submit(S.ScenarioRequest(request_id="y", scenario_yaml=scenario().replace("latency, target",
                                                                                               "lat, target")))
    assert any(i.path == "spec.steps[0].fault" for i in caught.value.issues)
    assert publisher.requests == [], "nothing invalid reaches the requests topic"
    with pytest.raises(TimeoutError, match="no agent claimed it"):
        await engine.submit(S.ScenarioRequest(request_id="r-4", scenario_yaml=scenario()), wait=0.3)

    async def ingress() -> None:  # what the serving process does with the requests topic
        await until(lambda: bool(publisher.requests) and publisher.requests[-1].request_id == "r-5")
        await engine.accept(request_record(publisher.requests[-1]))

    reader = asyncio.create_task(ingress())
    submitted = await engine.submit(S.ScenarioRequest(request_id="r-5", scenario_yaml=scenario()), wait=5)
    await reader
    assert not submitted.duplicate and (await engine.get(submitted.execution_id)).request_id == "r-5"
    again = await engine.submit(S.ScenarioRequest(request_id="r-5", scenario_yaml=scenario()))
    assert again.duplicate and again.execution_id == submitted.execution_id
    await finished(engine)
    listed, more = await engine.list(status=S.EXECUTION_STATUS_PASSED)
    assert [e.execution_id for e in listed] == [submitted.execution_id] and not more


async def test_halt_reverts_every_fault_aborts_runs_and_refuses_new_ones_until_resume(engine: Engine) -> None:
    store, publisher, driver = memory(engine)
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-6", scenario_yaml=scenario(30))))
    await until(lambda: bool(driver.applied))
    outcome = await engine.halt("incident 42")
    assert outcome.reverted_faults == 1 and outcome.aborted_executions == 1 and driver.applied == set()
    await engine.on_control(store.control[-1])  # every agent hears the halt
    await finished(engine)
    assert publisher.results[-1].status == S.EXECUTION_STATUS_ABORTED
    assert "halt-all: incident 42" in publisher.results[-1].reason
    with pytest.raises(StateError, match=r"halted \(incident 42\)"):
        await engine.submit(S.ScenarioRequest(request_id="r-7", scenario_yaml=scenario()))
    await engine.resume()
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-7", scenario_yaml=scenario())))
    await finished(engine)
    assert publisher.results[-1].status == S.EXECUTION_STATUS_PASSED


async def test_cancel_aborts_a_running_execution_and_unknown_ones_are_not_found(engine: Engine) -> None:
    store, publisher, driver = memory(engine)
    with pytest.raises(NotFound, match="unknown execution 'nope'"):
        await engine.cancel("nope")
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-8", scenario_yaml=scenario(30))))
    await until(lambda: bool(driver.applied))
    (execution_id,) = engine.running
    await engine.cancel(execution_id, "enough")
    await engine.on_control(store.control[-1])
    await finished(engine)
    assert (publisher.results[-1].status, publisher.results[-1].reason) == (S.EXECUTION_STATUS_ABORTED,
                                                                           "aborted: enough")
    assert driver.applied == set()


async def test_a_stopped_agents_run_is_finished_once_with_aborted(engine: Engine) -> None:
    store, publisher, _ = memory(engine)
    await store.claim_request(ExecutionRecord(execution_id="e-9", request_id="r-9", scenario_name="x",
                                              status="RUNNING", owner="agent-b/2", started_at=time.time()))
    await engine.reconcile_once()
    await engine.reconcile_once()
    assert [(r.execution_id, r.status) for r in publisher.results] == [("e-9", S.EXECUTION_STATUS_ABORTED)]
    assert "agent-b/2" in publisher.results[0].reason
    assert (await store.get_execution("e-9")).result_state == "published"  # type: ignore[union-attr]


async def test_closing_drains_running_executions_before_aborting_them(engine: Engine) -> None:
    _, publisher, _ = memory(engine)
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-10", scenario_yaml=scenario(0.3))))
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-11", scenario_yaml=scenario(30))))
    await engine.aclose(drain=3.0)
    await engine.aclose()  # idempotent
    statuses = {r.request_id: r.status for r in publisher.results}
    assert statuses == {"r-10": S.EXECUTION_STATUS_PASSED, "r-11": S.EXECUTION_STATUS_ABORTED}


async def test_an_injection_its_target_did_not_react_to_is_named_in_the_result(engine: Engine) -> None:
    _, publisher, _ = memory(engine)
    with_expectation = scenario(0.05) + """\
  expectations:
    - {name: no-loss, after: slow, attribution: window, event: {type: order_lost}, absent: {within: 1s}}
"""
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-12", scenario_yaml=with_expectation)))
    await until(lambda: bool(publisher.chaos_events))
    injected = publisher.chaos_events[0]
    for name, status, reason in (("no-loss", S.VERDICT_STATUS_PASSED, "no 'order_lost' until the deadline"),
                                 ("@reaction", S.VERDICT_STATUS_INCONCLUSIVE,
                                  "no audit event from link since the injection (none seen before it)")):
        engine.verdicts.deliver(S.ExpectationVerdict(execution_id=injected.execution_id, status=status,
                                                     correlation_id=injected.correlation_id,
                                                     expectation_name=name, reason=reason))
    await finished(engine)
    [result] = publisher.results
    assert result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert result.reason.endswith("| nothing reacted to: latency on link (no audit event from link since the "
                                  "injection (none seen before it))")
    assert [v.expectation_name for v in result.verdicts] == ["no-loss"], "the reaction is no expectation"
    [injection] = result.injections
    assert not injection.reacted and injection.reaction.startswith("no audit event from link")
    assert any(j.phase == "reactions" and j.name == "latency on link" for j in result.journal)


async def test_late_evidence_is_noted_on_the_verdict_it_came_too_late_for(engine: Engine) -> None:
    _, publisher, _ = memory(engine)
    with_expectation = scenario(0.05) + """\
  expectations:
    - {name: back, after: slow, event: {type: service_ready, service: link}, appears: {within: 0.2s}}
"""
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-13", scenario_yaml=with_expectation)))
    await until(lambda: bool(publisher.chaos_events))
    injected = publisher.chaos_events[0]

    def verdict(reason: str, **fields: object) -> S.ExpectationVerdict:
        return S.ExpectationVerdict(execution_id=injected.execution_id, correlation_id=injected.correlation_id,
                                    expectation_name="back", status=S.VERDICT_STATUS_FAILED, reason=reason, **fields)

    engine.verdicts.deliver(verdict("no 'service_ready from link' by the deadline"))
    late = verdict("'service_ready from link' came at T, 3.000s after the deadline")
    late.late_evidence_at.FromSeconds(1_800_000_000)
    await asyncio.sleep(0.5)  # the run is waiting for late evidence now
    engine.verdicts.deliver(late)
    await finished(engine)
    [result] = publisher.results
    [noted] = result.verdicts
    assert result.status == S.EXECUTION_STATUS_FAILED and noted.status == S.VERDICT_STATUS_FAILED
    assert noted.reason == ("no 'service_ready from link' by the deadline (late evidence: 'service_ready from "
                            "link' came at T, 3.000s after the deadline)")
    assert noted.late_evidence_at.seconds == 1_800_000_000


async def test_a_rejected_request_keeps_the_request_id_its_requester_sent(engine: Engine) -> None:
    """From the JSON payload when the request does not decode, else from the record's key."""
    _, publisher, _ = memory(engine)
    json_headers = [("content-type", b"application/json")]
    await engine.accept(record(b'{"requestId": "mine-1", "scenarioName": "x", "unknownField": 3}', json_headers))
    keyed = record(b"\x00not an event")
    await engine.accept(ConsumerRecord("requests", 0, next(OFFSETS), 0, 0, b"mine-2", keyed.value, None, 0,
                                       len(keyed.value), []))
    await engine.accept(record(b"\x00not an event"))
    ids = [r.request_id for r in publisher.results]
    assert ids[:2] == ["mine-1", "mine-2"] and ids[2].startswith("requests-0-"), ids
    assert all(r.status == S.EXECUTION_STATUS_REJECTED for r in publisher.results)


async def test_a_run_finished_by_another_agent_lists_the_faults_journal_and_verdicts_its_owner_noted(
    engine: Engine
) -> None:
    store, publisher, driver = memory(engine)
    await engine.accept(request_record(S.ScenarioRequest(request_id="r-12", scenario_yaml=scenario(30))))
    await until(lambda: bool(driver.applied) and len(engine.running) == 1)
    (execution_id,) = engine.running
    await until(lambda: any(e.phase == "steps" for r in [engine.running[execution_id]] for e in r.execution.journal))
    (cid,) = [lease.correlation_id for lease in await store.leases()]
    # agent-a stops heartbeating (as if it died): agent-b takes its fault and then its run over
    store.owners[engine.owner] = 0.0
    settings = Settings(lease_ttl=3, reconcile_interval=1, verdict_grace=0.1)
    drivers = DriverRegistry(settings)
    drivers.use("toxiproxy", driver)
    async with Engine.open(settings, owner="agent-b/2", store=store, publisher=publisher,  # type: ignore[arg-type]
                           drivers=drivers) as other:
        await store.renew_leases(other.owner, [], 3)
        await other.reconcile_once()  # reverts the orphaned fault
        await other.reconcile_once()  # no fault left: finishes the run
    await engine.abort_all("stopping")  # agent-a finds its run taken over: it publishes nothing
    (result,) = [r for r in publisher.results if r.execution_id == execution_id]
    assert result.status == S.EXECUTION_STATUS_ABORTED and "agent-a/1" in result.reason
    (injection,) = result.injections
    assert (injection.correlation_id, injection.step_name, injection.fault) == (cid, "slow", "latency")
    assert injection.final_state == S.CHAOS_EVENT_TYPE_REVERTED and injection.reverted_at.ToNanoseconds() > 0
    reverted = [e for e in publisher.chaos_events if e.type == S.CHAOS_EVENT_TYPE_REVERTED]
    assert [(e.correlation_id, e.reverted_at) for e in reverted] == [(cid, injection.reverted_at)]
    assert [(e.phase, e.name) for e in result.journal][:1] == [("steps", "slow")], "the owner's journal"
    assert result.journal[-1].phase == "takeover" and "agent-b/2" in result.journal[-1].name
    assert driver.applied == set()


async def test_nothing_is_taken_over_until_the_store_has_answered_for_a_lease_ttl(engine: Engine) -> None:
    store, publisher, _ = memory(engine)
    await store.claim_request(ExecutionRecord(execution_id="e-13", request_id="r-13", scenario_name="x",
                                              status="RUNNING", owner="agent-c/3", started_at=time.time()))
    store.steady = 2.5  # Redis came back 2.5 s ago: agent-c's silence may be the outage's, not its own
    await engine.reconcile_once()
    assert publisher.results == [] and (await store.get_execution("e-13")).owner == "agent-c/3"  # type: ignore[union-attr]
    store.steady = 3.0  # a whole lease TTL since: agent-c had its chance to renew
    await engine.reconcile_once()
    assert [(r.execution_id, r.status) for r in publisher.results] == [("e-13", S.EXECUTION_STATUS_ABORTED)]
