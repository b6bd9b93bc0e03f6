"""Injections: a lease before every fault, a correlation id on every injection, reverts that always
happen, and reconciliation of faults whose owner is gone.

An injection goes: new UUID4 correlation id -> lease written to Redis (with the driver's revert
recipe), fenced by the execution's owner and epoch and refused while halted, in one round trip ->
fault applied -> lease marked injected, fenced again -> chaos event INJECTED. An agent that finds
itself fenced out after applying the fault (it was paused and another agent took the run over) takes
the fault back at once and publishes nothing. A revert goes: is the lease still ours -> driver
revert from the recipe (retried with backoff; any exception from the driver counts as a failed
attempt) -> lease deleted -> chaos event REVERTED; when every attempt fails, REVERT_FAILED is
published and the lease is left to expire so that a reconciler retries it, with back-off, for as
long as it takes.

Each agent process has an ``owner`` id (instance id plus a per-process suffix) and heartbeats its
leases. The reconciler, in every agent, takes over (compare-and-set on the owner) and reverts leases
whose ``expires_at`` has passed or whose owner's heartbeat is gone: a crashed agent's faults are
cleaned up by whoever finds them, exactly once. A lease that cannot be reverted never stops an agent
from serving: it is listed by ``stuck`` (readiness details, a metric, the log) and retried.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from pydantic import BaseModel

from agent import drivers, failpoints, metrics, tracing
from agent._proto.coordinator.v1 import events_pb2
from agent.drivers import DriverRegistry, FaultRequest
from agent.drivers.base import ARRIVED, ENDED_INSTANCE, TOUCHED, FaultDriver
from agent.engine import trail
from agent.engine.publisher import Publisher
from agent.errors import ActionError, FencedOut, TargetRefused
from agent.expectations import KINDS
from agent.logs import get_logger
from agent.policy import PolicySource
from agent.scenario.models import Expectation, FaultStep, RollbackAction, Scenario
from agent.settings import Settings
from agent.store import TRANSIENT, Lease, Store
from agent.vocabulary import ATTRIBUTIONS, EXPECTATION_KINDS

log = get_logger("agent.faults")

REVERT_ATTEMPTS = 4
#: longest pause between two reconciliation attempts on a lease whose revert keeps failing
MAX_RETRY_BACKOFF_S = 300.0
#: the heartbeat retries this often while Redis is away: it must be among the first calls back
HEARTBEAT_RETRY_S = 0.25


@dataclass
class ActiveFault:
    lease: Lease
    injected_at: float
    event: events_pb2.ChaosEvent
    #: the fault as its run's result lists it (also in the run's trail in the store)
    injection: events_pb2.Injection
    reverted_at: float = 0.0
    error: str = ""
    #: what the revert saw arrive under the fault's selector while it was active
    arrived: list[str] = field(default_factory=list)
    #: another agent took the lease (and the revert) over: this one reports nothing about it
    taken_over: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def held(self) -> bool:
        """Applied and not being reverted: its lease must exist (one being reverted may be gone)."""
        return self.reverted_at == 0.0 and not self.done.is_set()


@dataclass
class StuckLease:
    """A lease whose revert failed: when to try again, and why it failed last time."""

    lease: Lease
    error: str
    attempts: int
    retry_at: float


def expectation_message(expectation: Expectation) -> events_pb2.Expectation:
    message = events_pb2.Expectation(
        name=expectation.name, event_type=expectation.event.type or "", service=expectation.event.service or "",
        match=expectation.event.match, only_after=expectation.only_after or "")
    message.kind_name = expectation.kind
    message.attribution = ATTRIBUTIONS[expectation.attribution]  # type: ignore[assignment]
    if expectation.kind in EXPECTATION_KINDS:
        message.kind = EXPECTATION_KINDS[expectation.kind]  # type: ignore[assignment]
    else:  # a kind a module added: its rule travels as the scenario wrote it
        message.rule.update(expectation.rule.model_dump(mode="json", by_alias=True, exclude={"within"},
                                                        exclude_none=True))
    KINDS[expectation.kind].to_message(expectation.rule, message)
    return message


def driver_parameters(driver: str, step: FaultStep) -> BaseModel:
    """A step's parameters in its target driver's own model (a fault several drivers share is
    validated against all their parameters: each driver gets only its own, with its defaults)."""
    own = drivers.fault(driver, step.fault)
    if own is None or isinstance(step.parameters, own.parameters):
        return step.parameters
    return own.parameters.model_validate(step.parameters.model_dump(exclude_unset=True))


class FaultManager:
    #: the first pause between two revert attempts (doubling, at most 5 s)
    revert_backoff = 0.5

    def __init__(self, settings: Settings, store: Store, drivers: DriverRegistry, publisher: Publisher,
                 owner: str, policy: PolicySource | None = None) -> None:
        self.settings = settings
        self.policy = policy or PolicySource(settings)
        self.store = store
        self.drivers = drivers
        self.publisher = publisher
        self.owner = owner
        self.active: dict[str, ActiveFault] = {}
        #: leases written whose fault is going in: heartbeated like the active ones (a restart can take
        #: longer than a lease's TTL on a busy machine, and its lease must not look orphaned meanwhile)
        self.injecting: set[str] = set()
        self.stuck: dict[str, StuckLease] = {}
        self._waiting_for_steady = False

    async def inject(self, execution_id: str, scenario: Scenario, step: FaultStep, epoch: int = 1) -> ActiveFault:
        target = scenario.spec.targets.get(step.target)
        if target is None:
            raise TargetRefused(f"target '{step.target}' is not declared by the scenario")
        service = target.service or step.target
        refused = self.policy.current.refused(service, target.driver, target.selector.model_dump(mode="python"))
        if refused:
            raise TargetRefused(refused)
        correlation_id = str(uuid.uuid4())
        parameters = driver_parameters(target.driver, step)
        request = FaultRequest(
            correlation_id=correlation_id, execution_id=execution_id, fault=step.fault, target_name=step.target,
            service=service, selector=target.selector.model_dump(mode="python"),
            parameters=parameters.model_dump(mode="python"), duration=step.duration,
            traceparent=tracing.traceparent(),
        )
        driver = self.drivers.get(target.driver)
        try:  # what a selector matching several targets picks: the lease and the allow-list see that
            request = await asyncio.wait_for(driver.resolve(request), step.timeout)
        except TimeoutError as exc:
            raise ActionError(f"{step.fault} on '{step.target}' failed: choosing its targets took over "
                              f"{step.timeout}s") from exc
        except ActionError as exc:
            raise ActionError(f"{step.fault} on '{step.target}' failed: {exc}") from exc
        refused = self.policy.current.refused(service, target.driver, request.selector)
        if refused:
            raise TargetRefused(refused)
        now = time.time()
        lease = Lease(
            correlation_id=correlation_id, execution_id=execution_id, driver=target.driver, target=step.target,
            service=service, fault=step.fault, step_name=step.name, recipe=driver.recipe(request),
            owner=self.owner, created_at=now, expires_at=now + self.settings.lease_ttl, scenario_name=scenario.name,
        )
        self.injecting.add(correlation_id)
        try:
            return await self._inject(lease, request, driver, scenario, step, parameters, epoch)
        finally:
            self.injecting.discard(correlation_id)

    async def _inject(self, lease: Lease, request: FaultRequest, driver: FaultDriver, scenario: Scenario,
                      step: FaultStep, parameters: BaseModel, epoch: int) -> ActiveFault:
        correlation_id, execution_id = lease.correlation_id, lease.execution_id
        target = scenario.spec.targets[step.target]
        service = lease.service
        # before anything is touched, in one step: still this agent's run, and the kill switch is off
        written = await self.store.write_lease_guarded(lease, epoch)
        if written.stopped is not None:
            raise TargetRefused(f"the agent is halted ({written.stopped}): no new faults until resumed")
        if not written.written:
            raise FencedOut(f"execution {execution_id} is no longer run by this agent ({self.owner})")
        await failpoints.point("after-lease")
        # the injection's time is when the fault starts to act, not when the driver returns: a restart
        # returns once the new process is up, and its first audit events come before that
        injected_at = time.time()
        try:
            observed = await asyncio.wait_for(driver.inject(request), step.timeout)
        except BaseException as exc:
            metrics.INJECTIONS.labels(fault=step.fault, outcome="failed").inc()
            await self._undo_failed(lease)
            if isinstance(exc, ActionError | TimeoutError):
                detail = str(exc) or f"no answer within {step.timeout}s"
                raise ActionError(f"{step.fault} on '{step.target}' failed: {detail}") from exc
            raise
        await failpoints.point("after-inject")
        lease.injected_at = injected_at  # every event about this injection carries this one time
        touched = [str(t) for t in (observed or {}).get(TOUCHED) or []]
        injection = events_pb2.Injection(correlation_id=correlation_id, step_name=step.name, target=step.target,
                                         fault=step.fault, driver=target.driver,
                                         final_state=events_pb2.CHAOS_EVENT_TYPE_INJECTED, touched=touched)
        injection.injected_at.FromNanoseconds(int(injected_at * 1e9))
        # in the run's trail in the same step: whoever finishes the run lists this fault
        if not await self.store.mark_injected(lease, epoch, injection.SerializeToString()):
            # paused while the fault went in, and the run was taken over meanwhile: take it back now
            log.warning("fenced out while injecting; taking the fault back", correlation_id=correlation_id,
                        execution_id=execution_id, owner=self.owner)
            await self._undo_failed(lease)
            raise FencedOut(f"execution {execution_id} was taken over while its fault went in")
        event = events_pb2.ChaosEvent(
            correlation_id=correlation_id, type=events_pb2.CHAOS_EVENT_TYPE_INJECTED, execution_id=execution_id,
            scenario_name=scenario.name, step_name=step.name, target=step.target, service=service,
            driver=target.driver, fault=step.fault, owner=self.owner,
            expectations=[expectation_message(e) for e in scenario.spec.expectations if e.after == step.name],
        )
        event.parameters.update(parameters.model_dump(mode="json", by_alias=True))
        event.injected_at.FromNanoseconds(int(injected_at * 1e9))
        event.ended_instance = str((observed or {}).get(ENDED_INSTANCE) or "")
        event.touched.extend(touched)
        event.trace_id, event.span_id = tracing.current_ids()
        active = ActiveFault(lease=lease, injected_at=injected_at, event=event, injection=injection)
        self.active[correlation_id] = active
        metrics.INJECTIONS.labels(fault=step.fault, outcome="injected").inc()
        metrics.ACTIVE_FAULTS.set(len(self.active))
        await self.publisher.chaos(event)
        await failpoints.point("after-chaos-event")
        log.info("fault injected", correlation_id=correlation_id, fault=step.fault, target=step.target,
                 execution_id=execution_id, observed=observed)
        return active

    async def rollback(self, scenario: Scenario, action: RollbackAction) -> None:
        """Run a scenario's rollback action under the same rules as a fault: a target the scenario
        declares and the allow-list admits (``TargetRefused`` otherwise), bounded by its timeout. It
        repairs rather than breaks, so the kill switch does not stop it."""
        target = scenario.spec.targets.get(action.target)
        if target is None:
            raise TargetRefused(f"target '{action.target}' is not declared by the scenario")
        selector = target.selector.model_dump(mode="python")
        refused = self.policy.current.refused(target.service or action.target, target.driver, selector)
        if refused:
            raise TargetRefused(refused)
        driver = self.drivers.get(target.driver)
        try:
            await asyncio.wait_for(driver.rollback(action.action, selector), action.timeout)
        except TimeoutError as exc:
            raise ActionError(f"rollback '{action.name}' took over {action.timeout:g}s") from exc

    async def revert(self, correlation_id: str) -> ActiveFault | None:
        """Revert one of this agent's faults; idempotent (a second call waits for the first)."""
        active = self.active.get(correlation_id)
        if active is None:
            return None
        if active.done.is_set() or active.reverted_at < 0:
            await active.done.wait()
            return active
        active.reverted_at = -1  # in progress
        if await self.store.lease_owner(correlation_id) != self.owner:
            # reverted (and reported) by whoever took the lease: halt-all, or a reconciler while we were away
            active.taken_over = True
            found = trail.Trail.parse(await self.store.trail(active.lease.execution_id)).reverted(correlation_id)
            active.reverted_at = found.reverted_at.ToNanoseconds() / 1e9 if found else time.time()
            active.error = found.error if found else ""
            active.arrived = list(found.arrived) if found else []
        else:
            _, active.error, active.arrived = await self._revert_lease(active.lease)
            active.reverted_at = time.time()
        # a failed revert is no longer heartbeated: its lease expires and a reconciler retries it
        self.active.pop(correlation_id, None)
        metrics.ACTIVE_FAULTS.set(len(self.active))
        active.done.set()
        return active

    def of_execution(self, execution_id: str) -> list[str]:
        """The correlation ids of a run's faults applied by this agent and not reverted yet."""
        return [cid for cid, a in self.active.items() if a.lease.execution_id == execution_id]

    async def revert_execution(self, execution_id: str) -> list[ActiveFault]:
        mine = self.of_execution(execution_id)
        results = await asyncio.gather(*(self.revert(cid) for cid in mine))
        return [r for r in results if r is not None]

    async def renew(self) -> None:
        """This agent's heartbeat and every lease it holds, pushed a TTL forward."""
        await self.store.renew_leases(self.owner, [*self.active, *self.injecting], self.settings.lease_ttl)

    async def heartbeat_forever(self) -> None:
        """Renew every TTL/3; while Redis is away, retry every HEARTBEAT_RETRY_S (not with a part's
        back-off) so that the renewal is among the first calls back."""
        interval = max(0.5, self.settings.lease_ttl / 3)
        while True:
            try:
                await self.renew()
            except TRANSIENT as exc:
                self.store.outage.failed(exc)
                await asyncio.sleep(HEARTBEAT_RETRY_S)
                continue
            await self.store.returned()  # after an outage: the store's on_return first
            await asyncio.sleep(interval)

    async def steady(self) -> bool:
        """May a reconciler judge leases and owners now? Only once Redis has answered for a whole
        lease TTL without a break: an outage (or a restart) is nobody's failure to renew."""
        steady_for = await self.store.steady_for()
        waiting = steady_for < self.settings.lease_ttl
        if waiting and not self._waiting_for_steady:
            log.info("reconciliation waits until redis has answered for a lease ttl",
                     answered_for_s=round(steady_for, 1), lease_ttl_s=self.settings.lease_ttl)
        self._waiting_for_steady = waiting
        return not waiting

    async def reconcile(self, *, everything: bool = False) -> int:
        """Revert leases that nobody owns any more (or every lease, for halt-all). Returns how many.
        The caller asks ``steady`` first (halt-all does not).

        A lease whose revert fails is retried on later rounds with back-off; it never makes this
        call fail, so an unrevertable fault cannot stop an agent from starting or serving.
        """
        reverted = 0
        leases = await self.store.leases()
        present = {lease.correlation_id for lease in leases}
        for gone in set(self.stuck) - present:
            self.stuck.pop(gone, None)  # reverted by someone else (or by hand)
        for lease in leases:
            if lease.correlation_id in self.injecting and not everything:
                continue  # going in now: this agent takes it back itself if the injection fails
            if lease.correlation_id in self.active:
                if everything:
                    await self.revert(lease.correlation_id)
                    reverted += 1
                continue
            stuck = self.stuck.get(lease.correlation_id)
            if stuck is not None and stuck.retry_at > time.time() and not everything:
                continue
            orphaned = lease.expires_at < time.time() or not await self.store.owner_alive(lease.owner)
            if not (everything or orphaned):
                continue
            if not await self.store.take_lease(lease, self.owner, self.settings.lease_ttl, unchanged=not everything):
                continue  # another agent took it first, or its owner renewed it since it was read
            log.warning("reverting orphaned fault", correlation_id=lease.correlation_id, fault=lease.fault,
                        target=lease.target, owner=lease.owner, halt=everything)
            lease.owner = self.owner
            ok, error, _ = await self._revert_lease(lease)
            reverted += int(ok)
            if ok:
                self.stuck.pop(lease.correlation_id, None)
            else:
                attempts = (stuck.attempts if stuck else 0) + 1
                backoff = min(MAX_RETRY_BACKOFF_S, self.settings.reconcile_interval * 2**attempts)
                self.stuck[lease.correlation_id] = StuckLease(lease, error, attempts, time.time() + backoff)
                # the back-off holds for every agent: the lease stays ours, untouched, until then
                await self.store.hold_lease(lease.correlation_id, self.owner, time.time() + backoff)
                log.error("a fault could not be reverted; retrying later", correlation_id=lease.correlation_id,
                          fault=lease.fault, target=lease.target, attempts=attempts, retry_in_s=round(backoff, 1),
                          error=error)
        metrics.STUCK_LEASES.set(len(self.stuck))
        return reverted

    async def _revert_lease(self, lease: Lease) -> tuple[bool, str, list[str]]:
        """Revert a lease's fault (retried), note it and publish it: whether it was reverted, why not,
        and what the driver saw arrive under the fault's selector."""
        error = ""
        for attempt in range(REVERT_ATTEMPTS):
            try:
                seen = await asyncio.wait_for(self.drivers.get(lease.driver).revert(lease.recipe), 60)
            except Exception as exc:  # noqa: BLE001 - whatever a driver raises, the lease stays for a retry
                error = str(exc) or f"{type(exc).__name__} (revert timed out)"
                log.warning("revert failed", correlation_id=lease.correlation_id, attempt=attempt + 1, error=error)
                await asyncio.sleep(min(5.0, self.revert_backoff * 2**attempt))
                continue
            now = time.time()
            arrived = [str(name) for name in (seen or {}).get(ARRIVED) or []]
            # the lease goes and the revert is noted in the run's trail in one step
            done = trail.revert(lease, events_pb2.CHAOS_EVENT_TYPE_REVERTED, at=now, arrived=arrived)
            await self.store.release_lease(lease, self.owner, done)
            metrics.REVERTS.labels(outcome="reverted").inc()
            await self._publish_revert(lease, events_pb2.CHAOS_EVENT_TYPE_REVERTED, "", now, arrived)
            return True, "", arrived
        metrics.REVERTS.labels(outcome="failed").inc()
        now = time.time()
        await self.store.add_to_trail(lease.execution_id, trail.revert_key(lease.correlation_id),
                                      trail.revert(lease, events_pb2.CHAOS_EVENT_TYPE_REVERT_FAILED, error, now))
        await self._publish_revert(lease, events_pb2.CHAOS_EVENT_TYPE_REVERT_FAILED, error, now)
        return False, error, []

    async def _undo_failed(self, lease: Lease) -> None:
        """A fault that failed half way may have been applied: revert it anyway, then drop the lease."""
        try:
            await asyncio.wait_for(self.drivers.get(lease.driver).revert(lease.recipe), 30)
        except Exception as exc:  # noqa: BLE001 - keep the lease: the reconciler will try again
            log.warning("could not undo a failed injection", correlation_id=lease.correlation_id, error=str(exc))
            return
        await self.store.delete_lease_if_owned(lease.correlation_id, lease.owner)

    async def _publish_revert(self, lease: Lease, kind: int, error: str, at: float,
                              arrived: list[str] | None = None) -> None:
        event = events_pb2.ChaosEvent(
            correlation_id=lease.correlation_id, type=kind, execution_id=lease.execution_id,  # type: ignore[arg-type]
            step_name=lease.step_name, target=lease.target, service=lease.service, driver=lease.driver,
            fault=lease.fault, error=error, owner=self.owner, scenario_name=lease.scenario_name, arrived=arrived or [],
        )
        event.injected_at.FromNanoseconds(int((lease.injected_at or lease.created_at) * 1e9))
        event.reverted_at.FromNanoseconds(int(at * 1e9))
        await self.publisher.chaos(event)
