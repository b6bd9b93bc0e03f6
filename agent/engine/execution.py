"""One execution: one run of one scenario, from its steady state to its one final result.

Lifecycle: steady state before -> steps (faults and waits) -> every fault reverted -> verdicts of
the audit expectations (from the stream worker) -> steady state after -> rollbacks -> one terminal
status. Whatever ends the run (success, failure, timeout, cancel, halt, shutdown), the clean-up
runs: faults are reverted and rollbacks run as their strategy says.

Statuses: PASSED (every probe held and every expectation PASSED), FAILED (a probe or an
expectation failed, or an expectation stayed INCONCLUSIVE: no evidence is not a pass), ERROR (a
fault could not be applied or reverted), ABORTED (cancelled, halted, agent stopping), TIMED_OUT
(``limits.timeout``). REJECTED is decided before a run starts (see ``agent.engine.engine``).

Fencing: the run belongs to ``owner`` at ``epoch`` (``agent.store``). Before every step and with
every lease it writes, the run checks that it still does; once another agent has taken it over
(this one was paused, or cut off from Redis longer than its heartbeat lasts), it stops at once:
it takes back a fault it may just have applied, publishes no progress and no result, and ``run``
returns None. The agent that took it over publishes the one result.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent import failpoints, history, metrics, tracing, vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.drivers import DriverRegistry
from agent.drivers.probes import ProbeOutcome, Prober
from agent.engine import trail
from agent.engine.faults import ActiveFault, FaultManager
from agent.engine.publisher import Publisher
from agent.errors import CoordinatorError, FencedOut, ProbeError
from agent.expectations import metric
from agent.history import History
from agent.logs import get_logger
from agent.scenario.base import format_duration
from agent.scenario.models import FaultStep, ParallelStep, Scenario, SerialStep, WaitStep
from agent.scenario.plan import plan
from agent.settings import Settings
from agent.store import Store

log = get_logger("agent.execution")
S = events_pb2
_ENTRY = {True: S.JOURNAL_ENTRY_STATUS_SUCCEEDED, False: S.JOURNAL_ENTRY_STATUS_FAILED}
_LATE_REVERTS: set[asyncio.Future[Any]] = set()


class Verdicts:
    """Routes the stream worker's verdicts to the execution waiting for them."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[events_pb2.ExpectationVerdict]] = {}

    def register(self, execution_id: str) -> asyncio.Queue[events_pb2.ExpectationVerdict]:
        return self._queues.setdefault(execution_id, asyncio.Queue())

    def unregister(self, execution_id: str) -> None:
        self._queues.pop(execution_id, None)

    def deliver(self, verdict: events_pb2.ExpectationVerdict) -> None:
        queue = self._queues.get(verdict.execution_id)
        if queue is not None:
            queue.put_nowait(verdict)


@dataclass
class EngineContext:
    settings: Settings
    store: Store
    publisher: Publisher
    faults: FaultManager
    prober: Prober
    drivers: DriverRegistry
    verdicts: Verdicts
    history: History


class StepFailed(CoordinatorError):
    pass


