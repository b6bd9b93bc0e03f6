"""The engine: scenario requests in, executions run, exactly one result out per request.

``Engine`` is the one place that builds the collaborators (store, publisher, drivers, fault
manager, prober, policy, catalog) and the one API everybody else calls. Commands and queries:

- ``submit(request)``: validate, publish to the requests topic, wait until an agent claims it.
- ``validate(yaml, source)``, ``scenarios()``: check a document; list the catalog.
- ``cancel(execution_id)``, ``halt(reason)``, ``resume()``: control, through Redis, so every agent
  hears them.
- ``get(execution_id)``, ``list(...)``, ``watch(execution_id)``: what ran and runs.

The serving process (``agent.service``) also hands it requests read from Kafka
(``accept``), verdicts (``verdicts.deliver``), control messages (``on_control``) and reconciliation
rounds (``reconcile_once``). Build it with ``async with Engine.open(settings) as engine``; ``aclose``
is idempotent and gives running executions ``drain`` seconds to finish before aborting them.

Errors are typed (``agent.errors``): ``NotFound``, ``ScenarioError`` / ``InvalidParameters``,
``Rejected``, ``StateError`` (halted, already ended), ``Unavailable`` (Kafka or Redis away); callers
answer from the type, never from message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from redis.exceptions import RedisError

from agent import codec, failpoints, history, metrics, schedules, submission, vocabulary
from agent._proto.coordinator.v1 import coordinator_service_pb2 as api
from agent._proto.coordinator.v1 import events_pb2
from agent.config_service import ConfigService
from agent.drivers import DriverRegistry
from agent.drivers.probes import Prober
from agent.engine import trail, views
from agent.engine.execution import EngineContext, Execution, Verdicts
from agent.engine.faults import FaultManager
from agent.engine.publisher import Publisher
from agent.errors import (
    CoordinatorError,
    DecodeError,
    InvalidParameters,
    Issue,
    NotFound,
    Rejected,
    ScenarioError,
    StateError,
    Unavailable,
)
from agent.history import History, MemoryHistory, RedisHistory
from agent.logs import get_logger
from agent.policy import PolicySource
from agent.scenario import Scenario, default_directories
from agent.scenario.catalog import CatalogCache, ScenarioCache
from agent.scenario.validation import load_scenario
from agent.settings import Settings
from agent.store import ExecutionRecord, RedisStore, Store

log = get_logger("agent.engine")
S = events_pb2
T = TypeVar("T")
#: longest list ``list`` reads from Redis before filtering
LIST_SCAN = 10_000


@dataclass
class Running:
    """An execution of this agent and its task (None for the moment the request is being claimed)."""

    execution: Execution
    task: asyncio.Task[None] | None = None

    def abort(self, reason: str) -> bool:
        if self.task is None:
            return False
        self.execution.abort_reason = reason
        self.task.cancel()
        return True


@dataclass(frozen=True)
class Submission:
    execution_id: str
    request_id: str
    duplicate: bool = False


@dataclass(frozen=True)
class Validation:
    scenario_name: str
    issues: list[Issue]


@dataclass(frozen=True)
class HaltOutcome:
    reverted_faults: int
    aborted_executions: int


class Slots:
    """At most ``limit()`` executions at once; the limit may change while the agent runs."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._running = 0
        self._condition = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._condition:
            await self._condition.wait_for(lambda: self._running < self._limit())
            self._running += 1

    async def __aexit__(self, *_: object) -> None:
        async with self._condition:
            self._running -= 1
            self._condition.notify_all()

    async def changed(self) -> None:
        async with self._condition:
            self._condition.notify_all()


