"""Everything the agent keeps in Redis, under the configured prefix (default ``coordinator``).

=====================================  ==============================================================
key                                    what
=====================================  ==============================================================
``{p}:request:{request_id}``           execution id of a request already accepted (idempotency), 7 days
``{p}:execution:{id}``                 hash: status, scenario, request id, owner, epoch, times, reason,
                                       ``result_state`` ("" -> ``publishing`` -> ``published``)
``{p}:result:{id}``                    the final result (protobuf bytes)
``{p}:executions``                     sorted set of execution ids by start time (listing)
``{p}:lease:{correlation_id}``         hash: a fault's revert recipe, owner, ``expires_at``
``{p}:trail:{execution_id}``           hash: what a run recorded as it went, for whoever finishes it:
                                       ``i:{cid}`` each applied fault, ``r:{cid}`` its revert,
                                       ``j:{n}`` journal entries, ``v:{cid}|{name}`` verdicts (protobuf)
``{p}:owner:{instance}``               heartbeat of an agent instance (expires)
``{p}:halted``                         the kill switch: present while halted, value is the reason
``{p}:cancel:{id}``                    a cancel request for execution ``id``
``{p}:control``                        pub/sub channel: cancel, halt, resume
=====================================  ==============================================================

A lease is written *before* its fault is applied and deleted only after a successful revert. It
has no Redis expiry: its ``expires_at`` field is pushed forward by the owner's heartbeat, and any
agent that finds a lease whose ``expires_at`` has passed reverts it. (An expiring key would lose
the very recipe needed to clean up.)

**Atomicity and fencing.** A request's claim and its execution record are written by one Lua
script: there is never a claim without a record. Every execution has an ``owner`` (the agent
process running it) and an ``epoch`` (a fencing token). Whatever an owner writes for a run (its
status, its leases, its result claim) goes through a script that first compares owner and epoch;
whoever takes a run over (the reconciler, when the owner's heartbeat is gone) changes the owner
and bumps the epoch in one script, so an owner that was paused and comes back finds itself fenced
out and touches nothing more. A lease likewise changes hands by a compare-and-set on its ``owner``.

**One interface, two stores.** ``Store`` is the interface the engine uses (a ``typing.Protocol``);
``RedisStore`` is the real one, ``agent.testing.MemoryStore`` the in-memory one for unit tests. One
contract suite (tests/integration/test_store_contract.py) runs against both.

**Outages.** A ``RedisStore(patient=True)`` (the agent's) rides out Redis outages: the engine's calls are
retried with back-off until Redis answers again, one log line per change of state. The CLI and
read-only API calls use an impatient store and fail at once with the connection error.

An outage never counts against a lease. When Redis answers again, the first call back runs
``on_return`` (the agent renews its heartbeat and every lease it holds, restoring what Redis lost)
before that call, or any other, returns to its caller: nothing is injected, reverted or published
before the renewal. And a reconciler only takes what has gone unrenewed for a lease's TTL while
Redis was reachable: ``steady_for`` is how long Redis has answered without a break, the shorter of
its own uptime (a restart) and the time since this store last saw it come back (a pause or a cut).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

import redis
import redis.asyncio as aioredis
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent import metrics
from agent.constants import redis_key
from agent.logs import get_logger

log = get_logger("agent.store")

REQUEST_TTL_S = 7 * 24 * 3600
#: the fields of a run's trail, by what they hold (``agent.engine.trail`` writes and reads them)
INJECTION, REVERT, JOURNAL, VERDICT = "i:", "r:", "j:", "v:"
EXECUTION_TTL_S = 30 * 24 * 3600
#: errors that mean "Redis is not reachable now" (a retry may succeed), as opposed to a bad command
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)

P = ParamSpec("P")
T = TypeVar("T")


def answer(call: Awaitable[T] | T) -> Awaitable[T]:
    """A command of redis-py's asyncio client, typed as awaitable. (redis-py types its commands
    ``Awaitable[T] | T`` for both clients; on the asyncio client they are always awaitable.)"""
    assert inspect.isawaitable(call)
    return call


class Outage:
    """Tracks whether a dependency answers, logging once per change of state (not once per retry)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down_since: float | None = None
        self.failures = 0
        #: when (``time.monotonic``) it last came back after an outage; None: never seen away
        self.back_at: float | None = None
        metrics.DEPENDENCY_UP.labels(dependency=name).set(1)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        metrics.DEPENDENCY_ERRORS.labels(dependency=self.name).inc()
        if self.down_since is None:
            self.down_since = time.time()
            metrics.DEPENDENCY_OUTAGES.labels(dependency=self.name).inc()
            metrics.DEPENDENCY_UP.labels(dependency=self.name).set(0)
            log.warning(f"{self.name} unreachable; retrying until it answers",
                        error=f"{type(exc).__name__}: {exc}")

    def answered(self) -> None:
        if self.down_since is not None:
            log.warning(f"{self.name} reachable again", down_s=round(time.time() - self.down_since, 1),
                        failed_calls=self.failures)
            self.down_since = None
            self.back_at = time.monotonic()
            self.failures = 0
            metrics.DEPENDENCY_UP.labels(dependency=self.name).set(1)


