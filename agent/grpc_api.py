"""The agent's gRPC API (``coordinator.v1.CoordinatorService``), served by ``coordinator serve``.

Submissions take the Kafka path: the request is validated here (so a bad scenario is refused at
once, with every problem as a field violation), published to the requests topic, and the call
returns when an agent has claimed it in Redis, so a gRPC submission and a Kafka request with the
same ``request_id`` run once. Status codes:

- INVALID_ARGUMENT: a bad scenario (details: ``google.rpc.BadRequest`` with one violation per
  problem, field = its path, description = file:line:column and message) or a bad argument.
- NOT_FOUND: an unknown execution or scenario name.
- FAILED_PRECONDITION: the agent is halted (submit), or the execution already ended (cancel).
- UNAVAILABLE: Kafka or Redis cannot be reached.
- DEADLINE_EXCEEDED: the call's deadline passed (the server stops working on it).

Also here: ``grpc.health.v1`` (the overall status and the service's follow real readiness, checked
every few seconds; NOT_SERVING once shutdown begins), server reflection, a bearer-token interceptor
and TLS / mutual TLS from settings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from redis.exceptions import RedisError

from agent import codec, vocabulary
from agent._proto.coordinator.v1 import coordinator_service_pb2 as api
from agent._proto.coordinator.v1 import coordinator_service_pb2_grpc as api_grpc
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import Issue, NotFound, ScenarioError
from agent.health import readiness
from agent.kafkaio import topic_partitions
from agent.logs import get_logger
from agent.scenario.validation import load_scenario
from agent.settings import Settings
from agent.store import ExecutionRecord

if TYPE_CHECKING:
    from agent.engine.agent import Agent

log = get_logger("agent.grpc")
S = events_pb2
SERVICE_NAME = api.DESCRIPTOR.services_by_name["CoordinatorService"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MAX_PAGE = 500
SUBMIT_WAIT = 10.0  # seconds a submission waits for an agent to claim it, when the call has no deadline


class CoordinatorServicer(api_grpc.CoordinatorServiceServicer):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.settings = agent.settings

    # -- submit ------------------------------------------------------------------------------------
    async def SubmitExecution(self, request: api.SubmitExecutionRequest,  # noqa: N802 - gRPC names
                              context: grpc.aio.ServicerContext) -> api.SubmitExecutionResponse:
        from agent.engine.agent import Rejected

        submitted = request.request
        if not submitted.request_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request.request_id is required")
        store = self.agent.store
        earlier = await _redis(context, store.claimed_request(submitted.request_id))
        if earlier:
            return api.SubmitExecutionResponse(execution_id=earlier, request_id=submitted.request_id, duplicate=True)
        halted = await _redis(context, store.halted())
        if halted:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"the agent is halted ({halted}); resume it to run scenarios")
        try:
            self.agent.scenario_for(submitted, submitted.request_id)
        except Rejected as exc:
            if isinstance(exc.__cause__, NotFound):  # the code comes from the error's type, not its text
                await context.abort(grpc.StatusCode[exc.__cause__.grpc_status], str(exc))
            issues = exc.__cause__.issues if isinstance(exc.__cause__, ScenarioError) else []
            await context.abort_with_status(rpc_status.to_status(_bad_request(f"{exc.code}: {exc}", issues)))
        if not submitted.HasField("requested_at"):
            submitted.requested_at.GetCurrentTime()
        submitted.requester = submitted.requester or "grpc"
        try:
            await asyncio.wait_for(self.agent.publisher.request(submitted), _remaining(context, SUBMIT_WAIT))
        except (KafkaError, OSError, TimeoutError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"kafka: the request could not be published: {exc}")
        deadline = time.monotonic() + _remaining(context, SUBMIT_WAIT)
        while time.monotonic() < deadline:
            claimed = await _redis(context, store.claimed_request(submitted.request_id))
            if claimed:
                return api.SubmitExecutionResponse(execution_id=claimed, request_id=submitted.request_id)
            await asyncio.sleep(0.05)
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                     "published to Kafka, but no agent claimed it in time; watch the results topic for it")
        raise AssertionError("unreachable")

    # -- read ---------------------------------------------------------------------------------------
    async def GetExecution(self, request: api.GetExecutionRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> api.GetExecutionResponse:
        execution = await self._execution(request.execution_id, context)
        return api.GetExecutionResponse(execution=execution)

    async def ListExecutions(self, request: api.ListExecutionsRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> api.ListExecutionsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be 0..{MAX_PAGE}")
        size = request.page_size or 50
        start = _page_start(request.page_token)
        if start is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this server gave")
        assert start is not None
        records = await _redis(context, self.agent.store.list_executions(limit=10_000))
        wanted = [r for r in records if _matches(r, request)]
        page = wanted[start:start + size]
        results = await _redis(context, self.agent.store.get_results([r.execution_id for r in page]))
        token = _page_token(start + size) if start + size < len(wanted) else ""
        return api.ListExecutionsResponse(executions=[_execution(r, results.get(r.execution_id)) for r in page],
                                          next_page_token=token)

    async def WatchExecution(self, request: api.WatchExecutionRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> AsyncIterator[api.WatchExecutionResponse]:
        execution = await self._execution(request.execution_id, context)
        async for update in self._updates(execution, context):
            yield update

    async def _updates(self, execution: api.Execution, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[api.WatchExecutionResponse]:
        """Progress from the results topic (the execution's partition, from its start), then the result."""
        topic = self.settings.topics.scenario_results
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False)
        try:
            await consumer.start()
            partitions = await topic_partitions(consumer, topic, timeout=5)
        except (KafkaError, OSError, LookupError) as exc:
            await consumer.stop()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"kafka: {exc}")
            return
        try:
            ids = [tp.partition for tp in partitions]
            tp = TopicPartition(topic, int(DefaultPartitioner()(execution.execution_id.encode(), ids, ids)))
            consumer.assign([tp])
            started_ms = int(execution.started_at.ToMilliseconds()) - 1000
            found = await consumer.offsets_for_times({tp: max(0, started_ms)})
            if found.get(tp) is not None:
                consumer.seek(tp, found[tp].offset)
            else:
                await consumer.seek_to_end(tp)
            if execution.HasField("result"):
                # ended: replay what is on the topic, then the stored result
                end = (await consumer.end_offsets([tp]))[tp]
                while await consumer.position(tp) < end:
                    for update in _read(await consumer.getmany(tp, timeout_ms=500), execution.execution_id):
                        if update.HasField("progress"):
                            yield update
                yield api.WatchExecutionResponse(result=execution.result)
                return
            while True:
                for update in _read(await consumer.getmany(tp, timeout_ms=500), execution.execution_id):
                    yield update
                    if update.HasField("result"):
                        return
        finally:
            await consumer.stop()

    # -- control ------------------------------------------------------------------------------------
    async def CancelExecution(self, request: api.CancelExecutionRequest,  # noqa: N802
                              context: grpc.aio.ServicerContext) -> api.CancelExecutionResponse:
        execution = await self._execution(request.execution_id, context)
        if vocabulary.is_terminal(execution.status):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"execution {request.execution_id} already ended "
                         f"({vocabulary.status_name(execution.status)})")
        await _redis(context, self.agent.store.request_cancel(request.execution_id,
                                                              request.reason or "cancelled through gRPC"))
        return api.CancelExecutionResponse(status=execution.status)

    async def HaltAll(self, request: api.HaltAllRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> api.HaltAllResponse:
        running = len(self.agent.executions)
        await _redis(context, self.agent.store.halt(request.reason or "halted through gRPC"))
        reverted = await self.agent.faults.reconcile(everything=True)
        return api.HaltAllResponse(reverted_faults=reverted, aborted_executions=running)

    async def Resume(self, request: api.ResumeRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> api.ResumeResponse:
        await _redis(context, self.agent.store.resume())
        return api.ResumeResponse()

    # -- scenarios ----------------------------------------------------------------------------------
    async def ValidateScenario(self, request: api.ValidateScenarioRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> api.ValidateScenarioResponse:
        source = request.file_name or "<request>"
        name, issues = "", []
        try:
            # parameters without a default get a typed placeholder, as in `coordinator validate`
            allowed = list(self.agent.policy.current.allowed_targets)
            name = load_scenario(request.scenario_yaml, source, allowed_targets=allowed,
                                 require_parameters=False).name
        except ScenarioError as exc:
            issues = exc.issues
        return api.ValidateScenarioResponse(valid=not issues, scenario_name=name, errors=[
            api.ValidationError(file=i.file, line=i.line, column=i.column, path=i.path, message=i.message)
            for i in issues])

    async def ListScenarios(self, request: api.ListScenariosRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> api.ListScenariosResponse:
        catalog = self.agent.catalog.get()
        out = []
        for name in catalog.names():
            entry = catalog.get(name)
            spec = entry.scenario.spec
            out.append(api.ScenarioSummary(
                name=name, description=entry.scenario.metadata.description or "", file=str(entry.path),
                targets=sorted(spec.targets), faults=sorted({s.fault for s in entry.scenario.fault_steps()})))
        return api.ListScenariosResponse(scenarios=out)

    # -- helpers ------------------------------------------------------------------------------------
    async def _execution(self, execution_id: str, context: grpc.aio.ServicerContext) -> api.Execution:
        if not execution_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "execution_id is required")
        record = await _redis(context, self.agent.store.get_execution(execution_id))
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown execution '{execution_id}'")
        assert record is not None
        results = await _redis(context, self.agent.store.get_results([execution_id]))
        return _execution(record, results.get(execution_id))


def _execution(record: ExecutionRecord, result: bytes | None) -> api.Execution:
    status = f"EXECUTION_STATUS_{record.status}"
    out = api.Execution(execution_id=record.execution_id, request_id=record.request_id,
                        scenario_name=record.scenario_name, labels=record.labels,
                        status=S.ExecutionStatus.Value(status) if status in S.ExecutionStatus.keys() else 0)  # type: ignore[arg-type]
    if record.started_at:
        out.started_at.FromNanoseconds(int(record.started_at * 1e9))
    if record.ended_at:
        out.ended_at.FromNanoseconds(int(record.ended_at * 1e9))
    if result:
        out.result.ParseFromString(result)
        out.status = out.result.status
    return out


def _matches(record: ExecutionRecord, request: api.ListExecutionsRequest) -> bool:
    if request.status and record.status != vocabulary.status_name(request.status):
        return False
    if request.scenario_name and record.scenario_name != request.scenario_name:
        return False
    return all(record.labels.get(k) == v for k, v in request.labels.items())


def _page_token(start: int) -> str:
    return base64.urlsafe_b64encode(f"o:{start}".encode()).decode()


def _page_start(token: str) -> int | None:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if text.startswith("o:") and int(text[2:]) >= 0:
            return int(text[2:])
    except (ValueError, UnicodeDecodeError):
        pass
    return None


def _read(batch: dict[TopicPartition, list[Any]], execution_id: str) -> list[api.WatchExecutionResponse]:
    out = []
    for records in batch.values():
        for record in records:
            if record.key != execution_id.encode():
                continue
            kind = codec.headers_to_dict(record.headers).get("ce_type")
            try:
                if kind == codec.ce_type_of(S.ExecutionProgress):
                    out.append(api.WatchExecutionResponse(
                        progress=codec.decode_event(record.value, record.headers, S.ExecutionProgress)))
                elif kind == codec.ce_type_of(S.ScenarioResult):
                    out.append(api.WatchExecutionResponse(
                        result=codec.decode_event(record.value, record.headers, S.ScenarioResult)))
            except Exception:  # noqa: BLE001, S112 - an undecodable record is not this watcher's problem
                continue
    return out


def _bad_request(message: str, issues: list[Issue]) -> status_pb2.Status:
    details = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(
            field=i.path or "<document>", description=f"{i.file}:{i.line}:{i.column}: {i.message}")
        for i in issues])
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message[:2000])
    status.details.add().Pack(details)
    return status


