"""One contract, two stores: every test here runs against the real Redis store (its Lua scripts on a
real redis-server) and against ``agent.testing.MemoryStore``, which unit tests of the engine rely on
to behave the same. A difference between them fails here, not in a unit test that trusted the fake."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from agent.store import INJECTION, REVERT, ExecutionRecord, Guarded, Lease, RedisStore, Store
from agent.testing import MemoryStore


@dataclass
class Subject:
    store: Store
    #: what Redis can lose in a crash: ("execution", id) with its claim, or ("lease", correlation id)
    lose: Callable[[str, str], Awaitable[None]]


@pytest.fixture(params=["redis", "memory"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "memory":
        memory = MemoryStore()

        async def lose_in_memory(kind: str, ident: str) -> None:
            if kind == "lease":
                memory.lease_table.pop(ident, None)
                return
            record = memory.executions.pop(ident)
            memory.requests.pop(record.request_id, None)

        yield Subject(memory, lose_in_memory)
        return
    stack_env = request.getfixturevalue("stack_env")
    redis_store = RedisStore(stack_env["COORDINATOR_REDIS_URL"], f"contract-{uuid.uuid4().hex[:8]}")

    async def lose_in_redis(kind: str, ident: str) -> None:
        if kind == "lease":
            await redis_store.redis.delete(redis_store.key("lease", ident))
            return
        record = await redis_store.get_execution(ident)
        assert record is not None
        await redis_store.redis.delete(redis_store.key("execution", ident),
                                       redis_store.key("request", record.request_id))

    try:
        yield Subject(redis_store, lose_in_redis)
    finally:
        keys = [k async for k in redis_store.redis.scan_iter(match=f"{redis_store.prefix}:*")]
        if keys:
            await redis_store.redis.delete(*keys)
        await redis_store.aclose()


def run(execution_id: str, request_id: str, owner: str = "a/1", started_at: float = 0.0) -> ExecutionRecord:
    return ExecutionRecord(execution_id=execution_id, request_id=request_id, scenario_name="s", status="PENDING",
                           owner=owner, started_at=started_at or time.time())


def lease(cid: str, execution_id: str, owner: str = "a/1", expires_in: float = 15.0) -> Lease:
    now = time.time()
    return Lease(correlation_id=cid, execution_id=execution_id, driver="toxiproxy", target="link", service="link",
                 fault="latency", step_name="slow", recipe={"proxy": cid, "latency": 100}, owner=owner,
                 created_at=now, expires_at=now + expires_in)


async def test_a_request_is_claimed_once_with_its_record_and_runs_are_listed_newest_first(subject: Subject) -> None:
    store = subject.store
    first = run("e-1", "r-1", started_at=1000.0)
    assert await store.claim_request(first) is None
    assert await store.claim_request(first) is None, "a retried claim of the same record is still ours"
    assert await store.claim_request(run("e-2", "r-1", owner="b/2")) == "e-1", "the request was taken by e-1"
    assert await store.claimed_request("r-1") == "e-1" and await store.claimed_request("r-9") is None
    record = await store.get_execution("e-1")
    assert record is not None and (record.owner, record.epoch, record.status) == ("a/1", 1, "PENDING")
    assert await store.get_execution("e-2") is None, "a refused claim writes no record"
    assert await store.claim_request(run("e-3", "r-3", started_at=2000.0)) is None
    assert [r.execution_id for r in await store.list_executions()] == ["e-3", "e-1"]
    assert [r.execution_id for r in await store.list_executions(limit=1)] == ["e-3"]


async def test_while_halted_nothing_is_claimed_but_a_duplicate_is_still_told(subject: Subject) -> None:
    store = subject.store
    assert await store.claim_unless_halted(run("e-1", "r-1")) == (None, None)
    await store.halt("maintenance")
    assert await store.halted() == "maintenance"
    assert await store.claim_unless_halted(run("e-2", "r-2")) == (None, "maintenance")
    assert await store.claimed_request("r-2") is None
    assert await store.claim_unless_halted(run("e-9", "r-1")) == ("e-1", None)
    await store.resume()
    assert await store.halted() is None
    assert await store.claim_unless_halted(run("e-2", "r-2")) == (None, None)


async def test_writes_are_fenced_by_owner_and_epoch_and_a_takeover_moves_both(subject: Subject) -> None:
    store = subject.store
    await store.claim_request(run("e-1", "r-1"))
    assert await store.fenced_update("e-1", "a/1", 1, status="RUNNING")
    assert await store.fenced_update("e-1", "a/1", 1), "no fields: only tells that a/1 still runs it"
    assert not await store.fenced_update("e-1", "a/1", 2, status="FAILED"), "another epoch"
    assert not await store.fenced_update("e-1", "b/2", 1, status="FAILED"), "another owner"
    assert (await store.get_execution("e-1")).status == "RUNNING"  # type: ignore[union-attr]

    assert await store.take_over("e-1", "x/9", "b/2") is None, "not held by the expected owner"
    assert await store.take_over("e-1", "a/1", "b/2") == 2
    assert await store.take_over("e-1", "a/1", "b/2") == 2, "a retried takeover by the new owner is told its epoch"
    assert await store.take_over("e-1", "a/1", "c/3") is None
    assert await store.take_over("e-missing", "a/1", "b/2") is None
    assert not await store.fenced_update("e-1", "a/1", 1, status="PASSED"), "the old owner is fenced out"
    assert await store.fenced_update("e-1", "b/2", 2, status="ABORTED")
    record = await store.get_execution("e-1")
    assert record is not None and (record.owner, record.epoch, record.status) == ("b/2", 2, "ABORTED")


async def test_a_run_starts_only_for_its_owner_and_not_once_a_cancel_is_pending(subject: Subject) -> None:
    store = subject.store
    await store.claim_request(run("e-1", "r-1"))
    assert await store.start_run("e-1", "b/2", 1, status="RUNNING") == Guarded(False)
    await store.request_cancel("e-1", "the requester changed its mind")
    assert await store.start_run("e-1", "a/1", 1, status="RUNNING") == Guarded(False, "the requester changed its mind")
    assert (await store.get_execution("e-1")).status == "PENDING"  # type: ignore[union-attr]
    await store.claim_request(run("e-2", "r-2"))
    assert await store.start_run("e-2", "a/1", 1, status="RUNNING") == Guarded(True)
    assert (await store.get_execution("e-2")).status == "RUNNING"  # type: ignore[union-attr]


async def test_a_result_is_begun_by_the_owner_only_and_never_again_once_published(subject: Subject) -> None:
    store = subject.store
    await store.claim_request(run("e-1", "r-1"))
    assert not await store.begin_result("e-1", "b/2", 1, b"theirs", status="PASSED")
    assert await store.get_result("e-1") is None
    assert await store.begin_result("e-1", "a/1", 1, b"\x00result", status="PASSED")
    record = await store.get_execution("e-1")
    assert record is not None and (record.result_state, record.status) == ("publishing", "PASSED")
    assert await store.begin_result("e-1", "a/1", 1, b"\x00again", status="PASSED"), "until published, retried"
    await store.result_published("e-1")
    assert (await store.get_execution("e-1")).result_state == "published"  # type: ignore[union-attr]
    assert not await store.begin_result("e-1", "a/1", 1, b"late", status="FAILED")
    assert await store.get_result("e-1") == b"\x00again"
    assert await store.get_results(["e-1", "e-none"]) == {"e-1": b"\x00again"}


async def test_a_lease_goes_in_before_its_fault_and_leaves_with_its_revert_both_noted_in_the_trail(
    subject: Subject
) -> None:
    store = subject.store
    await store.claim_request(run("e-1", "r-1"))
    mine = lease("c-1", "e-1")
    assert await store.write_lease_guarded(mine, 2) == Guarded(False), "a stale epoch writes no lease"
    assert await store.leases() == []
    await store.halt("stop everything")
    assert await store.write_lease_guarded(mine, 1) == Guarded(False, "stop everything")
    await store.resume()
    assert await store.write_lease_guarded(mine, 1) == Guarded(True)
    [read] = await store.leases()
    assert (read.recipe, read.owner, read.injected) == ({"proxy": "c-1", "latency": 100}, "a/1", False)

    mine.injected_at = time.time()
    assert not await store.mark_injected(mine, 2, b"stale"), "fenced by the run's epoch"
    assert await store.mark_injected(mine, 1, b"applied")
    [read] = await store.leases()
    assert read.injected and read.injected_at == pytest.approx(mine.injected_at)
    await store.add_to_trail("e-1", "j:0", b"journal")
    assert not await store.release_lease(mine, "b/2", b"not theirs")
    assert await store.lease_owner("c-1") == "a/1"
    assert await store.release_lease(mine, "a/1", b"reverted")
    assert not await store.release_lease(mine, "a/1", b"twice"), "a released lease is gone"
    assert await store.leases() == [] and await store.lease_owner("c-1") is None
    assert await store.trail("e-1") == {INJECTION + "c-1": b"applied", REVERT + "c-1": b"reverted",
                                        "j:0": b"journal"}
    assert not await store.mark_injected(mine, 1, b"after"), "no lease, nothing marked"


async def test_a_lease_changes_hands_only_by_compare_and_set_and_a_heartbeat_never_brings_one_back(
    subject: Subject
) -> None:
    store = subject.store
    await store.claim_request(run("e-1", "r-1"))
    await store.write_lease(lease("c-1", "e-1", expires_in=3))
    [read] = await store.leases()
    await store.renew_leases("a/1", ["c-1"], 30)  # the owner's heartbeat after the lease was read
    assert await store.owner_alive("a/1") and not await store.owner_alive("b/2")
    assert not await store.take_lease(read, "b/2", 3), "renewed since it was read: not orphaned"
    [fresh] = await store.leases()
    assert fresh.expires_at > time.time() + 20
    assert not await store.take_lease(lease("c-1", "e-1", owner="x/9"), "b/2", 3), "not the owner read"
    assert await store.take_lease(read, "b/2", 3, unchanged=False), "without unchanged only the owner is compared"
    assert await store.lease_owner("c-1") == "b/2"

    await store.hold_lease("c-1", "a/1", time.time() + 100)  # the old owner's hold does nothing now
    [taken] = await store.leases()
    assert taken.expires_at < time.time() + 10
    await store.hold_lease("c-1", "b/2", time.time() + 100)
    assert (await store.leases())[0].expires_at > time.time() + 90
    assert not await store.delete_lease_if_owned("c-1", "a/1")
    assert await store.delete_lease_if_owned("c-1", "b/2")
    await store.renew_leases("b/2", ["c-1"], 30)
    assert await store.leases() == [], "a heartbeat listing a reverted lease does not recreate it"
    await store.write_lease(lease("c-2", "e-1"))
    await store.delete_lease("c-2")
    assert await store.leases() == []


async def test_what_was_lost_is_restored_only_while_its_run_is_still_the_owners(subject: Subject) -> None:
    store = subject.store
    ours, taken = run("e-ours", "r-ours"), run("e-taken", "r-taken")
    for record in (ours, taken):
        assert await store.claim_request(record) is None
    assert await store.take_over("e-taken", "a/1", "b/2") == 2
    for cid, execution_id in (("c-ours", "e-ours"), ("c-taken", "e-taken")):
        await store.write_lease(lease(cid, execution_id))
    await subject.lose("execution", "e-ours")
    await subject.lose("lease", "c-ours")
    await subject.lose("lease", "c-taken")
    assert await store.get_execution("e-ours") is None and await store.claimed_request("r-ours") is None

    back = await store.restore([ours, taken], [(lease("c-ours", "e-ours"), 1), (lease("c-taken", "e-taken"), 1)])
    assert back == (1, 1), "the run and lease of e-ours; e-taken's record was there and its lease is b/2's run"
    assert (await store.get_execution("e-ours")).owner == "a/1"  # type: ignore[union-attr]
    assert await store.claimed_request("r-ours") == "e-ours"
    assert (await store.get_execution("e-taken")).owner == "b/2", "a record present is not overwritten"  # type: ignore[union-attr]
    assert [x.correlation_id for x in await store.leases()] == ["c-ours"]
    assert await store.restore([ours], [(lease("c-ours", "e-ours"), 1)]) == (0, 0), "nothing missing now"


async def test_after_an_outage_the_first_answer_runs_on_return_once_before_it_returns(subject: Subject) -> None:
    store = subject.store
    calls: list[str] = []

    async def renew() -> None:
        calls.append("renewed")

    store.on_return = renew
    await store.returned()
    assert calls == [], "no outage, nothing to do"
    store.outage.failed(ConnectionError("redis went away"))
    assert store.outage.down
    await store.returned()
    assert calls == ["renewed"] and not store.outage.down
    await store.returned()
    assert calls == ["renewed"]
