"""Lease bookkeeping in the real Redis: a heartbeat never resurrects a reverted lease as a fragment."""

from __future__ import annotations

import time
import uuid

from agent.store import Lease, RedisStore


async def test_renewing_a_reverted_lease_does_not_recreate_it_and_fragments_are_dropped(
    stack_env: dict[str, str]
) -> None:
    store = RedisStore(stack_env["COORDINATOR_REDIS_URL"], f"test-{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()
        lease = Lease(correlation_id="c-1", execution_id="e-1", driver="toxiproxy", target="link", service="link",
                      fault="latency", step_name="slow", recipe={"proxy": "p"}, owner="a/1", created_at=now,
                      expires_at=now + 15)
        await store.write_lease(lease)
        await store.delete_lease("c-1")  # reverted, e.g. by halt-all from another agent
        await store.renew_leases("a/1", ["c-1"], 15)  # the owner's heartbeat still lists it
        await store.mark_injected(lease, 1)
        assert not await store.redis.exists(store.key("lease", "c-1")), "nothing written back"

        await store.write_lease(lease)
        await store.renew_leases("a/1", ["c-1"], 30)
        [renewed] = await store.leases()
        assert renewed.expires_at > now + 20 and renewed.recipe == {"proxy": "p"}

        await store.redis.hset(store.key("lease", "c-2"), "expires_at", "1")  # a fragment from an older agent
        assert [found.correlation_id for found in await store.leases()] == ["c-1"]
        assert not await store.redis.exists(store.key("lease", "c-2")), "the fragment was removed"
    finally:
        await store.redis.delete(store.key("lease", "c-1"))
        await store.aclose()


async def test_leases_and_runs_change_hands_only_by_compare_and_set(stack_env: dict[str, str]) -> None:
    from agent.store import ExecutionRecord

    store = RedisStore(stack_env["COORDINATOR_REDIS_URL"], f"test-{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()
        record = ExecutionRecord(execution_id="e-1", request_id="r-1", scenario_name="s", status="PENDING",
                                 owner="a/1", started_at=now)
        assert await store.claim_request(record) is None
        assert await store.claim_request(record) is None, "a retried claim of the same record is still ours"
        assert await store.claim_request(ExecutionRecord(execution_id="e-2", request_id="r-1", scenario_name="s",
                                                         status="PENDING", owner="b/2")) == "e-1"
        lease = Lease(correlation_id="c-1", execution_id="e-1", driver="toxiproxy", target="link", service="link",
                      fault="latency", step_name="slow", recipe={}, owner="a/1", created_at=now, expires_at=now + 3)
        assert await store.write_lease_guarded(lease, 1) == (True, None)
        [read] = await store.leases()
        await store.renew_leases("a/1", ["c-1"], 3)  # the owner's heartbeat after the lease was read
        assert not await store.take_lease(read, "b/2", 3), "a lease renewed since it was read is not orphaned"
        [fresh] = await store.leases()
        assert await store.take_lease(fresh, "b/2", 3) and await store.lease_owner("c-1") == "b/2"
        assert not await store.mark_injected(lease, 1), "the lease is no longer a/1's"

        assert await store.take_over("e-1", "a/1", "b/2") == 2
        assert await store.take_over("e-1", "a/1", "b/2") == 2, "a retried takeover answers the same"
        assert await store.take_over("e-1", "a/1", "c/3") is None
        assert not await store.fenced_update("e-1", "a/1", 1, status="RUNNING"), "a/1 is fenced out"
        assert not await store.begin_result("e-1", "a/1", 1, b"x", status="PASSED")
        assert await store.begin_result("e-1", "b/2", 2, b"y", status="ABORTED")
        await store.result_published("e-1")
        assert not await store.begin_result("e-1", "b/2", 2, b"z", status="ABORTED"), "one result only"
        stored = await store.get_execution("e-1")
        assert stored is not None and (stored.status, stored.result_state, stored.epoch) == ("ABORTED", "published", 2)
        assert await store.get_result("e-1") == b"y"
    finally:
        for key in [k async for k in store.redis.scan_iter(match=f"{store.prefix}:*")]:
            await store.redis.delete(key)
        await store.aclose()


async def test_a_claim_a_run_start_and_a_lease_read_the_kill_switch_or_a_cancel_in_the_same_step(
    stack_env: dict[str, str],
) -> None:
    from agent.store import ExecutionRecord

    store = RedisStore(stack_env["COORDINATOR_REDIS_URL"], f"test-{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()
        record = ExecutionRecord(execution_id="e-1", request_id="r-1", scenario_name="s", status="PENDING",
                                 owner="a/1", started_at=now)
        await store.halt("maintenance")
        assert await store.claim_unless_halted(record) == (None, "maintenance")
        assert await store.claimed_request("r-1") is None, "nothing is claimed while halted"
        await store.resume()
        assert await store.claim_unless_halted(record) == (None, None)
        await store.halt("again")
        second = ExecutionRecord(execution_id="e-2", request_id="r-1", scenario_name="s", status="PENDING",
                                 owner="b/2", started_at=now)
        assert await store.claim_unless_halted(second) == ("e-1", None), "a duplicate is one, halted or not"

        lease = Lease(correlation_id="c-1", execution_id="e-1", driver="toxiproxy", target="link", service="link",
                      fault="latency", step_name="slow", recipe={}, owner="a/1", created_at=now, expires_at=now + 3)
        assert await store.write_lease_guarded(lease, 1) == (False, "again")
        assert await store.leases() == [], "no lease is written while halted"
        await store.resume()
        assert await store.write_lease_guarded(lease, 2) == (False, None), "fenced: the run is at epoch 1"
        assert await store.write_lease_guarded(lease, 1) == (True, None)

        assert await store.start_run("e-1", "b/2", 1, status="RUNNING") == (False, None), "not b/2's run"
        await store.request_cancel("e-1", "not today")
        assert await store.start_run("e-1", "a/1", 1, status="RUNNING") == (False, "not today")
        stored = await store.get_execution("e-1")
        assert stored is not None and stored.status == "PENDING", "a cancelled run is not marked RUNNING"
        await store.redis.delete(store.key("cancel", "e-1"))
        assert await store.start_run("e-1", "a/1", 1, status="RUNNING") == (True, None)
        stored = await store.get_execution("e-1")
        assert stored is not None and stored.status == "RUNNING"
    finally:
        for key in [k async for k in store.redis.scan_iter(match=f"{store.prefix}:*")]:
            await store.redis.delete(key)
        await store.aclose()


async def test_what_redis_lost_of_a_live_agent_is_written_back_but_never_what_changed_hands(
    stack_env: dict[str, str]
) -> None:
    from agent.store import ExecutionRecord

    store = RedisStore(stack_env["COORDINATOR_REDIS_URL"], f"test-{uuid.uuid4().hex[:8]}")
    try:
        now = time.time()

        def lease(cid: str, execution_id: str) -> Lease:
            return Lease(correlation_id=cid, execution_id=execution_id, driver="toxiproxy", target="link",
                         service="link", fault="latency", step_name="slow", recipe={"proxy": cid}, owner="a/1",
                         created_at=now, expires_at=now + 15, injected=True, injected_at=now)

        ours = ExecutionRecord(execution_id="e-ours", request_id="r-ours", scenario_name="x", status="RUNNING",
                               owner="a/1", started_at=now)
        taken = ExecutionRecord(execution_id="e-taken", request_id="r-taken", scenario_name="x", status="RUNNING",
                                owner="a/1", started_at=now)
        for record in (ours, taken):
            assert await store.claim_request(record) is None
        assert await store.take_over("e-taken", "a/1", "b/2") == 2  # another agent has this one now
        # Redis lost the record of e-ours with its claim, and the lease of each run
        await store.redis.delete(store.key("execution", "e-ours"), store.key("request", "r-ours"))
        runs, leases = await store.restore([ours], [(lease("c-ours", "e-ours"), 1), (lease("c-taken", "e-taken"), 1)])
        assert (runs, leases) == (1, 1)
        assert (await store.get_execution("e-ours")).owner == "a/1"  # type: ignore[union-attr]
        assert await store.claimed_request("r-ours") == "e-ours"
        assert [(x.correlation_id, x.injected) for x in await store.leases()] == [("c-ours", True)]
        assert await store.restore([ours], [(lease("c-ours", "e-ours"), 1)]) == (0, 0), "nothing missing now"
    finally:
        await store.redis.delete(*[store.key(*k) for k in (("lease", "c-ours"), ("execution", "e-ours"),
                                                           ("execution", "e-taken"), ("request", "r-ours"),
                                                           ("request", "r-taken"), ("executions",))])
        await store.aclose()