def _remaining(context: grpc.aio.ServicerContext, default: float) -> float:
    left = context.time_remaining()
    return max(0.05, min(default, left - 0.05)) if left is not None else default


async def _redis(context: grpc.aio.ServicerContext, call: Awaitable[Any]) -> Any:
    try:
        return await call
    except (RedisError, OSError) as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")


# -- security -------------------------------------------------------------------------------------
class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED); health checks pass."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
            yield  # pragma: no cover

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)
        self._refuse_stream = grpc.unary_stream_rpc_method_handler(refuse_stream)
        self._refuse_bidi = grpc.stream_stream_rpc_method_handler(refuse_stream)

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(f"/{HEALTH_NAME}/"):
            return await continuation(details)
        supplied = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(supplied).encode(), self._expected):
            return await continuation(details)
        if details.method.startswith("/grpc.reflection."):
            return self._refuse_bidi
        if details.method == f"/{SERVICE_NAME}/WatchExecution":
            return self._refuse_stream
        return self._refuse


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when a certificate and key are configured; mutual TLS when a client CA is too."""
    if not settings.grpc_tls_cert_file and not settings.grpc_tls_key_file:
        return None
    if not (settings.grpc_tls_cert_file and settings.grpc_tls_key_file):
        raise ValueError("TLS needs both COORDINATOR_GRPC_TLS_CERT_FILE and COORDINATOR_GRPC_TLS_KEY_FILE")
    pair = (Path(settings.grpc_tls_key_file).read_bytes(), Path(settings.grpc_tls_cert_file).read_bytes())
    client_ca = Path(settings.grpc_tls_client_ca_file).read_bytes() if settings.grpc_tls_client_ca_file else None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


# -- the server -----------------------------------------------------------------------------------
class GrpcServer:
    """The gRPC server of ``coordinator serve``: the API, health and reflection."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.settings = agent.settings
        self.port = 0
        token = self.settings.grpc_token.get_secret_value() if self.settings.grpc_token else ""
        self.server = grpc.aio.server(interceptors=[BearerTokenInterceptor(token)] if token else [])
        self.health = health.aio.HealthServicer()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        api_grpc.add_CoordinatorServiceServicer_to_server(CoordinatorServicer(self.agent), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_NAME, reflection.SERVICE_NAME), self.server)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        credentials = server_credentials(self.settings)
        if credentials is not None:
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        await self.server.start()
        self._watch = asyncio.create_task(self._follow_readiness(), name="grpc health")
        log.info("grpc listening", port=self.port, tls=credentials is not None,
                 token=bool(self.settings.grpc_token))
        return self.port

    async def _follow_readiness(self, interval: float = 2.0) -> None:
        """SERVING while the agent serves and Kafka and Redis answer; NOT_SERVING otherwise."""
        last = None
        while True:
            ok = self.agent.ready.is_set() and all(c.ok for c in await readiness(self.settings))
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            if status != last:
                for name in ("", SERVICE_NAME):
                    await self.health.set(name, status)
                log.info("grpc health", status=health_pb2.HealthCheckResponse.ServingStatus.Name(status))
                last = status
            await asyncio.sleep(interval if ok else 0.25)

    async def begin_shutdown(self) -> None:
        """Health says NOT_SERVING from now on; calls in flight go on."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float = 5.0) -> None:
        await self.begin_shutdown()
        await self.server.stop(grace)

