"""Lease bookkeeping in the real Redis: a heartbeat never resurrects a reverted lease as a fragment."""

from __future__ import annotations

import time
import uuid

from agent.store import Lease, Store


async def test_renewing_a_reverted_lease_does_not_recreate_it_and_fragments_are_dropped(
    stack_env: dict[str, str]
) -> None:
    store = Store(stack_env["COORDINATOR_REDIS_URL"], f"test-{uuid.uuid4().hex[:8]}")
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
