"""The fault manager and one execution on in-memory stand-ins of the store, publisher and driver
(agent.testing): leases before faults, fencing, taken-over leases, reverts that keep failing.
The same behaviour on the real stack is in tests/integration/test_reliability.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent._proto.coordinator.v1 import events_pb2 as S
from agent.drivers import DriverRegistry
from agent.drivers.base import FaultRequest
from agent.drivers.probes import Prober
from agent.engine.execution import EngineContext, Execution, Verdicts
from agent.engine.faults import FaultManager
from agent.errors import ActionError, FencedOut
from agent.history import MemoryHistory
from agent.scenario import load_scenario
from agent.settings import Settings
from agent.store import ExecutionRecord
from agent.testing import MemoryDriver, MemoryPublisher, MemoryStore

TWO_STEPS = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: two-steps}
spec:
  targets:
    link: {driver: toxiproxy, selector: {proxy: link}}
  steps:
    - {name: first, fault: latency, target: link, duration: 0.2s, parameters: {latency: 10ms}}
    - {name: second, fault: latency, target: link, duration: 0.2s, parameters: {latency: 10ms}}
"""
OWNER = "agent-a/1"


class Rig:
    def __init__(self) -> None:
        self.settings = Settings(lease_ttl=3, reconcile_interval=1, verdict_grace=0.1)
        self.store = MemoryStore()
        self.publisher = MemoryPublisher()
        self.driver = MemoryDriver()
        self.drivers = DriverRegistry(self.settings)
        self.drivers.use("toxiproxy", self.driver)
        self.faults = self.manager(OWNER)
        self.scenario = load_scenario(TWO_STEPS, "two.yaml")

    def manager(self, owner: str) -> FaultManager:
        manager = FaultManager(self.settings, self.store, self.drivers, self.publisher, owner)  # type: ignore[arg-type]
        manager.revert_backoff = 0.0
        return manager

    async def claim(self, execution_id: str = "e-1") -> None:
        await self.store.claim_request(ExecutionRecord(execution_id=execution_id, request_id=f"r-{execution_id}",
                                                       scenario_name="two-steps", status="PENDING", owner=OWNER,
                                                       started_at=time.time()))
        await self.store.renew_leases(OWNER, [], 3)

    def execution(self, execution_id: str = "e-1") -> Execution:
        ctx = EngineContext(self.settings, self.store, self.publisher, self.faults, Prober(self.settings),  # type: ignore[arg-type]
                            self.drivers, Verdicts(), MemoryHistory())
        return Execution(ctx, execution_id, f"r-{execution_id}", S.ScenarioRequest(), self.scenario, time.time())

    def kinds(self) -> list[tuple[str, str]]:
        return [(S.ChaosEventType.Name(e.type).removeprefix("CHAOS_EVENT_TYPE_"), e.owner) for e in
                self.publisher.chaos_events]


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_a_run_on_memory_parts_applies_and_reverts_each_fault_with_a_lease_first(rig: Rig) -> None:
    seen_leases = []

    async def lease_is_there(request: FaultRequest) -> None:
        seen_leases.append(await rig.store.lease_owner(request.correlation_id))

    rig.driver.on_inject = lease_is_there
    await rig.claim()
    result = await rig.execution().run()
    assert result is not None and result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert seen_leases == [OWNER, OWNER], "each lease was written before its fault went in"
    assert rig.driver.applied == set() and rig.store.lease_table == {}
    assert [k for k, _ in rig.kinds()] == ["INJECTED", "REVERTED", "INJECTED", "REVERTED"]
    assert [i.final_state for i in result.injections] == [S.CHAOS_EVENT_TYPE_REVERTED] * 2
    events = rig.publisher.chaos_events
    for injected, reverted in (events[0:2], events[2:4]):
        assert reverted.injected_at == injected.injected_at, "one injected_at per injection on every event"
        assert reverted.scenario_name == injected.scenario_name != ""


async def test_a_run_taken_over_mid_way_stops_silently_and_takes_back_the_fault_it_just_applied(rig: Rig) -> None:
    await rig.claim()
    execution = rig.execution()
    calls, progress_at_takeover = 0, -1

    async def taken_over_while_injecting(request: FaultRequest) -> None:
        nonlocal calls, progress_at_takeover
        calls += 1
        if calls == 2:  # the agent "pauses" inside the second injection; another takes the run over
            assert await rig.store.take_over("e-1", OWNER, "agent-b/2") == 2
            progress_at_takeover = len(rig.publisher.progress_events)

    rig.driver.on_inject = taken_over_while_injecting
    assert await execution.run() is None, "no result from an agent that lost its run"
    assert execution.lost
    assert rig.driver.applied == set(), "the fault applied after the takeover was taken back"
    assert [k for k, _ in rig.kinds()] == ["INJECTED", "REVERTED"], "nothing published for the second step"
    assert len(rig.publisher.progress_events) == progress_at_takeover, "no progress after the takeover"
    assert rig.store.lease_table == {}


