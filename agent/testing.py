"""In-memory stand-ins for the agent's own interfaces, so that ``Execution`` and ``FaultManager``
can be exercised without Kafka, Redis or a backend (in the spirit of httpx's ``MockTransport``).

- ``MemoryStore``: an ``agent.store.Store`` in dicts, with the same atomic semantics as the Redis
  store (claims with their record, owner/epoch fencing, lease compare-and-set, what is restored
  after an outage): tests/integration/test_store_contract.py runs one suite against both.
- ``MemoryPublisher``: keeps every chaos event, progress message, result and dead letter in lists.
- ``MemoryDriver``: a fault driver whose faults are entries in a set, with hooks to fail or to run
  code at the moment a fault goes in.

These fake *our* interfaces; they are not Kafka or Redis. Integration tests use the real stack.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any, ParamSpec, TypeVar

from agent._proto.coordinator.v1 import events_pb2
from agent.drivers.base import FaultDriver, FaultRequest
from agent.errors import ActionError, RevertError
from agent.store import INJECTION, REVERT, ExecutionRecord, Guarded, Lease, Outage, Store

P = ParamSpec("P")
T = TypeVar("T")


class MemoryStore:
    def __init__(self) -> None:
        self.requests: dict[str, str] = {}
        self.executions: dict[str, ExecutionRecord] = {}
        self.results: dict[str, bytes] = {}
        self.lease_table: dict[str, Lease] = {}
        self.trails: dict[str, dict[str, bytes]] = {}
        self.owners: dict[str, float] = {}  # owner -> heartbeat expiry
        self.halted_reason: str | None = None
        self.cancels: dict[str, str] = {}
        #: control messages sent (what every agent would hear on pub/sub)
        self.control: list[dict[str, Any]] = []
        self.outage = Outage("redis")
        self.on_return: Callable[[], Awaitable[None]] | None = None
        self.patient = True
        self.steady = float("inf")

    async def patiently(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        return await fn(*args, **kwargs)

    async def returned(self) -> None:
        if self.outage.down and self.on_return is not None:
            await self.on_return()
        self.outage.answered()

    async def steady_for(self) -> float:
        """How long the store has answered without a break (settable: ``steady``)."""
        return self.steady

    async def aclose(self) -> None:
        pass

    # -- requests and executions
    async def claim_request(self, record: ExecutionRecord) -> str | None:
        earlier = self.requests.get(record.request_id)
        if earlier is not None:
            return None if earlier == record.execution_id else earlier
        record.epoch = record.epoch or 1
        self.requests[record.request_id] = record.execution_id
        self.executions[record.execution_id] = replace(record)
        return None

    async def claim_unless_halted(self, record: ExecutionRecord) -> tuple[str | None, str | None]:
        earlier = self.requests.get(record.request_id)
        if earlier is None and self.halted_reason:
            return None, self.halted_reason
        return await self.claim_request(record), None

    async def claimed_request(self, request_id: str) -> str | None:
        return self.requests.get(request_id)

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        found = self.executions.get(execution_id)
        return replace(found) if found else None

    async def list_executions(self, limit: int = 50) -> list[ExecutionRecord]:
        newest = sorted(self.executions.values(), key=lambda r: r.started_at, reverse=True)[:limit]
        return [replace(r) for r in newest]

    async def update_execution(self, execution_id: str, **fields: Any) -> None:
        record = self.executions[execution_id]
        self.executions[execution_id] = replace(record, **_typed(record, fields))

    async def fenced_update(self, execution_id: str, owner: str, epoch: int, **fields: Any) -> bool:
        if not self._holds(execution_id, owner, epoch):
            return False
        if fields:
            await self.update_execution(execution_id, **fields)
        return True

    async def start_run(self, execution_id: str, owner: str, epoch: int, **fields: Any) -> Guarded:
        if not self._holds(execution_id, owner, epoch):
            return Guarded(False)
        if execution_id in self.cancels:
            return Guarded(False, self.cancels[execution_id])
        await self.update_execution(execution_id, **fields)
        return Guarded(True)

    async def take_over(self, execution_id: str, expected_owner: str, new_owner: str) -> int | None:
        record = self.executions.get(execution_id)
        if record is None:
            return None
        if record.owner == new_owner:
            return record.epoch
        if record.owner != expected_owner:
            return None
        self.executions[execution_id] = replace(record, owner=new_owner, epoch=record.epoch + 1)
        return record.epoch + 1

    async def begin_result(self, execution_id: str, owner: str, epoch: int, payload: bytes, **fields: Any) -> bool:
        if not self._holds(execution_id, owner, epoch) or self.executions[execution_id].result_state == "published":
            return False
        self.results[execution_id] = payload
        await self.update_execution(execution_id, result_state="publishing", **fields)
        return True

    async def result_published(self, execution_id: str) -> None:
        await self.update_execution(execution_id, result_state="published")

    async def get_result(self, execution_id: str) -> bytes | None:
        return self.results.get(execution_id)

    # -- leases and owners
    async def write_lease(self, lease: Lease) -> None:
        self.lease_table[lease.correlation_id] = replace(lease)

    async def write_lease_guarded(self, lease: Lease, epoch: int) -> Guarded:
        if not self._holds(lease.execution_id, lease.owner, epoch):
            return Guarded(False)
        if self.halted_reason:
            return Guarded(False, self.halted_reason)
        await self.write_lease(lease)
        return Guarded(True)

    async def mark_injected(self, lease: Lease, epoch: int, injection: bytes = b"") -> bool:
        held = self.lease_table.get(lease.correlation_id)
        if not self._holds(lease.execution_id, lease.owner, epoch) or held is None or held.owner != lease.owner:
            return False
        held.injected, held.injected_at = True, lease.injected_at
        await self.add_to_trail(lease.execution_id, INJECTION + lease.correlation_id, injection)
        return True

    async def release_lease(self, lease: Lease, owner: str, revert: bytes) -> bool:
        if not await self.delete_lease_if_owned(lease.correlation_id, owner):
            return False
        await self.add_to_trail(lease.execution_id, REVERT + lease.correlation_id, revert)
        return True

    async def add_to_trail(self, execution_id: str, name: str, value: bytes) -> None:
        self.trails.setdefault(execution_id, {})[name] = value

    async def trail(self, execution_id: str) -> dict[str, bytes]:
        return dict(self.trails.get(execution_id, {}))

    async def delete_lease(self, correlation_id: str) -> None:
        self.lease_table.pop(correlation_id, None)

    async def delete_lease_if_owned(self, correlation_id: str, owner: str) -> bool:
        held = self.lease_table.get(correlation_id)
        if held is None or held.owner != owner:
            return False
        del self.lease_table[correlation_id]
        return True

    async def lease_owner(self, correlation_id: str) -> str | None:
        held = self.lease_table.get(correlation_id)
        return held.owner if held else None

    async def take_lease(self, lease: Lease, new_owner: str, ttl: float, *, unchanged: bool = True) -> bool:
        held = self.lease_table.get(lease.correlation_id)
        if held is None or held.owner != lease.owner or (unchanged and held.expires_at != lease.expires_at):
            return False
        held.owner, held.expires_at = new_owner, time.time() + ttl
        return True

    async def hold_lease(self, correlation_id: str, owner: str, until: float) -> None:
        held = self.lease_table.get(correlation_id)
        if held is not None and held.owner == owner:
            held.expires_at = until

    async def leases(self) -> list[Lease]:
        return [replace(lease) for lease in self.lease_table.values()]

    async def restore(self, runs: list[ExecutionRecord], leases: list[tuple[Lease, int]]) -> tuple[int, int]:
        runs_back = leases_back = 0
        for record in runs:
            if record.execution_id not in self.executions:
                self.executions[record.execution_id] = replace(record)
                self.requests.setdefault(record.request_id, record.execution_id)
                runs_back += 1
        for lease, epoch in leases:
            if lease.correlation_id not in self.lease_table and self._holds(lease.execution_id, lease.owner, epoch):
                self.lease_table[lease.correlation_id] = replace(lease)
                leases_back += 1
        return runs_back, leases_back

    async def renew_leases(self, owner: str, correlation_ids: list[str], ttl: float) -> None:
        for cid in correlation_ids:
            await self.hold_lease(cid, owner, time.time() + ttl)
        self.owners[owner] = time.time() + ttl

    async def owner_alive(self, owner: str) -> bool:
        return self.owners.get(owner, 0.0) > time.time()

    # -- control
    async def halted(self) -> str | None:
        return self.halted_reason

    async def halt(self, reason: str) -> None:
        self.halted_reason = reason
        self.control.append({"action": "halt", "reason": reason})

    async def resume(self) -> None:
        self.halted_reason = None

    async def request_cancel(self, execution_id: str, reason: str) -> None:
        self.cancels[execution_id] = reason
        self.control.append({"action": "cancel", "execution_id": execution_id, "reason": reason})

    async def get_results(self, execution_ids: list[str]) -> dict[str, bytes]:
        return {e: self.results[e] for e in execution_ids if e in self.results}

    def _holds(self, execution_id: str, owner: str, epoch: int) -> bool:
        record = self.executions.get(execution_id)
        return record is not None and record.owner == owner and record.epoch == int(epoch)


def _conforms(store: MemoryStore) -> Store:
    return store  # mypy checks here that MemoryStore is a Store


def _typed(record: ExecutionRecord, fields: dict[str, Any]) -> dict[str, Any]:
    """Redis keeps strings; the record's own types are kept here, as ``_record`` would read them back."""
    types = {k: type(v) for k, v in asdict(record).items()}
    return {k: types[k](v) if k in types and types[k] in (int, float, str) else v for k, v in fields.items()}