class Engine:
    def __init__(self, settings: Settings, *, owner: str | None = None, patient: bool = False,
                 store: Store | None = None, publisher: Publisher | None = None,
                 drivers: DriverRegistry | None = None, history: History | None = None) -> None:
        """``store``, ``publisher``, ``drivers`` and ``history`` replace the real ones (``agent.testing``
        has in-memory ones); ``patient``: Redis calls of a run retry through an outage."""
        self.settings = settings
        self.owner = owner or f"{settings.instance_id}/{uuid.uuid4().hex[:8]}"
        self.store: Store = store or RedisStore(settings.redis_url.get_secret_value(), settings.redis_key_prefix,
                                                patient=patient)
        self.publisher = publisher or Publisher(settings)
        self.drivers = drivers or DriverRegistry(settings)
        #: every result, per scenario, for trends and regression gates (in Redis beside the runs)
        self.history: History = history or (
            RedisHistory(self.store.redis, settings.redis_key_prefix, keep=settings.history_runs,
                         days=settings.history_days)
            if isinstance(self.store, RedisStore) else MemoryHistory())
        self.config = ConfigService(settings.config_service_url, settings.config_environment,
                                    settings.config_service_ttl)
        #: the allow-list and concurrency limit now (Settings never change while the agent runs)
        self.policy = PolicySource(settings, self.config)
        self.faults = FaultManager(settings, self.store, self.drivers, self.publisher, self.owner, self.policy)
        self.prober = Prober(settings)
        self.verdicts = Verdicts()
        self._ctx = EngineContext(settings, self.store, self.publisher, self.faults, self.prober, self.drivers,
                                  self.verdicts, self.history)
        #: this agent's executions
        self.running: dict[str, Running] = {}
        self.slots = Slots(lambda: self.policy.current.max_concurrent_executions)
        self.catalog = CatalogCache(default_directories(settings.scenario_dirs))
        self.scenarios_cache = ScenarioCache()
        self._closed = False
        if patient:  # after an outage, before any waiting call goes on: what this agent holds
            self.store.on_return = self._after_outage

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, **kwargs: Any) -> AsyncIterator[Engine]:
        """An engine for commands and queries (the CLI, tests); Kafka is connected when first needed."""
        engine = cls(settings, **kwargs)
        try:
            yield engine
        finally:
            await engine.aclose()

    async def _after_outage(self) -> None:
        """Redis answers again: write back what it lost of this agent's runs and faults (a crash
        loses up to a second of its append-only file), then renew the heartbeat and every lease."""
        runs = [r.execution for r in self.running.values() if r.task is not None and not r.execution.lost]
        epochs = {e.execution_id: e.epoch for e in runs}
        records = [ExecutionRecord(
            execution_id=e.execution_id, request_id=e.request_id, scenario_name=e.scenario.name, status="RUNNING",
            owner=self.owner, requester=e.request.requester, started_at=e.received_at,
            labels=dict(e.request.labels), epoch=e.epoch) for e in runs]
        expires = time.time() + self.settings.lease_ttl
        leases = [(dataclasses.replace(a.lease, injected=True, expires_at=expires), epochs[a.lease.execution_id])
                  for a in self.faults.active.values() if a.held and a.lease.execution_id in epochs]
        runs_back, leases_back = await self.store.restore(records, leases)
        if runs_back or leases_back:
            log.warning("redis had lost part of this agent's state; written again", runs=runs_back,
                        leases=leases_back)
        await self.faults.renew()

    async def start(self) -> None:
        """Connect for serving: topics (when asked to create them), the producer, this owner's heartbeat."""
        if self.settings.create_topics:
            from agent import topics

            await topics.apply(self.settings)
        await self.publisher.start()
        await self.store.renew_leases(self.owner, [], self.settings.lease_ttl)

    async def finish_runs(self, drain: float = 0.0, reason: str = "the agent is shutting down") -> None:
        """Let running executions finish for up to ``drain`` seconds, then abort the rest."""
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks and drain > 0:
            log.info("draining executions", running=len(tasks), drain_s=drain)
            await asyncio.wait(tasks, timeout=drain)
        await self.abort_all(reason)

    async def aclose(self, drain: float = 0.0, reason: str = "the agent is shutting down") -> None:
        """``finish_runs``, then close every collaborator. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.finish_runs(drain, reason)
        for close in (self.drivers.aclose, self.prober.aclose, self.config.aclose, self.publisher.aclose,
                      self.store.aclose):
            with contextlib.suppress(Exception):
                await close()

    # -- commands ---------------------------------------------------------------------------------
    async def submit(self, request: events_pb2.ScenarioRequest, *, wait: float = 10.0) -> Submission:
        """Validate ``request`` and publish it to the requests topic; return once an agent claimed it.

        A request id already claimed returns that execution (``duplicate``); a request without one
        gets a new UUID (``Submission.request_id`` says which). Raises ``Rejected`` (no scenario),
        ``NotFound``, ``ScenarioError``, ``StateError`` (halted), ``Unavailable``, or
        ``TimeoutError`` when nobody claimed it within ``wait`` seconds."""
        submission.complete(request, requester="grpc")
        earlier = await _redis(self.store.claimed_request(request.request_id))
        if earlier:
            return Submission(earlier, request.request_id, duplicate=True)
        halted = await _redis(self.store.halted())
        if halted:
            raise StateError(f"the agent is halted ({halted}); resume it to run scenarios")
        self.resolve(request, request.request_id)
        deadline = time.monotonic() + wait
        try:
            await asyncio.wait_for(self._publish_request(request), wait)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise Unavailable(f"kafka: the request could not be published: {exc}") from exc
        while time.monotonic() < deadline:
            claimed = await _redis(self.store.claimed_request(request.request_id))
            if claimed:
                return Submission(claimed, request.request_id)
            await asyncio.sleep(0.05)
        raise TimeoutError("published to Kafka, but no agent claimed it in time; watch the results topic for it")

    async def _publish_request(self, request: events_pb2.ScenarioRequest) -> None:
        await self.publisher.start()
        await self.publisher.request(request)

    def validate(self, scenario_yaml: str, source: str = "<request>") -> Validation:
        """Every problem of a scenario document (parameters without a default get a typed placeholder)."""
        try:
            name = load_scenario(scenario_yaml, source, allowed_targets=list(self.policy.current.allowed_targets),
                                 require_parameters=False).name
        except ScenarioError as exc:
            return Validation("", exc.issues)
        return Validation(name, [])

    def scenarios(self) -> list[api.ScenarioSummary]:
        catalog = self.catalog.get()
        out = []
        for name in catalog.names():
            entry = catalog.get(name)
            out.append(api.ScenarioSummary(
                name=name, description=entry.scenario.metadata.description or "", file=entry.relative,
                targets=sorted(entry.scenario.spec.targets),
                faults=sorted({s.fault for s in entry.scenario.fault_steps()})))
        return out

    async def cancel(self, execution_id: str, reason: str = "cancelled") -> int:
        """Ask whichever agent runs it to abort the execution; its status now. ``NotFound``, or
        ``StateError`` when it already ended."""
        execution = await self.get(execution_id)
        if vocabulary.is_terminal(execution.status):
            raise StateError(f"execution {execution_id} already ended ({vocabulary.status_name(execution.status)})")
        await _redis(self.store.request_cancel(execution_id, reason))
        return int(execution.status)

    async def halt(self, reason: str) -> HaltOutcome:
        """The kill switch: refuse new runs, make every agent abort its executions, revert every
        fault recorded in Redis (here, at once; the other agents do the same when they hear it)."""
        running = sum(1 for r in self.running.values() if r.task is not None)
        await _redis(self.store.halt(reason))
        await self.publisher.start()
        reverted = await self.faults.reconcile(everything=True)
        return HaltOutcome(reverted, running)

    async def resume(self) -> None:
        await _redis(self.store.resume())

    # -- schedules and history ---------------------------------------------------------------------
    async def apply_schedule(self, text: str, source: str = "<request>", requester: str = "") -> events_pb2.Schedule:
        """Publish a ``kind: Schedule`` document (``ScenarioError`` lists every problem). It names a
        scenario of the catalog: no file a caller names is read here."""
        found = schedules.load_schedule(text, source, requester=requester)
        await self.publish_schedule(found)
        return found

    async def publish_schedule(self, schedule: events_pb2.Schedule | None, name: str = "") -> None:
        """A schedule as the latest record of its name; None: a tombstone deleting ``name``."""
        await schedules.ensure_topic(self.settings)
        await self.publisher.start()  # an engine of the CLI connects to Kafka when first needed
        await self.publisher.schedule(schedule.name if schedule else name, schedule)

    async def list_schedules(self) -> list[events_pb2.Schedule]:
        return [s for _, s in sorted((await schedules.read_all(self.settings)).items())]

    async def pause_schedule(self, name: str, paused: bool) -> events_pb2.Schedule:
        found = (await schedules.read_all(self.settings)).get(name)
        if found is None:
            raise NotFound(f"no schedule named '{name}'")
        found.paused = paused
        found.updated_at.GetCurrentTime()
        await self.publish_schedule(found)
        return found

    async def delete_schedule(self, name: str) -> None:
        if name not in await schedules.read_all(self.settings):
            raise NotFound(f"no schedule named '{name}'")
        await self.publish_schedule(None, name)

    async def history_of(self, scenario: str, last: int = 50) -> dict[str, Any]:
        """``agent.history.overview`` of a scenario; ``NotFound`` when it has no runs."""
        found = await _redis(history.overview(self.history, scenario, last))
        if not found["recent"]:
            raise NotFound(f"no runs of '{scenario}' in the history")
        return found

    async def get(self, execution_id: str) -> api.Execution:
        if not execution_id:
            raise Rejected("no-execution-id", "execution_id is required")
        record = await _redis(self.store.get_execution(execution_id))
        if record is None:
            raise NotFound(f"unknown execution '{execution_id}'")
        results = await _redis(self.store.get_results([execution_id]))
        return views.execution(record, results.get(execution_id))

    async def list(self, *, status: int = 0, scenario_name: str = "", labels: dict[str, str] | None = None,
                   offset: int = 0, limit: int = 50) -> tuple[list[api.Execution], bool]:
        """Executions newest first, filtered; and whether there are more after this page."""
        records = await _redis(self.store.list_executions(limit=LIST_SCAN))
        wanted = [r for r in records if views.matches(r, status, scenario_name, labels or {})]
        page = wanted[offset:offset + limit]
        results = await _redis(self.store.get_results([r.execution_id for r in page]))
        return [views.execution(r, results.get(r.execution_id)) for r in page], offset + limit < len(wanted)

    async def watch(self, execution_id: str) -> AsyncIterator[api.WatchExecutionResponse]:
        """Progress of an execution from the results topic, then its result (replayed when it ended)."""
        execution = await self.get(execution_id)
        async for update in views.follow(self.settings, execution):
            yield update

    # -- what the serving process hands in ----------------------------------------------------------
    def resolve(self, request: events_pb2.ScenarioRequest, request_id: str) -> Scenario:
        """The valid scenario a request asks for, with its parameters; ``Rejected`` (names none),
        ``NotFound`` (unknown name), ``ScenarioError`` / ``InvalidParameters``."""
        overrides = submission.overrides(request)
        allowed = list(self.policy.current.allowed_targets)
        if submission.which(request) == "scenario_yaml":
            return self.scenarios_cache.load(request.scenario_yaml, f"request {request_id}", overrides, allowed)
        entry = self.catalog.get().get(request.scenario_name)
        return self.scenarios_cache.load(entry.path.read_text(), str(entry.path), overrides, allowed)

    async def accept(self, record: ConsumerRecord) -> None:
        """One record of the requests topic: claimed and started, a duplicate ignored, or rejected
        (dead-lettered, with a REJECTED result)."""
        received = (record.timestamp / 1000.0) if record.timestamp and record.timestamp > 0 else time.time()
        request = events_pb2.ScenarioRequest()
        request_id = ""
        execution_id = str(uuid.uuid4())
        try:
            try:
                request = codec.decode_event(record.value, record.headers, events_pb2.ScenarioRequest)
            except DecodeError as exc:
                request_id = _salvaged_request_id(record)  # only an undecodable record is read again
                raise Rejected(exc.reason, str(exc)) from exc
            request_id = request.request_id or _record_id(record)
            scenario = self.resolve(request, request_id)
            history.baseline_of(request, scenario.spec.baseline)
        except (Rejected, NotFound, ScenarioError) as exc:
            await self._reject(record, request, request_id, execution_id, _rejection(exc))
            return
        execution = Execution(self._ctx, execution_id, request_id, request, scenario, received)
        # registered before the claim, so that the reconciler never takes a run being accepted here
        self.running[execution_id] = Running(execution)
        try:  # the claim reads the kill switch in the same round trip
            earlier, halted = await self.store.claim_unless_halted(ExecutionRecord(
                execution_id=execution_id, request_id=request_id, scenario_name=scenario.name, status="PENDING",
                owner=self.owner, requester=request.requester, started_at=time.time(), labels=dict(request.labels)))
        except BaseException:
            self.running.pop(execution_id, None)
            raise
        if halted is not None:
            self.running.pop(execution_id, None)
            rejection = Rejected("halted", f"the agent is halted ({halted}); resume it to run scenarios")
            await self._reject(record, request, request_id, execution_id, rejection)
            return
        if earlier is not None:
            self.running.pop(execution_id, None)
            metrics.REQUESTS.labels(outcome="duplicate").inc()
            log.info("duplicate request ignored", request_id=request_id, execution_id=earlier)
            return
        await failpoints.point("after-claim")
        metrics.REQUESTS.labels(outcome="accepted").inc()
        self.running[execution_id].task = asyncio.create_task(self._run(execution), name=f"execution-{execution_id}")
        log.info("request accepted", request_id=request_id, execution_id=execution_id, scenario=scenario.name)

    async def _reject(self, record: ConsumerRecord, request: events_pb2.ScenarioRequest, request_id: str,
                      execution_id: str, exc: Rejected) -> None:
        metrics.REQUESTS.labels(outcome="rejected").inc()
        log.warning("request rejected", request_id=request_id, reason=exc.code, error=str(exc))
        result = events_pb2.ScenarioResult(
            execution_id=execution_id, request_id=request_id, status=S.EXECUTION_STATUS_REJECTED,
            reason=f"{exc.code}: {exc}", requester=request.requester, labels=dict(request.labels),
            scenario_name=request.scenario_name if request.WhichOneof("scenario") == "scenario_name" else "",
        )
        result.started_at.GetCurrentTime()
        result.ended_at.GetCurrentTime()
        # claimed first, with its record (ended_at 0: no result yet), so that one request id gets one
        # REJECTED result, and a crash before the result is finished by the reconciler with this one
        earlier = await self.store.claim_request(ExecutionRecord(
            execution_id=execution_id, request_id=request_id, scenario_name=result.scenario_name, status="REJECTED",
            owner=self.owner, requester=request.requester, started_at=time.time(), reason=result.reason,
            labels=dict(request.labels)))
        # every record is dead-lettered, a second record with the same request id too: only the result
        # is kept to one per request id (an exact redelivery may be dead-lettered again: at least once)
        await self.publisher.dead_letter(record, exc.code, str(exc))
        if earlier is not None:
            metrics.REQUESTS.labels(outcome="duplicate").inc()
            log.info("rejected record dead-lettered; its request id already has a result", request_id=request_id,
                     execution_id=earlier, offset=f"{record.topic}-{record.partition}-{record.offset}")
            return
        await self._publish_result(result, self.owner, 1)
        metrics.EXECUTIONS.labels(status="REJECTED").inc()

    async def _run(self, execution: Execution) -> None:
        try:
            async with self.slots:  # a cancel while it waited here is read as the run starts
                result = await execution.run()
            if result is not None:  # None: another agent took the run over and publishes its result
                await self._publish_result(result, self.owner, execution.epoch)
        finally:
            self.running.pop(execution.execution_id, None)

    async def _publish_result(self, result: events_pb2.ScenarioResult, owner: str, epoch: int) -> None:
        """Store the result (fenced by owner and epoch), publish it, then note it published."""
        status = vocabulary.status_name(result.status)
        if not await self.store.begin_result(result.execution_id, owner, epoch, result.SerializeToString(),
                                             status=status, ended_at=time.time(), reason=result.reason):
            log.warning("not publishing a result: the run has another owner now, or its result is out",
                        execution_id=result.execution_id, owner=owner, epoch=epoch)
            return
        await self.remember(result)  # before it is out: whoever reads the result finds it in the history
        await failpoints.point("before-result")
        await self.publisher.result(result)
        await self.store.result_published(result.execution_id)
        await failpoints.point("after-result")
        log.info("result published", execution_id=result.execution_id,
                 status=S.ExecutionStatus.Name(result.status), reason=result.reason)

    async def remember(self, result: events_pb2.ScenarioResult) -> None:
        """Keep a result in the history (idempotent: a result published again after a crash is the
        same entry) and move the resilience scores. Should Redis fail here, the result still goes out,
        and ``coordinator history --rebuild`` finds it on the topic."""
        run = history.RunSummary.of(result)
        if run is None:
            return
        try:
            await self.store.patiently(self.history.record, run)
            past = await self.store.patiently(self.history.recent, run.scenario, self.settings.history_score_runs)
        except RedisError as exc:
            log.warning("result not kept in the history", execution_id=result.execution_id, error=str(exc))
            return
        metrics.set_scores(history.figures(run.scenario, past))

    async def abort_all(self, reason: str) -> None:
        running = list(self.running.values())
        for run in running:
            run.abort(reason)
        await asyncio.gather(*(r.task for r in running if r.task is not None), return_exceptions=True)

    async def on_control(self, message: dict[str, Any]) -> None:
        """A control message from Redis pub/sub: cancel one execution, or halt everything."""
        action = message.get("action")
        if action == "cancel":
            found = self.running.get(str(message.get("execution_id")))
            if found is not None:
                found.abort(message.get("reason") or "cancelled")
        elif action == "halt":
            await self.abort_all(f"halt-all: {message.get('reason') or 'halted'}")
            await self.faults.reconcile(everything=True)

    # -- runs whose agent stopped ---------------------------------------------------------------------
    async def reconcile_once(self) -> None:
        """Revert orphaned faults; finish, with exactly one result, the runs of agents that stopped.
        Nothing is judged until Redis has answered for a lease TTL without a break."""
        if not await self.faults.steady():
            return
        await self.faults.reconcile()
        orphans = [r for r in await self.store.list_executions(limit=500)
                   if r.owner != self.owner and _unfinished(r)]
        if not orphans:
            return
        alive = {owner: await self.store.owner_alive(owner) for owner in {r.owner for r in orphans}}
        with_faults = {lease.execution_id for lease in await self.store.leases()}
        for record in orphans:
            if alive[record.owner] or record.execution_id in with_faults:
                continue  # still running elsewhere, or faults still to revert: a later round finishes it
            epoch = await self.store.take_over(record.execution_id, record.owner, self.owner)
            if epoch is None:
                continue  # another agent took it first
            log.warning("finishing an execution whose agent stopped", execution_id=record.execution_id,
                        owner=record.owner, status=record.status, result_state=record.result_state or "none")
            await self._publish_result(await self._orphan_result(record), self.owner, epoch)

    async def _orphan_result(self, record: ExecutionRecord) -> events_pb2.ScenarioResult:
        """The one result of a run whose agent stopped: the one it had stored, else REJECTED, else
        ABORTED with everything the run noted in its trail (applied faults and their reverts, journal,
        verdicts): the same result the running agent would have published, but for the status."""
        if record.result_state == "publishing":
            stored = await self.store.get_result(record.execution_id)
            if stored:
                return events_pb2.ScenarioResult.FromString(stored)
        result = events_pb2.ScenarioResult(
            execution_id=record.execution_id, request_id=record.request_id, scenario_name=record.scenario_name,
            status=S.EXECUTION_STATUS_ABORTED, requester=record.requester, labels=record.labels,
            reason=(f"aborted: the agent running it ({record.owner}) stopped; its faults were reverted "
                    f"by lease reconciliation ({self.owner})"),
        )
        if record.status == "REJECTED":
            result.status, result.reason = S.EXECUTION_STATUS_REJECTED, record.reason
        else:
            found = trail.Trail.parse(await self.store.trail(record.execution_id))
            result.injections.extend(found.injections)
            result.verdicts.extend(found.verdicts)
            result.journal.extend(found.journal)
            entry = result.journal.add(phase="takeover", name=f"finished by {self.owner}",
                                       status=S.JOURNAL_ENTRY_STATUS_FAILED, error=result.reason)
            entry.started_at.GetCurrentTime()
            entry.ended_at.GetCurrentTime()
        result.started_at.FromNanoseconds(int(record.started_at * 1e9))
        result.ended_at.GetCurrentTime()
        return result


def _salvaged_request_id(record: ConsumerRecord) -> str:
    """The request id of a record, even one that does not decode, so that a REJECTED result can be
    matched by its requester: ``requestId`` (or ``request_id``) of a JSON payload, else the record's
    key, else ``topic-partition-offset``."""
    try:
        body = json.loads(record.value or b"")
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        found = body.get("requestId", body.get("request_id"))
        if isinstance(found, str) and 0 < len(found) <= MAX_REQUEST_ID:
            return found
    return _record_id(record)


def _record_id(record: ConsumerRecord) -> str:
    """The id of a request that names none: its record's key, else ``topic-partition-offset``."""
    try:
        key = (record.key or b"").decode("utf-8")
    except UnicodeDecodeError:
        key = ""
    if 0 < len(key) <= MAX_REQUEST_ID and key.isprintable():
        return key
    return f"{record.topic}-{record.partition}-{record.offset}"


#: longer "ids" are not taken from an undecodable record
MAX_REQUEST_ID = 200


def _rejection(exc: CoordinatorError) -> Rejected:
    """Why a request read from Kafka is refused, as the code its REJECTED result and dead letter carry."""
    if isinstance(exc, Rejected):
        return exc
    if isinstance(exc, NotFound):
        return Rejected("unknown-scenario", str(exc))
    assert isinstance(exc, ScenarioError)
    code = "invalid-parameters" if isinstance(exc, InvalidParameters) else "invalid-scenario"
    return Rejected(code, "; ".join(str(i) for i in exc.issues))


def _unfinished(record: ExecutionRecord) -> bool:
    """A run whose one result is not out: running, accepted or rejected without a result yet, or
    stored but not yet known to be on Kafka."""
    if record.result_state == "publishing":
        return True
    if record.result_state == "published":
        return False
    return record.status in {"PENDING", "RUNNING"} or (record.status == "REJECTED" and not record.ended_at)


async def _redis(call: Awaitable[T]) -> T:
    """A Redis call of a command: a Redis that cannot be reached is ``Unavailable``."""
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise Unavailable(f"redis unreachable (COORDINATOR_REDIS_URL): {exc}") from exc