async def test_an_injection_slower_than_the_lease_ttl_keeps_its_lease_and_its_run(rig: Rig) -> None:
    """A restart can take longer than a lease's TTL on a busy machine: while the fault goes in, the
    heartbeat renews its lease, and neither this agent's reconciler nor another's takes it (before,
    the lease expired mid-injection, was reverted as an orphan, and the run ended with no result)."""
    rig.settings = Settings(lease_ttl=0.6, reconcile_interval=0.1, verdict_grace=0.1)
    rig.faults = rig.manager(OWNER)
    other = rig.manager("agent-b/2")
    await rig.claim()
    reconciled: list[int] = []

    async def slow(request: FaultRequest) -> None:
        for _ in range(8):  # 1.6 s: more than twice the TTL
            await asyncio.sleep(0.2)
            await rig.faults.renew()  # the heartbeat, as heartbeat_forever does every TTL/3
            await other.renew()
            reconciled.append(await rig.faults.reconcile() + await other.reconcile())

    rig.driver.on_inject = slow
    result = await rig.execution().run()
    assert result is not None and result.status == S.EXECUTION_STATUS_PASSED, result.reason
    assert reconciled and set(reconciled) == {0}, "nobody reverted the lease while its fault went in"
    assert [owner for _, owner in rig.kinds()] == [OWNER] * 4 and rig.store.lease_table == {}


async def test_a_lease_taken_by_another_agent_is_not_reverted_or_reported_twice(rig: Rig) -> None:
    await rig.claim()
    step = rig.scenario.spec.steps[0]
    active = await rig.faults.inject("e-1", rig.scenario, step, 1)
    cid = active.lease.correlation_id
    lease = (await rig.store.leases())[0]
    assert await rig.store.take_lease(lease, "agent-b/2", 3)
    reverted = await rig.faults.revert(cid)
    assert reverted is not None and reverted.taken_over
    assert ("revert", cid) not in rig.driver.log and [k for k, _ in rig.kinds()] == ["INJECTED"]


async def test_an_orphan_whose_revert_keeps_failing_is_reported_held_with_back_off_and_retried(rig: Rig) -> None:
    await rig.claim()
    await rig.faults.inject("e-1", rig.scenario, rig.scenario.spec.steps[0], 1)
    rig.store.owners.clear()  # the owner's heartbeat is gone
    survivor = rig.manager("agent-b/2")
    await rig.store.renew_leases("agent-b/2", [], 3)
    rig.driver.fail_revert = 4  # every attempt of the first round fails
    assert await survivor.reconcile() == 0
    [stuck] = survivor.stuck.values()
    assert stuck.attempts == 1 and "refused" in stuck.error
    [held] = await rig.store.leases()
    assert held.owner == "agent-b/2" and held.expires_at >= stuck.retry_at - 0.01, "the back-off holds for all"
    assert rig.kinds()[-1] == ("REVERT_FAILED", "agent-b/2")

    other = rig.manager("agent-c/3")
    await rig.store.renew_leases("agent-c/3", [], 3)
    assert await other.reconcile() == 0 and rig.store.lease_table, "nobody touches it during the back-off"
    stuck.retry_at = 0.0
    rig.store.lease_table[held.correlation_id].expires_at = time.time() - 1
    assert await survivor.reconcile() == 1
    assert survivor.stuck == {} and rig.store.lease_table == {} and rig.driver.applied == set()
    assert rig.kinds()[-1] == ("REVERTED", "agent-b/2")


async def test_a_fenced_out_agent_cannot_write_a_lease(rig: Rig) -> None:
    await rig.claim()
    assert await rig.store.take_over("e-1", OWNER, "agent-b/2") == 2
    with pytest.raises(FencedOut):
        await rig.faults.inject("e-1", rig.scenario, rig.scenario.spec.steps[0], 1)
    assert rig.store.lease_table == {} and rig.driver.applied == set() and rig.publisher.chaos_events == []


PARALLEL = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: overlapping}
spec:
  targets:
    link: {driver: toxiproxy, selector: {proxy: link}}
  steps:
    - parallel:
        - {name: slow-one, fault: latency, target: link, duration: 1s, parameters: {latency: 10ms}}
        - {name: slow-two, fault: latency, target: link, duration: 1s, parameters: {latency: 10ms}}
"""


async def test_a_refused_parallel_step_names_itself_and_the_result_lists_the_fault_that_was_applied(
    rig: Rig
) -> None:
    import asyncio

    rig.scenario = load_scenario(PARALLEL, "parallel.yaml")
    await rig.claim()

    async def second_is_refused(request: FaultRequest) -> None:
        if len(rig.driver.log) == 0 and not getattr(second_is_refused, "first", None):
            second_is_refused.first = request.correlation_id  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)  # the first restart is still going in when the second is refused
        else:
            raise ActionError("supervisord refused restart of 'risk-monitor': ALREADY_STARTED")

    rig.driver.on_inject = second_is_refused
    result = await rig.execution().run()
    assert result is not None and result.status == S.EXECUTION_STATUS_ERROR
    assert "ExceptionGroup" not in result.reason and "TaskGroup" not in result.reason
    assert "step 'slow-two'" in result.reason and "ALREADY_STARTED" in result.reason, result.reason
    assert [(i.step_name, i.final_state) for i in result.injections] == [("slow-one", S.CHAOS_EVENT_TYPE_REVERTED)]
    assert rig.driver.applied == set() and rig.store.lease_table == {}
