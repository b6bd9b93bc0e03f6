"""Everything the agent keeps in Redis, under the configured prefix (default ``coordinator``).

=====================================  ==============================================================
key                                    what
=====================================  ==============================================================
``{p}:request:{request_id}``           execution id of a request already accepted (idempotency), 7 days
``{p}:execution:{id}``                 hash: status, scenario, request id, owner, times, reason
``{p}:result:{id}``                    the final result (protobuf bytes)
``{p}:executions``                     sorted set of execution ids by start time (listing)
``{p}:lease:{correlation_id}``         hash: a fault's revert recipe, owner, ``expires_at``
``{p}:owner:{instance}``               heartbeat of an agent instance (expires)
``{p}:result-published:{id}``          guard: the final result of ``id`` was published (exactly once)
``{p}:halted``                         the kill switch: present while halted, value is the reason
``{p}:cancel:{id}``                    a cancel request for execution ``id``
``{p}:control``                        pub/sub channel: cancel, halt, resume
=====================================  ==============================================================

A lease is written *before* its fault is applied and deleted only after a successful revert. It
has no Redis expiry: its ``expires_at`` field is pushed forward by the owner's heartbeat, and any
agent that finds a lease whose ``expires_at`` has passed reverts it. (An expiring key would lose
the very recipe needed to clean up.)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from agent.constants import redis_key
from agent.logs import get_logger

log = get_logger("agent.store")

REQUEST_TTL_S = 7 * 24 * 3600
EXECUTION_TTL_S = 30 * 24 * 3600


@dataclass
class Lease:
    correlation_id: str
    execution_id: str
    driver: str
    target: str
    service: str
    fault: str
    step_name: str
    recipe: dict[str, Any]
    owner: str
    created_at: float
    expires_at: float
    injected: bool = False

    def to_redis(self) -> dict[str, str]:
        data = asdict(self)
        data["recipe"] = json.dumps(self.recipe, sort_keys=True)
        data["injected"] = "1" if self.injected else "0"
        return {k: str(v) for k, v in data.items()}

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Lease:
        return cls(
            correlation_id=raw["correlation_id"], execution_id=raw["execution_id"], driver=raw["driver"],
            target=raw["target"], service=raw.get("service", ""), fault=raw["fault"],
            step_name=raw.get("step_name", ""), recipe=json.loads(raw.get("recipe") or "{}"),
            owner=raw["owner"], created_at=float(raw["created_at"]), expires_at=float(raw["expires_at"]),
            injected=raw.get("injected") == "1",
        )


@dataclass
class ExecutionRecord:
    execution_id: str
    request_id: str
    scenario_name: str
    status: str
    owner: str
    requester: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    reason: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class Store:
    def __init__(self, url: str, prefix: str = "coordinator") -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url, decode_responses=True)
        self._binary: aioredis.Redis = aioredis.from_url(url, decode_responses=False)
        self.prefix = prefix
        self._set_if_exists = self.redis.register_script(self._SET_IF_EXISTS)

    _SET_IF_EXISTS = """
    if redis.call('exists', KEYS[1]) == 1 then return redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) end
    return 0
    """

    def key(self, *parts: str) -> str:
        return redis_key(self.prefix, *parts)

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self._binary.aclose()

    # -- requests and executions -------------------------------------------------------------------
    async def claim_request(self, request_id: str, execution_id: str) -> str | None:
        """Claim ``request_id`` for ``execution_id``; return the earlier execution id if already claimed."""
        key = self.key("request", request_id)
        if await self.redis.set(key, execution_id, nx=True, ex=REQUEST_TTL_S):
            return None
        return await self.redis.get(key) or ""

    async def claimed_request(self, request_id: str) -> str | None:
        """The execution id a request was claimed for, or None when no agent has taken it yet."""
        return await self.redis.get(self.key("request", request_id))  # type: ignore[no-any-return]

    async def save_execution(self, record: ExecutionRecord) -> None:
        key = self.key("execution", record.execution_id)
        data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in asdict(record).items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=data)
            pipe.expire(key, EXECUTION_TTL_S)
            pipe.zadd(self.key("executions"), {record.execution_id: record.started_at or time.time()})
            await pipe.execute()

    async def update_execution(self, execution_id: str, **fields: Any) -> None:
        await self.redis.hset(self.key("execution", execution_id), mapping={k: str(v) for k, v in fields.items()})

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return _record(await self.redis.hgetall(self.key("execution", execution_id)))

    async def list_executions(self, limit: int = 50) -> list[ExecutionRecord]:
        """The newest ``limit`` executions, read in one round trip."""
        ids = await self.redis.zrevrange(self.key("executions"), 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for execution_id in ids:
                pipe.hgetall(self.key("execution", execution_id))
            raws = await pipe.execute()
        return [r for r in (_record(raw) for raw in raws) if r is not None]

    async def save_result(self, execution_id: str, payload: bytes) -> None:
        await self._binary.set(self.key("result", execution_id), payload, ex=EXECUTION_TTL_S)

    async def get_result(self, execution_id: str) -> bytes | None:
        return await self._binary.get(self.key("result", execution_id))  # type: ignore[no-any-return]

    async def get_results(self, execution_ids: list[str]) -> dict[str, bytes]:
        """The stored results of those executions that have one, read in one round trip."""
        async with self._binary.pipeline(transaction=False) as pipe:
            for execution_id in execution_ids:
                pipe.get(self.key("result", execution_id))
            raws = await pipe.execute()
        return {e: r for e, r in zip(execution_ids, raws, strict=True) if r}

    async def claim_result(self, execution_id: str) -> bool:
        """True once per execution: whoever gets it publishes the one final result."""
        return bool(await self.redis.set(self.key("result-published", execution_id), "1", nx=True,
                                         ex=EXECUTION_TTL_S))

    # -- leases and owners -------------------------------------------------------------------------
    async def write_lease(self, lease: Lease) -> None:
        await self.redis.hset(self.key("lease", lease.correlation_id), mapping=lease.to_redis())

    async def mark_injected(self, correlation_id: str) -> None:
        await self._set_if_exists(keys=[self.key("lease", correlation_id)], args=["injected", "1"])

    async def delete_lease(self, correlation_id: str) -> None:
        await self.redis.delete(self.key("lease", correlation_id))

    async def leases(self) -> list[Lease]:
        keys = [key async for key in self._scan(self.key("lease", "*"))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            raws = await pipe.execute()
        found = []
        for key, raw in zip(keys, raws, strict=True):
            if not raw:
                continue
            try:
                found.append(Lease.from_redis(raw))
            except (KeyError, ValueError) as exc:
                # leases are written whole (one HSET); a hash without its recipe fields is a fragment
                # that nothing can revert: drop it instead of failing every reconcile on it
                log.warning("incomplete lease removed", key=key, fields=sorted(raw), error=repr(exc))
                await self.redis.delete(key)
        return found

    async def renew_leases(self, owner: str, correlation_ids: list[str], ttl: float) -> None:
        expires = str(time.time() + ttl)
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in correlation_ids:
                # only a lease still there: one reverted meanwhile (halt, another agent) stays gone
                await self._set_if_exists(keys=[self.key("lease", cid)], args=["expires_at", expires], client=pipe)
            pipe.set(self.key("owner", owner), str(time.time()), ex=max(1, int(ttl)))
            await pipe.execute()

    async def owner_alive(self, owner: str) -> bool:
        return bool(await self.redis.exists(self.key("owner", owner)))

    # -- control -----------------------------------------------------------------------------------
    async def halted(self) -> str | None:
        return await self.redis.get(self.key("halted"))  # type: ignore[no-any-return]

    async def halt(self, reason: str) -> None:
        await self.redis.set(self.key("halted"), reason or "halted")
        await self.redis.publish(self.key("control"), json.dumps({"action": "halt", "reason": reason}))

    async def resume(self) -> None:
        await self.redis.delete(self.key("halted"))
        await self.redis.publish(self.key("control"), json.dumps({"action": "resume"}))

    async def request_cancel(self, execution_id: str, reason: str) -> None:
        await self.redis.set(self.key("cancel", execution_id), reason or "cancelled", ex=EXECUTION_TTL_S)
        await self.redis.publish(self.key("control"),
                                 json.dumps({"action": "cancel", "execution_id": execution_id, "reason": reason}))

    async def cancel_requested(self, execution_id: str) -> str | None:
        return await self.redis.get(self.key("cancel", execution_id))  # type: ignore[no-any-return]

    async def control_messages(self) -> AsyncIterator[dict[str, Any]]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.key("control"))
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message and message.get("type") == "message":
                    try:
                        yield json.loads(message["data"])
                    except (TypeError, ValueError):
                        continue
        finally:
            await pubsub.aclose()

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        async for key in self.redis.scan_iter(match=pattern, count=200):
            yield key


def _record(raw: dict[str, str]) -> ExecutionRecord | None:
    if not raw:
        return None
    return ExecutionRecord(
        execution_id=raw["execution_id"], request_id=raw.get("request_id", ""),
        scenario_name=raw.get("scenario_name", ""), status=raw.get("status", ""), owner=raw.get("owner", ""),
        requester=raw.get("requester", ""), started_at=float(raw.get("started_at") or 0),
        ended_at=float(raw.get("ended_at") or 0), reason=raw.get("reason", ""),
        labels=json.loads(raw.get("labels") or "{}"),
    )