@dataclass
class Execution:
    ctx: EngineContext
    execution_id: str
    request_id: str
    request: events_pb2.ScenarioRequest
    scenario: Scenario
    received_at: float
    epoch: int = 1
    abort_reason: str = "cancelled"
    #: another agent took this run over: nothing more is published for it from here
    lost: bool = False
    journal: list[events_pb2.JournalEntry] = field(default_factory=list)
    injections: dict[str, events_pb2.Injection] = field(default_factory=dict)
    verdicts: dict[tuple[str, str], events_pb2.ExpectationVerdict] = field(default_factory=dict)
    steps_started: bool = False
    deviated: bool = False
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    #: metric expectations being sampled (agent.expectations.metric), until their deadlines
    _samplers: list[asyncio.Task[None]] = field(default_factory=list)
    _continuous_failures: list[str] = field(default_factory=list)
    _unanswered: set[tuple[str, str]] = field(default_factory=set)
    #: the execution's trace (a no-op unless tracing is on)
    trace: tracing.RunTrace = field(default_factory=tracing.RunTrace.off)

    @property
    def owner(self) -> str:
        return self.ctx.faults.owner

    async def _fence(self, **fields: Any) -> None:
        """Go on only while this agent still runs the execution (writing ``fields`` if it does)."""
        if self.lost or not await self.ctx.store.fenced_update(self.execution_id, self.owner, self.epoch, **fields):
            self.lost = True
            raise FencedOut(f"execution {self.execution_id} was taken over by another agent")

    async def _start(self, started: float) -> None:
        """Mark the run RUNNING, in one round trip with the fence and the cancel check: a cancel
        that came while it waited for a slot aborts it here."""
        if self.lost:
            raise FencedOut(f"execution {self.execution_id} was taken over by another agent")
        begun = await self.ctx.store.start_run(self.execution_id, self.owner, self.epoch,
                                               status="RUNNING", started_at=started)
        if begun.stopped is not None:
            self.abort_reason = begun.stopped
            raise asyncio.CancelledError
        if not begun.written:
            self.lost = True
            raise FencedOut(f"execution {self.execution_id} was taken over by another agent")

    # -- the run ---------------------------------------------------------------------------------
    async def run(self) -> events_pb2.ScenarioResult | None:
        """Run to the end; the one final result, or None when another agent took the run over."""
        started = time.time()
        queue = self.ctx.verdicts.register(self.execution_id)
        metrics.ACTIVE_EXECUTIONS.inc()
        status: int = S.EXECUTION_STATUS_ERROR
        reason = "the run ended unexpectedly"
        self.trace = tracing.RunTrace.start(self.execution_id, self.scenario.name, self.request_id,
                                      self.request.requester, started)
        entered = self.trace.enter()  # what the run publishes carries its trace context
        try:
            try:
                await self._start(started)
                await failpoints.point("after-record")
                await self._progress(S.EXECUTION_STATUS_RUNNING, "start", f"running '{self.scenario.name}'")
                async with asyncio.timeout(self.scenario.spec.limits.timeout):
                    status, reason = await self._lifecycle(queue)
            except TimeoutError:
                status = S.EXECUTION_STATUS_TIMED_OUT
                reason = f"the run exceeded its limit of {format_duration(self.scenario.spec.limits.timeout)}"
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                status, reason = S.EXECUTION_STATUS_ABORTED, f"aborted: {self.abort_reason}"
            except FencedOut as exc:
                self.lost = True
                metrics.FENCED_OUT.inc()
                log.warning("execution taken over by another agent; stopping it without publishing",
                            execution_id=self.execution_id, owner=self.owner, epoch=self.epoch, why=str(exc))
            except StepFailed as exc:
                status, reason = S.EXECUTION_STATUS_ERROR, str(exc)
            except Exception as exc:  # noqa: BLE001 - an agent bug must still end in one result
                log.exception("execution crashed", execution_id=self.execution_id)
                cause = _one_failure(exc) if isinstance(exc, BaseExceptionGroup) else exc
                status, reason = S.EXECUTION_STATUS_ERROR, f"internal error: {type(cause).__name__}: {cause}"
            status, reason = await self._clean_up(status, reason)
        finally:
            self.ctx.verdicts.unregister(self.execution_id)
            metrics.ACTIVE_EXECUTIONS.dec()
            self.trace.leave(entered)
        name = vocabulary.status_name(status)
        self.trace.end("taken over" if self.lost else name, reason, failed=status != S.EXECUTION_STATUS_PASSED)
        if self.lost:
            return None
        result = self._result(status, reason, started)
        metrics.EXECUTIONS.labels(status=name).inc()
        metrics.RUN_SECONDS.observe(time.time() - started)
        return result

    async def _lifecycle(self, queue: asyncio.Queue[events_pb2.ExpectationVerdict]) -> tuple[int, str]:
        if self.request.dry_run:
            for step in plan(self.scenario):
                await self._entry("plan", f"+{format_duration(step.offset)} {step.kind} {step.name}".strip(),
                                  True, output=step.detail)
            return S.EXECUTION_STATUS_PASSED, "dry run: validated and planned, nothing was touched"

        probes = self.scenario.spec.steady_state.probes
        before = await self._probes("steady-state-before", [p for p in probes if p.mode in {"SOT", "Edge"}])
        failed = [o for o in before if not o.ok]
        if failed:
            self.deviated = True
            return S.EXECUTION_STATUS_FAILED, "steady state not met before the steps: " + _why(failed)

        self.steps_started = True
        watcher = asyncio.create_task(self._watch_continuously())
        try:
            await self._steps(self.scenario.spec.steps)
            if self._background:
                await asyncio.gather(*self._background)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await self._revert_all()

        failures, inconclusive = await self._await_verdicts(queue)
        regressions = await self._gate()
        after = await self._probes("steady-state-after", [p for p in probes if p.mode in {"EOT", "Edge"}])
        reasons = []
        if self._continuous_failures:
            reasons.append("steady state broke during the run: " + "; ".join(self._continuous_failures[:3]))
        if failures:
            reasons.append("expectation(s) failed: " + "; ".join(failures))
        if regressions:
            reasons.append("slower than the baseline: " + "; ".join(regressions))
        failed_after = [o for o in after if not o.ok]
        if failed_after:
            reasons.append("steady state not met after the steps: " + _why(failed_after))
        if inconclusive:
            reasons.append("no evidence for expectation(s): " + "; ".join(inconclusive))
        silent = [f"{i.fault} on {i.target} ({i.reaction})" for i in self.injections.values()
                  if i.reaction and not i.reacted]
        unnoticed = " | nothing reacted to: " + "; ".join(silent) if silent else ""
        if reasons:
            self.deviated = True
            return S.EXECUTION_STATUS_FAILED, " | ".join(reasons) + unnoticed
        expectations = len(self.verdicts)
        return S.EXECUTION_STATUS_PASSED, (f"all {expectations} expectation(s) passed and the steady state held"
                                           if expectations else "the steady state held") + unnoticed

    # -- steps -----------------------------------------------------------------------------------
    async def _steps(self, steps: list[Any]) -> None:
        for step in steps:
            await self._step(step)

    async def _step(self, step: Any) -> None:
        if not isinstance(step, FaultStep):  # a fault step's lease is written fenced (FaultManager.inject)
            await self._fence()
        if isinstance(step, WaitStep):
            t0 = time.time()
            await asyncio.sleep(step.wait)
            await self._entry("steps", step.name or f"wait {format_duration(step.wait)}", True, started=t0)
        elif isinstance(step, SerialStep):
            await self._steps(step.serial)
        elif isinstance(step, ParallelStep):
            try:
                async with asyncio.TaskGroup() as group:
                    for inner in step.parallel:
                        group.create_task(self._step(inner))
            except BaseExceptionGroup as failures:
                raise _one_failure(failures) from None
        else:
            await self._fault(step)

    async def _fault(self, step: FaultStep) -> None:
        if step.delay:
            await asyncio.sleep(step.delay)
        limit = self.scenario.spec.limits.max_concurrent_faults
        if len(self.ctx.faults.of_execution(self.execution_id)) >= limit:
            raise StepFailed(f"step '{step.name}' would exceed maxConcurrentFaults ({limit})")
        t0 = time.time()
        span = self.trace.injection(step.name, step.fault, step.target)
        with self.trace.injecting(span):  # the chaos event and what the driver sends carry the span
            injecting = asyncio.ensure_future(self.ctx.faults.inject(self.execution_id, self.scenario, step,
                                                                     self.epoch))
        try:
            active = await asyncio.shield(injecting)
        except asyncio.CancelledError:
            # a parallel step failed, or the run was stopped, while this fault went in: let it finish
            # (the driver call is bounded by the step's timeout) so that it is recorded and reverted
            try:
                self.trace.injected(span, self._record(step, await injecting))
            except BaseException:  # noqa: BLE001 - failed on its own (nothing applied), or cancelled again
                self.trace.injected(span, "", "stopped while injecting")
                if not injecting.done():
                    injecting.add_done_callback(self._revert_late)
            raise
        except FencedOut:
            self.trace.injected(span, "", "taken over")
            self.lost = True
            raise
        except CoordinatorError as exc:
            self.trace.injected(span, "", str(exc))
            await self._entry("steps", step.name, False, started=t0, error=str(exc))
            raise StepFailed(f"step '{step.name}': {exc}") from exc
        cid = self._record(step, active)
        self.trace.injected(span, cid)
        for expectation in self.scenario.spec.expectations:
            if expectation.after == step.name and expectation.kind == metric.KIND.name:
                self._samplers.append(asyncio.create_task(self._sample(
                    expectation, cid, active.injected_at, expectation.event.service or active.event.service)))
        touched = f" ({', '.join(active.event.touched)})" if active.event.touched else ""
        await self._entry("steps", step.name, True, started=t0,
                          output=f"{step.fault} on {step.target}{touched}, correlation id {cid}")
        if step.duration:
            if step.background:
                self._background.append(asyncio.create_task(self._hold(cid, step.duration)))
            else:
                await self._hold(cid, step.duration)

    def _revert_late(self, injecting: asyncio.Future[ActiveFault]) -> None:
        """A fault that went in after its run stopped waiting for it: reverted on its own."""
        if injecting.cancelled() or injecting.exception() is not None:
            return
        task = asyncio.ensure_future(self.ctx.faults.revert(injecting.result().lease.correlation_id))
        _LATE_REVERTS.add(task)
        task.add_done_callback(_LATE_REVERTS.discard)

    def _record(self, step: FaultStep, active: ActiveFault) -> str:
        """Note an applied fault: it is reverted at the end and listed in the result."""
        if not self.injections:
            metrics.FIRST_FAULT_SECONDS.observe(max(0.0, active.injected_at - self.received_at))
        cid = active.lease.correlation_id
        self.injections[cid] = events_pb2.Injection()
        self.injections[cid].CopyFrom(active.injection)
        return cid

    async def _hold(self, correlation_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._revert(correlation_id)

    async def _revert(self, correlation_id: str) -> None:
        t0 = time.time()
        active = await self.ctx.faults.revert(correlation_id)
        injection = self.injections.get(correlation_id)
        if active is None or injection is None or self.lost:
            return
        if active.taken_over and not await self.ctx.store.fenced_update(self.execution_id, self.owner, self.epoch):
            self.lost = True  # the lease went with the run: whoever took both reports them
            return
        injection.reverted_at.FromNanoseconds(int(max(active.reverted_at, 0) * 1e9))
        injection.final_state = S.CHAOS_EVENT_TYPE_REVERT_FAILED if active.error else S.CHAOS_EVENT_TYPE_REVERTED
        injection.error = active.error
        injection.arrived[:] = active.arrived
        await self._entry("revert", injection.step_name, not active.error, started=t0, error=active.error,
                          output=f"{injection.fault} on {injection.target} reverted" if not active.error else "")

    async def _revert_all(self) -> None:
        # the run's faults are tracked by the fault manager alone (one that went in late included)
        await asyncio.gather(*(self._revert(cid) for cid in self.ctx.faults.of_execution(self.execution_id)))

    async def _sample(self, expectation: Any, correlation_id: str, injected_at: float, service: str) -> None:
        """A metric expectation's query, asked every ``interval`` until its deadline (or, for one
        that waits for recovery, its first accepted answer); each answer an audit event the worker
        judges (``metric_sample``)."""
        rule = expectation.rule
        deadline, said = injected_at + rule.within, False
        while (asked := time.time()) <= deadline:
            try:
                value = await self.ctx.prober.promql(rule.query, rule.url, timeout=min(5.0, max(1.0, rule.interval)))
            except ProbeError as exc:
                if not said:  # once: the verdict says INCONCLUSIVE when no sample ever came
                    said = True
                    await self._entry("metrics", expectation.name, False, started=asked, error=str(exc))
            else:
                ok, why = rule.tolerance.check(value)
                sample = events_pb2.AuditEvent(
                    id=str(uuid.uuid4()), service_name=service, event_type=metric.SAMPLE, correlation_id=correlation_id,
                    metadata={"expectation": expectation.name, "value": f"{value:g}", "accepted": str(ok).lower(),
                              "reason": why, "platform": "prometheus"})
                sample.timestamp.FromNanoseconds(int(asked * 1e9))
                await self.ctx.publisher.audit(sample, source=f"/coordinator/metrics/{self.owner}")
                if ok and not rule.holds:
                    return
            await asyncio.sleep(max(0.0, rule.interval - (time.time() - asked)))

    # -- probes ----------------------------------------------------------------------------------
    async def _gate(self) -> list[str]:
        """The regression gate (agent.history): each time to recover of a PASSED verdict against
        the median of the scenario's last passed runs; one journal entry per expectation judged."""
        baseline = history.baseline_of(self.request, self.scenario.spec.baseline)
        if baseline is None:
            return []
        ttrs = {v.expectation_name: v.time_to_recover.ToNanoseconds() / 1e9 for v in self.verdicts.values()
                if v.status == S.VERDICT_STATUS_PASSED and v.HasField("time_to_recover")}
        if not ttrs:
            return []
        past = await self.ctx.store.patiently(self.ctx.history.recent, self.scenario.name, baseline.runs * 4 + 20)
        outcome = history.gate(baseline, ttrs, past, exclude=self.execution_id)
        if outcome.note:
            await self._entry("baseline", outcome.note, True)
        for check in outcome.checks:
            said = check.sentence(baseline, outcome.runs)
            await self._entry("baseline", check.expectation, not check.over, output=said,
                              error=said if check.over else "")
        return outcome.failures(baseline)

    async def _probes(self, phase: str, probes: list[Any]) -> list[ProbeOutcome]:
        outcomes = []
        for probe in probes:
            t0 = time.time()
            outcome = await self.ctx.prober.run(probe, self.scenario)
            outcomes.append(outcome)
            await self._entry(phase, probe.name, outcome.ok, started=t0,
                              output=f"observed {outcome.observed!r}", error="" if outcome.ok else outcome.reason)
            if not outcome.ok and probe.stop_on_failure:
                break
        return outcomes

    async def _watch_continuously(self) -> None:
        probes = [p for p in self.scenario.spec.steady_state.probes if p.mode in {"Continuous", "OnChaos"}]
        if not probes:
            return
        interval = min(p.interval for p in probes)
        while True:
            for probe in probes:
                if probe.mode == "OnChaos" and not self.ctx.faults.of_execution(self.execution_id):
                    continue
                asked = time.time()
                outcome = await self.ctx.prober.run(probe.model_copy(update={"attempts": 1}), self.scenario)
                if outcome.ok:  # a span for each probe; the journal keeps the failures
                    self.trace.entry("steady-state-during", probe.name, True, asked, time.time())
                else:
                    self._continuous_failures.append(f"{probe.name}: {outcome.reason}")
                    await self._entry("steady-state-during", probe.name, False, started=asked, error=outcome.reason)
            await asyncio.sleep(interval)

    # -- verdicts --------------------------------------------------------------------------------
    async def _await_verdicts(self, queue: asyncio.Queue[events_pb2.ExpectationVerdict]
                              ) -> tuple[list[str], list[str]]:
        grace = self.ctx.settings.verdict_grace
        waiting: dict[tuple[str, str], float] = {}
        by_step = {i.step_name: i for i in self.injections.values()}
        for expectation in self.scenario.spec.expectations:
            injection = by_step.get(expectation.after)
            if injection is None:
                continue
            injected = injection.injected_at.ToNanoseconds() / 1e9
            waiting[(injection.correlation_id, expectation.name)] = injected + expectation.deadline + grace
            # the worker also says whether the target reacted at all, by the last expectation's deadline
            reaction = (injection.correlation_id, vocabulary.REACTION)
            waiting[reaction] = max(waiting.get(reaction, 0.0), injected + expectation.deadline + grace)
        while waiting:
            remaining = max(waiting.values()) - time.time()
            if remaining <= 0:
                break
            try:
                verdict = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            key = (verdict.correlation_id, verdict.expectation_name)
            if verdict.HasField("late_evidence_at"):
                self._late_evidence(verdict)
            elif key in waiting and verdict.expectation_name == vocabulary.REACTION:
                waiting.pop(key)
                await self._reaction(verdict.correlation_id, verdict.status == S.VERDICT_STATUS_PASSED,
                                     verdict.reason)
            elif key in waiting:
                waiting.pop(key)
                await self._verdict(verdict)
                await self._entry("expectations", verdict.expectation_name,
                                  verdict.status == S.VERDICT_STATUS_PASSED, output=verdict.reason,
                                  error="" if verdict.status == S.VERDICT_STATUS_PASSED else verdict.reason)
        for (cid, name), deadline in waiting.items():
            if name == vocabulary.REACTION:
                self.injections[cid].reaction = "unknown: no answer from the stream worker"
                continue
            self._unanswered.add((cid, name))  # no worker answered: none will report late evidence either
            verdict = events_pb2.ExpectationVerdict(
                execution_id=self.execution_id, correlation_id=cid, expectation_name=name,
                status=S.VERDICT_STATUS_INCONCLUSIVE,
                reason=f"no verdict from the stream worker by the deadline plus {format_duration(grace)} grace",
            )
            verdict.deadline.FromNanoseconds(int(deadline * 1e9))
            await self._verdict(verdict)
            await self._entry("expectations", name, False, error=verdict.reason)
        await self._await_late_evidence(queue)
        failed = [f"{v.expectation_name}: {v.reason}" for v in self.verdicts.values()
                  if v.status == S.VERDICT_STATUS_FAILED]
        inconclusive = [f"{v.expectation_name}: {v.reason}" for v in self.verdicts.values()
                        if v.status == S.VERDICT_STATUS_INCONCLUSIVE]
        return failed, inconclusive

    async def _await_late_evidence(self, queue: asyncio.Queue[events_pb2.ExpectationVerdict]) -> None:
        """A recovery expectation that missed its deadline without any sign of the event: wait up to
        ``late_evidence`` seconds for the worker to report it came late, and note it on the verdict."""
        kinds = {e.name: e.kind for e in self.scenario.spec.expectations}
        missed = {key for key, v in self.verdicts.items() if v.status != S.VERDICT_STATUS_PASSED
                  and kinds.get(key[1]) in {"appears", "time_to_recover"} and not v.HasField("first_seen_at")
                  and not v.HasField("late_evidence_at") and key not in self._unanswered}
        until = time.time() + self.ctx.settings.late_evidence
        while missed and time.time() < until:
            try:
                verdict = await asyncio.wait_for(queue.get(), until - time.time())
            except TimeoutError:
                return
            if verdict.HasField("late_evidence_at"):
                missed.discard(self._late_evidence(verdict))

    async def _verdict(self, verdict: events_pb2.ExpectationVerdict) -> None:
        """Keep a verdict for the result, and in the run's trail for whoever finishes the run."""
        self.verdicts[(verdict.correlation_id, verdict.expectation_name)] = verdict
        metrics.VERDICTS.labels(scenario=self.scenario.name, status=vocabulary.verdict_name(verdict.status)).inc()
        if verdict.HasField("time_to_recover"):
            metrics.TIME_TO_RECOVER.labels(scenario=self.scenario.name, expectation=verdict.expectation_name).observe(
                verdict.time_to_recover.ToNanoseconds() / 1e9)
        self.trace.verdict(verdict.correlation_id, verdict.expectation_name, vocabulary.verdict_name(verdict.status),
                           verdict.reason, verdict.injected_at.ToNanoseconds() / 1e9, time.time(),
                           failed=verdict.status != S.VERDICT_STATUS_PASSED)
        if not self.lost:
            await self.ctx.store.add_to_trail(
                self.execution_id, trail.verdict_key(verdict.correlation_id, verdict.expectation_name),
                verdict.SerializeToString())

    def _late_evidence(self, late: events_pb2.ExpectationVerdict) -> tuple[str, str]:
        """Note on a decided verdict the evidence that came after its deadline; the status stands."""
        key = (late.correlation_id, late.expectation_name)
        verdict = self.verdicts.get(key)
        if verdict is not None and not verdict.HasField("late_evidence_at"):
            verdict.late_evidence_at.CopyFrom(late.late_evidence_at)
            verdict.reason += f" (late evidence: {late.reason})"
        return key

    async def _reaction(self, correlation_id: str, reacted: bool, reason: str) -> None:
        """Whether the target's service sent any audit event of its own after the injection."""
        injection = self.injections.get(correlation_id)
        if injection is None:
            return
        injection.reacted, injection.reaction = reacted, reason
        if not reacted:
            await self._entry("reactions", f"{injection.fault} on {injection.target}", False, error=reason)

    # -- clean-up --------------------------------------------------------------------------------
    async def _clean_up(self, status: int, reason: str) -> tuple[int, str]:
        for task in (*self._background, *self._samplers):
            task.cancel()
        await asyncio.gather(*self._background, *self._samplers, return_exceptions=True)
        await self._revert_all()
        if self.lost:
            return status, reason  # the agent that took the run over runs its rollbacks
        failed_reverts = [i for i in self.injections.values() if i.final_state == S.CHAOS_EVENT_TYPE_REVERT_FAILED]
        if status == S.EXECUTION_STATUS_FAILED:
            self.deviated = True
        strategy = self.scenario.spec.rollbacks.strategy
        run_rollbacks = (strategy == "always" or (strategy == "default" and self.steps_started)
                         or (strategy == "deviated" and self.deviated))
        if run_rollbacks and not self.request.dry_run:
            for action in self.scenario.spec.rollbacks.actions:
                t0 = time.time()
                try:
                    await self.ctx.faults.rollback(self.scenario, action)
                except Exception as exc:  # noqa: BLE001 - report, go on with the next action
                    await self._entry("rollbacks", action.name, False, started=t0, error=str(exc) or "failed")
                else:
                    await self._entry("rollbacks", action.name, True, started=t0,
                                      output=f"{action.action} {action.target}")
        if failed_reverts and status != S.EXECUTION_STATUS_ABORTED:
            names = ", ".join(f"{i.step_name} ({i.error})" for i in failed_reverts)
            return S.EXECUTION_STATUS_ERROR, f"fault(s) could not be reverted, leases kept for retry: {names}"
        return status, reason

    # -- events ----------------------------------------------------------------------------------
    async def _entry(self, phase: str, name: str, ok: bool, *, started: float | None = None, output: str = "",
                     error: str = "") -> None:
        entry = events_pb2.JournalEntry(phase=phase, name=name, status=_ENTRY[ok], output=output[:2000],
                                        error=error[:2000])
        now = time.time()
        entry.started_at.FromNanoseconds(int((started or now) * 1e9))
        entry.ended_at.FromNanoseconds(int(now * 1e9))
        self.journal.append(entry)
        self.trace.entry(phase, name, ok, started or now, now, error)
        if not self.lost:  # in the run's trail too, for whoever finishes the run
            await self.ctx.store.add_to_trail(self.execution_id, trail.journal_key(len(self.journal) - 1),
                                              entry.SerializeToString())
        await self._progress(S.EXECUTION_STATUS_RUNNING, phase, f"{name}: {'ok' if ok else error or 'failed'}",
                             entry)

    async def _progress(self, status: int, phase: str, message: str,
                        entry: events_pb2.JournalEntry | None = None) -> None:
        if self.lost:
            return
        progress = events_pb2.ExecutionProgress(execution_id=self.execution_id, request_id=self.request_id,
                                                scenario_name=self.scenario.name, status=status,  # type: ignore[arg-type]
                                                phase=phase, message=message)
        if entry is not None:
            progress.entry.CopyFrom(entry)
        progress.at.GetCurrentTime()
        try:
            await self.ctx.publisher.progress(progress)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the result is not
            log.warning("progress not published", execution_id=self.execution_id, error=str(exc))

    def _result(self, status: int, reason: str, started: float) -> events_pb2.ScenarioResult:
        result = events_pb2.ScenarioResult(
            execution_id=self.execution_id, request_id=self.request_id, scenario_name=self.scenario.name,
            status=status, reason=reason, requester=self.request.requester,  # type: ignore[arg-type]
            labels=dict(self.request.labels), dry_run=self.request.dry_run,
            injections=list(self.injections.values()), verdicts=list(self.verdicts.values()), journal=self.journal,
        )
        result.started_at.FromNanoseconds(int(started * 1e9))
        result.ended_at.GetCurrentTime()
        result.trace_id = self.trace.trace_id
        return result


def _one_failure(group: BaseExceptionGroup) -> BaseException:
    """What a failed parallel step means to a user: the run was taken over, else every failed step
    named with its backend's answer, else the first error itself (never "ExceptionGroup")."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, FencedOut):
            return leaf
    steps = [leaf for leaf in leaves if isinstance(leaf, StepFailed)]
    if steps:
        return StepFailed("; ".join(str(s) for s in steps)) if len(steps) > 1 else steps[0]
    return leaves[0] if leaves else asyncio.CancelledError()


def _why(outcomes: list[ProbeOutcome]) -> str:
    return "; ".join(f"{o.name}: {o.reason}" for o in outcomes)
