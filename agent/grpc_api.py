"""The agent's gRPC API (``coordinator.v1.CoordinatorService``), served by ``coordinator serve``.

Each call is one command or query of the engine (``agent.engine.engine.Engine``); this module only
translates. Submissions take the Kafka path: the request is validated (so a bad scenario is refused
at once, with every problem as a field violation), published to the requests topic, and the call
returns when an agent has claimed it in Redis, so a gRPC submission and a Kafka request with the
same ``request_id`` run once. Status codes, from the engine's error types (``agent.errors``):

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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from agent._proto.coordinator.v1 import coordinator_service_pb2 as api
from agent._proto.coordinator.v1 import coordinator_service_pb2_grpc as api_grpc
from agent._proto.coordinator.v1 import events_pb2
from agent.engine.engine import Engine
from agent.errors import CoordinatorError, InvalidParameters, Issue, ScenarioError
from agent.health import readiness
from agent.logs import get_logger
from agent.settings import Settings

log = get_logger("agent.grpc")
SERVICE_NAME = api.DESCRIPTOR.services_by_name["CoordinatorService"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
MAX_PAGE = 500
SUBMIT_WAIT = 10.0  # seconds a submission waits for an agent to claim it, when the call has no deadline


class CoordinatorServicer(api_grpc.CoordinatorServiceServicer):
    """Each call is one engine command or query; the status code comes from the error's type."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def SubmitExecution(self, request: api.SubmitExecutionRequest,  # noqa: N802 - gRPC names
                              context: grpc.aio.ServicerContext) -> api.SubmitExecutionResponse:
        submitted = request.request
        async with _answering(context):
            done = await self.engine.submit(submitted, wait=_remaining(context, SUBMIT_WAIT))
        return api.SubmitExecutionResponse(execution_id=done.execution_id, request_id=done.request_id,
                                           duplicate=done.duplicate)

    async def GetExecution(self, request: api.GetExecutionRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> api.GetExecutionResponse:
        async with _answering(context):
            return api.GetExecutionResponse(execution=await self.engine.get(request.execution_id))

    async def ListExecutions(self, request: api.ListExecutionsRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> api.ListExecutionsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be 0..{MAX_PAGE}")
        size = request.page_size or 50
        start = _page_start(request.page_token)
        if start is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this server gave")
        assert start is not None
        async with _answering(context):
            page, more = await self.engine.list(status=request.status, scenario_name=request.scenario_name,
                                                labels=dict(request.labels), offset=start, limit=size)
        return api.ListExecutionsResponse(executions=page, next_page_token=_page_token(start + size) if more else "")

    async def WatchExecution(self, request: api.WatchExecutionRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> AsyncIterator[api.WatchExecutionResponse]:
        async with _answering(context):
            async for update in self.engine.watch(request.execution_id):
                yield update

    async def CancelExecution(self, request: api.CancelExecutionRequest,  # noqa: N802
                              context: grpc.aio.ServicerContext) -> api.CancelExecutionResponse:
        async with _answering(context):
            status = await self.engine.cancel(request.execution_id, request.reason or "cancelled through gRPC")
        return api.CancelExecutionResponse(status=status)  # type: ignore[arg-type]

    async def HaltAll(self, request: api.HaltAllRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> api.HaltAllResponse:
        async with _answering(context):
            outcome = await self.engine.halt(request.reason or "halted through gRPC")
        return api.HaltAllResponse(reverted_faults=outcome.reverted_faults,
                                   aborted_executions=outcome.aborted_executions)

    async def Resume(self, request: api.ResumeRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> api.ResumeResponse:
        async with _answering(context):
            await self.engine.resume()
        return api.ResumeResponse()

    async def ValidateScenario(self, request: api.ValidateScenarioRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> api.ValidateScenarioResponse:
        checked = self.engine.validate(request.scenario_yaml, request.file_name or "<request>")
        return api.ValidateScenarioResponse(valid=not checked.issues, scenario_name=checked.scenario_name, errors=[
            api.ValidationError(file=i.file, line=i.line, column=i.column, path=i.path, message=i.message)
            for i in checked.issues])

    async def ListScenarios(self, request: api.ListScenariosRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> api.ListScenariosResponse:
        async with _answering(context):
            return api.ListScenariosResponse(scenarios=self.engine.scenarios())

    async def ApplySchedule(self, request: api.ApplyScheduleRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> api.ApplyScheduleResponse:
        async with _answering(context):
            applied = await self.engine.apply_schedule(request.schedule_yaml, request.file_name or "<request>",
                                                       requester=_peer(context))
        return api.ApplyScheduleResponse(schedule=applied)

    async def ListSchedules(self, request: api.ListSchedulesRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> api.ListSchedulesResponse:
        async with _answering(context):
            return api.ListSchedulesResponse(schedules=await self.engine.list_schedules())

    async def PauseSchedule(self, request: api.PauseScheduleRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> api.PauseScheduleResponse:
        async with _answering(context):
            return api.PauseScheduleResponse(schedule=await self.engine.pause_schedule(request.name, request.paused))

    async def DeleteSchedule(self, request: api.DeleteScheduleRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> api.DeleteScheduleResponse:
        async with _answering(context):
            await self.engine.delete_schedule(request.name)
        return api.DeleteScheduleResponse()

    async def GetHistory(self, request: api.GetHistoryRequest,  # noqa: N802
                         context: grpc.aio.ServicerContext) -> api.GetHistoryResponse:
        if not 0 <= request.last <= 100_000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "last must be 0..100000")
        async with _answering(context):
            found = await self.engine.history_of(request.scenario_name, request.last or 50)
        return _history(found)


def _peer(context: grpc.aio.ServicerContext) -> str:
    return f"grpc:{context.peer()}"


def _duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def _history(found: dict[str, Any]) -> api.GetHistoryResponse:
    """``agent.history.as_dict`` as the API's message."""
    out = api.GetHistoryResponse(scenario_name=found["scenario"], runs=found["runs"], passed=found["passed"],
                                 pass_rate=found["pass_rate"] or 0.0, resilience_score=found["score"] or 0.0,
                                 target_scores=found["targets"])
    for name, e in found["expectations"].items():
        out.expectations.add(name=name, runs=e["runs"], passed=e["passed"], time_to_recover_p50=_duration(e["ttr_p50"]),
                             time_to_recover_p95=_duration(e["ttr_p95"]))
    for run in found["recent"]:
        one = out.recent.add(execution_id=run["execution_id"], status=events_pb2.ExecutionStatus.Value(
            f"EXECUTION_STATUS_{run['status']}"), labels=run["labels"])
        one.ended_at.FromNanoseconds(int(run["ended_at"] * 1e9))
        for name, o in run["expectations"].items():
            if o["ttr"] is not None:
                one.time_to_recover[name].FromNanoseconds(int(o["ttr"] * 1e9))
    return out


@contextlib.asynccontextmanager
async def _answering(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Turn the engine's typed errors into status codes: a bad scenario as INVALID_ARGUMENT with
    every problem as a field violation; anything else by its type's ``grpc_status``."""
    try:
        yield
    except ScenarioError as exc:
        head = "invalid-parameters" if isinstance(exc, InvalidParameters) else "invalid-scenario"
        await context.abort_with_status(rpc_status.to_status(
            _bad_request(f"{head}: " + "; ".join(str(i) for i in exc.issues), exc.issues)))
    except CoordinatorError as exc:
        await context.abort(grpc.StatusCode[exc.grpc_status], str(exc))
    except TimeoutError as exc:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))


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


# -- security -------------------------------------------------------------------------------------
class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
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
#: the stable name of the reflection service (grpcurl and Postman ask for it first)
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _serve_reflection(server: grpc.aio.Server, services: tuple[str, ...]) -> None:
    """Server reflection under both its names: ``grpc.reflection.v1alpha`` (grpcio-reflection's) and
    ``grpc.reflection.v1``, whose messages are the same on the wire (same fields and numbers), so one
    servicer answers both."""
    names = (*services, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}),))


class GrpcServer:
    """The gRPC server of ``coordinator serve``: the API, health and reflection."""

    def __init__(self, engine: Engine, settings: Settings, serving: Callable[[], bool]) -> None:
        self.engine = engine
        self.settings = settings
        #: does the service serve (its engine started)? health follows it and Kafka's and Redis's readiness
        self.serving = serving
        self.port = 0
        token = self.settings.grpc_token.get_secret_value() if self.settings.grpc_token else ""
        self.server = grpc.aio.server(interceptors=[BearerTokenInterceptor(token)] if token else [])
        self.health = health.aio.HealthServicer()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        api_grpc.add_CoordinatorServiceServicer_to_server(  # type: ignore[no-untyped-call]
            CoordinatorServicer(self.engine), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        _serve_reflection(self.server, (SERVICE_NAME, HEALTH_NAME))
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
            ok = self.serving() and all(c.ok for c in await readiness(self.settings))
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