class MemoryPublisher:
    """Everything the engine would publish, kept in order."""

    def __init__(self) -> None:
        self.chaos_events: list[events_pb2.ChaosEvent] = []
        self.progress_events: list[events_pb2.ExecutionProgress] = []
        self.results: list[events_pb2.ScenarioResult] = []
        self.dead_letters: list[tuple[Any, str, str]] = []
        self.requests: list[events_pb2.ScenarioRequest] = []
        self.audit_events: list[tuple[events_pb2.AuditEvent, str]] = []

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def request(self, request: events_pb2.ScenarioRequest) -> None:
        self.requests.append(request)

    async def chaos(self, event: events_pb2.ChaosEvent) -> None:
        self.chaos_events.append(event)

    async def audit(self, event: events_pb2.AuditEvent, *, source: str) -> None:
        self.audit_events.append((event, source))

    async def progress(self, progress: events_pb2.ExecutionProgress) -> None:
        self.progress_events.append(progress)

    async def result(self, result: events_pb2.ScenarioResult) -> None:
        self.results.append(result)

    async def dead_letter(self, record: Any, reason: str, error: str) -> bool:
        self.dead_letters.append((record, reason, error))
        return True


class MemoryDriver(FaultDriver):
    """Faults as entries in ``applied``; ``fail_inject`` / ``fail_revert`` make the next calls fail,
    and ``on_inject`` runs (awaited) at the moment a fault goes in."""

    name = "memory"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.applied: set[str] = set()
        self.log: list[tuple[str, str]] = []
        self.fail_inject = 0
        self.fail_revert = 0
        self.on_inject: Callable[[FaultRequest], Awaitable[None]] | None = None

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        return {"action": "remove", "fault": request.correlation_id}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        if self.fail_inject:
            self.fail_inject -= 1
            raise ActionError(f"memory driver refused {request.fault}")
        if self.on_inject is not None:
            await self.on_inject(request)
        self.applied.add(request.correlation_id)
        self.log.append(("inject", request.correlation_id))
        return {"applied": request.correlation_id}

    async def revert(self, recipe: dict[str, Any]) -> None:
        if self.fail_revert:
            self.fail_revert -= 1
            raise RevertError("memory driver refused the revert")
        self.applied.discard(recipe["fault"])
        self.log.append(("revert", recipe["fault"]))

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        self.log.append(("rollback", action))