def patient(method: Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]]
            ) -> Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]]:
    """On a patient store, retry ``method`` with back-off while Redis is unreachable."""

    async def wrapper(self: RedisStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.patiently(method, self, *args, **kwargs)

    functools.update_wrapper(wrapper, method)
    return wrapper


#: connections per client (a command waits for a free one): a burst of simultaneous requests would
#: otherwise open one per command in flight, and a new connection costs more than the command
#: (bench/engine_latency.py: 45 new connections took 60 of the 250 ms of a 50-request burst)
POOL_SIZE = 32
#: the library's version, read once: redis-py reads its package metadata for every new connection
_DRIVER = DriverInfo(lib_version=redis.__version__)


def connect(url: str, *, decode_responses: bool) -> aioredis.Redis:
    """A Redis client on a bounded pool of at most POOL_SIZE connections."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=10.0, decode_responses=decode_responses, socket_timeout=10.0,
        socket_connect_timeout=5.0, driver_info=_DRIVER)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


class Guarded(NamedTuple):
    """What a guarded write found: ``written``; else ``stopped``, the reason a flag forbids it (the
    kill switch, a cancel), or neither: fenced (the run has another owner or epoch now)."""

    written: bool
    stopped: str | None = None


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
    #: when the fault started to act (the INJECTED event's time), 0 until it is applied
    injected_at: float = 0.0
    scenario_name: str = ""

    def to_redis(self) -> dict[str, str]:
        data = _shallow(self)  # the recipe is written as JSON, not copied
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
            injected=raw.get("injected") == "1", injected_at=float(raw.get("injected_at") or 0.0),
            scenario_name=raw.get("scenario_name", ""),
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
    epoch: int = 1
    #: "" until the final result is stored, "publishing" until Kafka has it, then "published"
    result_state: str = ""


class Store(Protocol):
    """What the engine keeps and reads: claims, runs, results, leases, trails, owners and the kill
    switch, each write that needs it fenced by owner and epoch (see the module's docstring)."""

    #: the store's reachability (a patient store rides out an outage; calls wait meanwhile)
    outage: Outage
    #: run when the store answers again after an outage, before any waiting call returns
    on_return: Callable[[], Awaitable[None]] | None

    async def patiently(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T: ...
    async def returned(self) -> None: ...
    async def steady_for(self) -> float: ...
    async def aclose(self) -> None: ...

    # requests and executions
    async def claim_request(self, record: ExecutionRecord) -> str | None: ...
    async def claim_unless_halted(self, record: ExecutionRecord) -> tuple[str | None, str | None]: ...
    async def claimed_request(self, request_id: str) -> str | None: ...
    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...
    async def list_executions(self, limit: int = 50) -> list[ExecutionRecord]: ...
    async def update_execution(self, execution_id: str, **fields: Any) -> None: ...
    async def fenced_update(self, execution_id: str, owner: str, epoch: int, **fields: Any) -> bool: ...
    async def start_run(self, execution_id: str, owner: str, epoch: int, **fields: Any) -> Guarded: ...
    async def take_over(self, execution_id: str, expected_owner: str, new_owner: str) -> int | None: ...
    async def begin_result(self, execution_id: str, owner: str, epoch: int, payload: bytes,
                           **fields: Any) -> bool: ...
    async def result_published(self, execution_id: str) -> None: ...
    async def get_result(self, execution_id: str) -> bytes | None: ...
    async def get_results(self, execution_ids: list[str]) -> dict[str, bytes]: ...

    # leases, trails and owners
    async def write_lease(self, lease: Lease) -> None: ...
    async def write_lease_guarded(self, lease: Lease, epoch: int) -> Guarded: ...
    async def mark_injected(self, lease: Lease, epoch: int, injection: bytes = b"") -> bool: ...
    async def release_lease(self, lease: Lease, owner: str, revert: bytes) -> bool: ...
    async def add_to_trail(self, execution_id: str, name: str, value: bytes) -> None: ...
    async def trail(self, execution_id: str) -> dict[str, bytes]: ...
    async def delete_lease(self, correlation_id: str) -> None: ...
    async def delete_lease_if_owned(self, correlation_id: str, owner: str) -> bool: ...
    async def lease_owner(self, correlation_id: str) -> str | None: ...
    async def take_lease(self, lease: Lease, new_owner: str, ttl: float, *, unchanged: bool = True) -> bool: ...
    async def hold_lease(self, correlation_id: str, owner: str, until: float) -> None: ...
    async def leases(self) -> list[Lease]: ...
    async def restore(self, runs: list[ExecutionRecord],
                      leases: list[tuple[Lease, int]]) -> tuple[int, int]: ...
    async def renew_leases(self, owner: str, correlation_ids: list[str], ttl: float) -> None: ...
    async def owner_alive(self, owner: str) -> bool: ...

    # control
    async def halted(self) -> str | None: ...
    async def halt(self, reason: str) -> None: ...
    async def resume(self) -> None: ...
    async def request_cancel(self, execution_id: str, reason: str) -> None: ...


class RedisStore:
    """The ``Store`` in Redis (atomic steps are Lua scripts)."""

    def __init__(self, url: str, prefix: str = "coordinator", *, patient: bool = False) -> None:
        self.redis: aioredis.Redis = connect(url, decode_responses=True)
        self._binary: aioredis.Redis = connect(url, decode_responses=False)
        self.prefix = prefix
        self.patient = patient
        self.outage = Outage("redis")
        #: run when Redis answers again after an outage, before any waiting call returns
        self.on_return: Callable[[], Awaitable[None]] | None = None
        self._returning: asyncio.Future[None] | None = None
        self._renew = self.redis.register_script(self._RENEW_IF_OWNED)
        self._restore_run = self.redis.register_script(self._RESTORE_RUN)
        self._restore_lease = self.redis.register_script(self._RESTORE_LEASE)
        self._claim = self.redis.register_script(self._CLAIM)
        self._fenced_hset = self.redis.register_script(self._FENCED_HSET)
        self._guarded_hset = self.redis.register_script(self._GUARDED_HSET)
        self._begin_result = self._binary.register_script(self._BEGIN_RESULT)
        self._take_over = self.redis.register_script(self._TAKE_OVER)
        self._take_lease = self.redis.register_script(self._TAKE_LEASE)
        self._delete_if_owned = self.redis.register_script(self._DELETE_IF_OWNED)
        self._mark_injected = self.redis.register_script(self._MARK_INJECTED)
        self._release = self.redis.register_script(self._RELEASE)

    # a lease's expiry moves only while its owner still holds it (one reverted or taken meanwhile stays so)
    _RENEW_IF_OWNED = """
    if redis.call('hget', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
    return redis.call('hset', KEYS[1], 'expires_at', ARGV[2])
    """
    # KEYS: request, execution, executions, halted; ARGV: execution id, request ttl, execution ttl,
    # score, '1' to refuse while halted, fields... -> the earlier execution id, {halted reason}, or false
    _CLAIM = """
    local earlier = redis.call('get', KEYS[1])
    if earlier then return earlier end
    if ARGV[5] == '1' then
        local halted = redis.call('get', KEYS[4])
        if halted then return {halted} end
    end
    redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
    redis.call('hset', KEYS[2], unpack(ARGV, 6))
    redis.call('expire', KEYS[2], ARGV[3])
    redis.call('zadd', KEYS[3], ARGV[4], ARGV[1])
    return false
    """
    # KEYS: execution, hash to write; ARGV: owner, epoch, '1' when KEYS[2] must be held by owner, fields...
    _FENCED_HSET = """
    local run = redis.call('hmget', KEYS[1], 'owner', 'epoch')
    if run[1] ~= ARGV[1] or run[2] ~= ARGV[2] then return 0 end
    if ARGV[3] == '1' and redis.call('hget', KEYS[2], 'owner') ~= ARGV[1] then return -1 end
    if #ARGV > 3 then redis.call('hset', KEYS[2], unpack(ARGV, 4)) end
    return 1
    """
    # KEYS: execution, hash to write, flag; ARGV: owner, epoch, fields... -> 0 fenced, the flag's value
    # when it is set (nothing written), 1 written
    _GUARDED_HSET = """
    local run = redis.call('hmget', KEYS[1], 'owner', 'epoch')
    if run[1] ~= ARGV[1] or run[2] ~= ARGV[2] then return 0 end
    local flag = redis.call('get', KEYS[3])
    if flag then return flag end
    redis.call('hset', KEYS[2], unpack(ARGV, 3))
    return 1
    """
    # KEYS: execution, result; ARGV: owner, epoch, ttl, result bytes, fields...
    _BEGIN_RESULT = """
    local run = redis.call('hmget', KEYS[1], 'owner', 'epoch', 'result_state')
    if run[1] ~= ARGV[1] or run[2] ~= ARGV[2] then return 0 end
    if run[3] == 'published' then return -1 end
    redis.call('set', KEYS[2], ARGV[4], 'EX', ARGV[3])
    redis.call('hset', KEYS[1], 'result_state', 'publishing', unpack(ARGV, 5))
    return 1
    """
    # KEYS: execution; ARGV: expected owner, new owner -> the new epoch, or false
    _TAKE_OVER = """
    local owner = redis.call('hget', KEYS[1], 'owner')
    if owner == ARGV[2] then return redis.call('hget', KEYS[1], 'epoch') end
    if owner ~= ARGV[1] then return false end
    redis.call('hset', KEYS[1], 'owner', ARGV[2])
    return tostring(redis.call('hincrby', KEYS[1], 'epoch', 1))
    """
    # KEYS: lease; ARGV: expected owner, new owner, new expires_at, expires_at as read ('' = any)
    _TAKE_LEASE = """
    local lease = redis.call('hmget', KEYS[1], 'owner', 'expires_at')
    if lease[1] ~= ARGV[1] then return 0 end
    if ARGV[4] ~= '' and lease[2] ~= ARGV[4] then return 0 end
    redis.call('hset', KEYS[1], 'owner', ARGV[2], 'expires_at', ARGV[3])
    return 1
    """
    # KEYS: execution, lease, trail; ARGV: owner, epoch, injected_at, trail field, injection, ttl
    _MARK_INJECTED = """
    local run = redis.call('hmget', KEYS[1], 'owner', 'epoch')
    if run[1] ~= ARGV[1] or run[2] ~= ARGV[2] then return 0 end
    if redis.call('hget', KEYS[2], 'owner') ~= ARGV[1] then return -1 end
    redis.call('hset', KEYS[2], 'injected', '1', 'injected_at', ARGV[3])
    redis.call('hset', KEYS[3], ARGV[4], ARGV[5])
    redis.call('expire', KEYS[3], ARGV[6])
    return 1
    """
    # KEYS: lease, trail; ARGV: owner, trail field, revert, ttl
    _RELEASE = """
    if redis.call('hget', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
    redis.call('del', KEYS[1])
    redis.call('hset', KEYS[2], ARGV[2], ARGV[3])
    redis.call('expire', KEYS[2], ARGV[4])
    return 1
    """
    # KEYS: execution, request, executions; ARGV: execution id, request ttl, execution ttl, score, fields...
    # -> 1 when the record was missing (Redis lost it) and is written again
    _RESTORE_RUN = """
    if redis.call('exists', KEYS[1]) == 1 then return 0 end
    redis.call('hset', KEYS[1], unpack(ARGV, 5))
    redis.call('expire', KEYS[1], ARGV[3])
    redis.call('set', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2])
    redis.call('zadd', KEYS[3], ARGV[4], ARGV[1])
    return 1
    """
    # KEYS: execution, lease; ARGV: owner, epoch, fields... -> 1 when the lease was missing while its run
    # is still the owner's at that epoch (Redis lost it; a lease taken or reverted by another agent
    # went with its run's epoch, and is not written again)
    _RESTORE_LEASE = """
    if redis.call('exists', KEYS[2]) == 1 then return 0 end
    local run = redis.call('hmget', KEYS[1], 'owner', 'epoch')
    if run[1] ~= ARGV[1] or run[2] ~= ARGV[2] then return 0 end
    redis.call('hset', KEYS[2], unpack(ARGV, 3))
    return 1
    """
    _DELETE_IF_OWNED = """
    if redis.call('hget', KEYS[1], 'owner') == ARGV[1] then return redis.call('del', KEYS[1]) end
    return 0
    """

    def key(self, *parts: str) -> str:
        return redis_key(self.prefix, *parts)

    async def patiently(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args)``, retried with back-off while Redis is unreachable when this store is patient."""
        delay = 0.2
        while True:
            try:
                result = await fn(*args, **kwargs)
            except TRANSIENT as exc:
                if not self.patient:
                    raise
                self.outage.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            await self.returned()
            return result

    async def returned(self) -> None:
        """A call was answered: after an outage, ``on_return`` runs first (once, however many calls
        were waiting; retried until it succeeds), then the outage is over."""
        if not self.outage.down:
            return
        if self.on_return is not None:
            if self._returning is None or self._returning.done():
                self._returning = asyncio.ensure_future(self._after_outage(self.on_return))
            await asyncio.shield(self._returning)
        self.outage.answered()

    async def _after_outage(self, hook: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while True:
            try:
                await hook()
                return
            except TRANSIENT as exc:
                self.outage.failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    @patient
    async def steady_for(self) -> float:
        """How long Redis has answered without a break, as far as this store can tell: the shorter of
        its uptime and the time since this store last saw it come back from an outage."""
        info = await answer(self.redis.info("server"))
        uptime = float(info.get("uptime_in_seconds", 0))
        back_at = self.outage.back_at
        return uptime if back_at is None else min(uptime, time.monotonic() - back_at)

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self._binary.aclose()

    # -- requests and executions -------------------------------------------------------------------
    async def claim_request(self, record: ExecutionRecord) -> str | None:
        """Claim ``record.request_id`` and write ``record`` in one step (``epoch`` 1).

        Returns None when claimed now (or by this very record, when a retry follows a lost reply),
        else the execution id that claimed the request earlier.
        """
        earlier, _ = await self._claim_request(record, False)
        return earlier

    async def claim_unless_halted(self, record: ExecutionRecord) -> tuple[str | None, str | None]:
        """``claim_request``, and in the same step the kill switch: ``(earlier, halted reason)``;
        nothing is claimed while the agent is halted (a duplicate is still told as one)."""
        return await self._claim_request(record, True)

    @patient
    async def _claim_request(self, record: ExecutionRecord, unless_halted: bool) -> tuple[str | None, str | None]:
        record.epoch = record.epoch or 1
        earlier = await self._claim(
            keys=[self.key("request", record.request_id), self.key("execution", record.execution_id),
                  self.key("executions"), self.key("halted")],
            args=[record.execution_id, REQUEST_TTL_S, EXECUTION_TTL_S, record.started_at or time.time(),
                  "1" if unless_halted else "0", *_flat(_fields(record))])
        if isinstance(earlier, list):
            return None, str(earlier[0])
        return (None if earlier in (None, record.execution_id) else str(earlier)), None

    async def claimed_request(self, request_id: str) -> str | None:
        """The execution id a request was claimed for, or None when no agent has taken it yet."""
        return await self.redis.get(self.key("request", request_id))  # type: ignore[no-any-return]

    async def update_execution(self, execution_id: str, **fields: Any) -> None:
        await answer(self.redis.hset(self.key("execution", execution_id),
                                     mapping={k: str(v) for k, v in fields.items()}))

    # ``self, /``: with ``**fields`` after it, a ``self`` that could be passed by name cannot be typed
    # through ``patient`` (mypy)
    @patient
    async def fenced_update(self, /, execution_id: str, owner: str, epoch: int, **fields: Any) -> bool:
        """Write ``fields`` to the execution record only while ``owner`` at ``epoch`` still runs it;
        with no fields, only tell whether it does."""
        key = self.key("execution", execution_id)
        done = await self._fenced_hset(keys=[key, key], args=[owner, epoch, "0", *_flat(fields)])
        return bool(done == 1)

    @patient
    async def start_run(self, /, execution_id: str, owner: str, epoch: int, **fields: Any) -> Guarded:
        """Write ``fields`` (a run's start) while ``owner`` at ``epoch`` still runs it and no cancel
        is pending, in one step: ``stopped`` is the cancel's reason."""
        key = self.key("execution", execution_id)
        return await self._guarded(key, owner, epoch, key, self.key("cancel", execution_id), fields)

    @patient
    async def _guarded(self, execution_key: str, owner: str, epoch: int, key: str, flag: str,
                       fields: dict[str, Any]) -> Guarded:
        done = await self._guarded_hset(keys=[execution_key, key, flag], args=[owner, epoch, *_flat(fields)])
        if isinstance(done, str):
            return Guarded(False, done)
        return Guarded(done == 1)

    @patient
    async def take_over(self, execution_id: str, expected_owner: str, new_owner: str) -> int | None:
        """Make ``new_owner`` the owner of a run held by ``expected_owner``; the new epoch, or None
        when someone else holds it now."""
        epoch = await self._take_over(keys=[self.key("execution", execution_id)], args=[expected_owner, new_owner])
        return int(epoch) if epoch is not None else None

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return _record(await answer(self.redis.hgetall(self.key("execution", execution_id))))

    async def list_executions(self, limit: int = 50) -> list[ExecutionRecord]:
        """The newest ``limit`` executions, read in one round trip."""
        ids = await self.redis.zrevrange(self.key("executions"), 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for execution_id in ids:
                pipe.hgetall(self.key("execution", execution_id))
            raws = await pipe.execute()
        return [r for r in (_record(raw) for raw in raws) if r is not None]

    async def get_result(self, execution_id: str) -> bytes | None:
        return await self._binary.get(self.key("result", execution_id))  # type: ignore[no-any-return]

    async def get_results(self, execution_ids: list[str]) -> dict[str, bytes]:
        """The stored results of those executions that have one, read in one round trip."""
        async with self._binary.pipeline(transaction=False) as pipe:
            for execution_id in execution_ids:
                pipe.get(self.key("result", execution_id))
            raws = await pipe.execute()
        return {e: r for e, r in zip(execution_ids, raws, strict=True) if r}

    @patient
    async def begin_result(self, /, execution_id: str, owner: str, epoch: int, payload: bytes, **fields: Any) -> bool:
        """Store the final result and ``fields`` (status, times) and mark it ``publishing``, while
        ``owner`` at ``epoch`` runs the execution and no result was published yet. False otherwise:
        the caller must not publish. After publishing, ``result_published``."""
        done = await self._begin_result(
            keys=[self.key("execution", execution_id), self.key("result", execution_id)],
            args=[owner, epoch, EXECUTION_TTL_S, payload, *_flat(fields)])
        return bool(done == 1)

    @patient
    async def result_published(self, execution_id: str) -> None:
        await answer(self.redis.hset(self.key("execution", execution_id), "result_state", "published"))

    # -- leases and owners -------------------------------------------------------------------------
    async def write_lease(self, lease: Lease) -> None:
        await answer(self.redis.hset(self.key("lease", lease.correlation_id), mapping=lease.to_redis()))

    async def write_lease_guarded(self, lease: Lease, epoch: int) -> Guarded:
        """Write ``lease`` only while its owner still runs its execution at ``epoch`` and the agent
        is not halted (``stopped``: the halt's reason), in one step."""
        return await self._guarded(self.key("execution", lease.execution_id), lease.owner, epoch,
                                   self.key("lease", lease.correlation_id), self.key("halted"), lease.to_redis())

    @patient
    async def mark_injected(self, lease: Lease, epoch: int, injection: bytes = b"") -> bool:
        """Record that the fault is applied, on its lease and (``injection``) in its run's trail; False
        when the run or the lease changed hands meanwhile."""
        done = await self._mark_injected(
            keys=[self.key("execution", lease.execution_id), self.key("lease", lease.correlation_id),
                  self.key("trail", lease.execution_id)],
            args=[lease.owner, epoch, repr(lease.injected_at), INJECTION + lease.correlation_id, injection,
                  EXECUTION_TTL_S])
        return bool(done == 1)

    @patient
    async def release_lease(self, lease: Lease, owner: str, revert: bytes) -> bool:
        """A reverted fault: delete its lease while ``owner`` holds it and, in the same step, note
        ``revert`` in its run's trail. False when the lease is not ``owner``'s (nothing written)."""
        done = await self._release(
            keys=[self.key("lease", lease.correlation_id), self.key("trail", lease.execution_id)],
            args=[owner, REVERT + lease.correlation_id, revert, EXECUTION_TTL_S])
        return bool(done)

    @patient
    async def add_to_trail(self, execution_id: str, name: str, value: bytes) -> None:
        """Note ``value`` under ``name`` in a run's trail (a journal entry, a verdict, a failed revert)."""
        key = self.key("trail", execution_id)
        async with self._binary.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={name: value})
            pipe.expire(key, EXECUTION_TTL_S)
            await pipe.execute()

    @patient
    async def trail(self, execution_id: str) -> dict[str, bytes]:
        """Everything a run noted in its trail, by field name."""
        raw = await answer(self._binary.hgetall(self.key("trail", execution_id)))
        return {k.decode(): v for k, v in raw.items()}

    async def delete_lease(self, correlation_id: str) -> None:
        await self.redis.delete(self.key("lease", correlation_id))

    @patient
    async def delete_lease_if_owned(self, correlation_id: str, owner: str) -> bool:
        return bool(await self._delete_if_owned(keys=[self.key("lease", correlation_id)], args=[owner]))

    @patient
    async def lease_owner(self, correlation_id: str) -> str | None:
        owner: str | None = await answer(self.redis.hget(self.key("lease", correlation_id), "owner"))
        return owner

    @patient
    async def take_lease(self, lease: Lease, new_owner: str, ttl: float, *, unchanged: bool = True) -> bool:
        """Move a lease to ``new_owner`` before reverting it: a compare-and-set on its owner and, with
        ``unchanged``, on the ``expires_at`` read (a lease its owner renewed meanwhile is not orphaned)."""
        done = await self._take_lease(keys=[self.key("lease", lease.correlation_id)],
                                      args=[lease.owner, new_owner, repr(time.time() + ttl),
                                            repr(lease.expires_at) if unchanged else ""])
        return bool(done)

    @patient
    async def hold_lease(self, correlation_id: str, owner: str, until: float) -> None:
        """Keep a held lease out of every reconciler's hands until ``until`` (retry back-off)."""
        await self._renew(keys=[self.key("lease", correlation_id)], args=[owner, repr(until)])

    @patient
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

    async def restore(self, runs: list[ExecutionRecord], leases: list[tuple[Lease, int]]) -> tuple[int, int]:
        """After an outage in which Redis may have lost writes (a crash loses up to a second of the
        append-only file): write again the records of ``runs`` and the ``leases`` (with their run's
        epoch) that are missing, when they are still the owner's. How many of each were written."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in runs:
                await self._restore_run(
                    keys=[self.key("execution", record.execution_id), self.key("request", record.request_id),
                          self.key("executions")],
                    args=[record.execution_id, REQUEST_TTL_S, EXECUTION_TTL_S, record.started_at or time.time(),
                          *_flat(_fields(record))], client=pipe)
            for lease, epoch in leases:
                await self._restore_lease(
                    keys=[self.key("execution", lease.execution_id), self.key("lease", lease.correlation_id)],
                    args=[lease.owner, epoch, *_flat(lease.to_redis())], client=pipe)
            done = await pipe.execute()
        return sum(done[:len(runs)]), sum(done[len(runs):])

    async def renew_leases(self, owner: str, correlation_ids: list[str], ttl: float) -> None:
        expires = repr(time.time() + ttl)
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in correlation_ids:
                # only a lease still held: one reverted or taken meanwhile (halt, another agent) stays so
                await self._renew(keys=[self.key("lease", cid)], args=[owner, expires], client=pipe)
            pipe.set(self.key("owner", owner), str(time.time()), ex=max(1, int(ttl)))
            await pipe.execute()

    @patient
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
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        async for key in self.redis.scan_iter(match=pattern, count=200):
            yield key


def _shallow(record: Any) -> dict[str, Any]:
    """A dataclass's fields by name, uncopied (``asdict`` deep-copies every value)."""
    return {f.name: getattr(record, f.name) for f in dataclass_fields(record)}


def _fields(record: ExecutionRecord) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in _shallow(record).items()}


def _flat(fields: dict[str, Any]) -> list[str]:
    return [str(item) for pair in fields.items() for item in pair]


def _record(raw: dict[str, str]) -> ExecutionRecord | None:
    if not raw:
        return None
    return ExecutionRecord(
        execution_id=raw["execution_id"], request_id=raw.get("request_id", ""),
        scenario_name=raw.get("scenario_name", ""), status=raw.get("status", ""), owner=raw.get("owner", ""),
        requester=raw.get("requester", ""), started_at=float(raw.get("started_at") or 0),
        ended_at=float(raw.get("ended_at") or 0), reason=raw.get("reason", ""),
        labels=json.loads(raw.get("labels") or "{}"), epoch=int(raw.get("epoch") or 1),
        result_state=raw.get("result_state", ""),
    )


def _conforms(store: RedisStore) -> Store:
    return store  # mypy checks here that RedisStore is a Store
