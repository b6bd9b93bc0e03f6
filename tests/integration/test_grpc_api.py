"""The agent's gRPC API over real channels: every RPC, status codes, health, reflection from grpcurl,
TLS with a client certificate and a bearer token. The agent runs as ``coordinator serve``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from agent._proto.coordinator.v1 import coordinator_service_pb2 as api
from agent._proto.coordinator.v1 import coordinator_service_pb2_grpc as api_grpc
from agent._proto.coordinator.v1 import events_pb2
from agent.devstack import Stack
from agent.devstack.install import ensure_grpcurl
from agent.devstack.procs import free_port
from agent.settings import Settings
from tests.helpers.agent import ROOT, AgentProcess
from tests.helpers.engine import applied_settings, engine_env

S = events_pb2
GRPC_READY = r"grpc on [\d.]+:(\d+)"
SERVICE = "coordinator.v1.CoordinatorService"


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return engine_env(stack_env, "http://127.0.0.1:1/RPC2")


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    return await applied_settings(env)


@pytest.fixture(scope="module")
def agent(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[AgentProcess]:
    process = AgentProcess(env, tmp_path_factory.mktemp("grpc") / "agent.log", ready=GRPC_READY).start()
    yield process
    process.stop()


@pytest.fixture
async def stub(agent: AgentProcess) -> AsyncIterator[api_grpc.CoordinatorServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.url}") as channel:
        await _serving(channel)
        yield api_grpc.CoordinatorServiceStub(channel)


async def _serving(channel: grpc.aio.Channel, timeout: float = 30.0) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            return
        assert asyncio.get_running_loop().time() < deadline, "the service never became SERVING"
        await asyncio.sleep(0.2)


def slow_link(hold: str = "1s", *, labels: dict[str, str] | None = None) -> events_pb2.ScenarioRequest:
    request = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), scenario_name="slow-link", requester="test",
                                         labels=labels or {})
    for name, value in {"proxy": f"grpc-{uuid.uuid4().hex[:6]}", "listen": f"127.0.0.1:{free_port()}",
                        "upstream": f"127.0.0.1:{free_port()}", "hold": hold}.items():
        request.parameters[name].string_value = value
    return request


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ensure_grpcurl(), *args], capture_output=True, text=True, timeout=30, check=False)


async def test_grpcurl_lists_the_services_by_reflection_and_sees_health_follow_readiness(
    agent: AgentProcess, stub: api_grpc.CoordinatorServiceStub
) -> None:
    address = f"127.0.0.1:{agent.url}"
    listed = await asyncio.to_thread(_grpcurl, "-plaintext", address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICE, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = await asyncio.to_thread(_grpcurl, "-plaintext", address, "describe", SERVICE)
    assert "rpc SubmitExecution" in described.stdout and "rpc WatchExecution" in described.stdout
    checked = await asyncio.to_thread(_grpcurl, "-plaintext", "-d", json.dumps({"service": SERVICE}), address,
                                      "grpc.health.v1.Health/Check")
    assert json.loads(checked.stdout) == {"status": "SERVING"}, checked.stderr
    scenarios = await asyncio.to_thread(_grpcurl, "-plaintext", address, f"{SERVICE}/ListScenarios")
    listed_files = {s["name"]: s["file"] for s in json.loads(scenarios.stdout)["scenarios"]}
    assert "slow-link" in listed_files
    assert listed_files["restart-risk-monitor-during-trading"] == "restart-risk-monitor-during-trading.yaml", \
        "relative to its catalog directory: no server path"
    linked = await asyncio.to_thread(os.path.realpath, ROOT / ".venv" / "bin" / "grpcurl")
    assert linked == await asyncio.to_thread(os.path.realpath, ensure_grpcurl()), "grpcurl where the docs say it is"


async def test_reflection_answers_under_its_v1_name_too(agent: AgentProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.url}") as channel:
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            answers = [a async for a in call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=10)]
            names = {s.name for s in answers[0].list_services_response.service}
            assert {SERVICE, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} \
                <= names, (version, names)


async def test_a_submission_without_a_request_id_gets_one(stub: api_grpc.CoordinatorServiceStub) -> None:
    request = slow_link("1s")
    request.ClearField("request_id")
    submitted = await stub.SubmitExecution(api.SubmitExecutionRequest(request=request), timeout=15)
    assert submitted.execution_id and not submitted.duplicate
    assert str(uuid.UUID(submitted.request_id)) == submitted.request_id, "a new UUID, returned"


async def test_submit_runs_once_and_watch_get_and_list_follow_it(stub: api_grpc.CoordinatorServiceStub) -> None:
    request = slow_link("1s", labels={"team": f"t-{uuid.uuid4().hex[:6]}"})
    submitted = await stub.SubmitExecution(api.SubmitExecutionRequest(request=request), timeout=15)
    assert submitted.execution_id and not submitted.duplicate
    again = await stub.SubmitExecution(api.SubmitExecutionRequest(request=request), timeout=15)
    assert (again.execution_id, again.duplicate) == (submitted.execution_id, True), "same request_id: one run"

    updates = [u async for u in stub.WatchExecution(api.WatchExecutionRequest(execution_id=submitted.execution_id),
                                                    timeout=60)]
    assert updates[-1].HasField("result"), "the stream ends with the result"
    assert updates[-1].result.status == S.EXECUTION_STATUS_PASSED, updates[-1].result.reason
    phases = [u.progress.phase for u in updates if u.HasField("progress")]
    assert "steps" in phases and "revert" in phases

    got = await stub.GetExecution(api.GetExecutionRequest(execution_id=submitted.execution_id), timeout=5)
    assert got.execution.status == S.EXECUTION_STATUS_PASSED
    assert got.execution.result.execution_id == submitted.execution_id
    assert got.execution.scenario_name == "slow-link"

    # watching an ended execution replays its progress and gives the stored result
    replay = [u async for u in stub.WatchExecution(api.WatchExecutionRequest(execution_id=submitted.execution_id),
                                                   timeout=30)]
    assert replay[-1].result.status == S.EXECUTION_STATUS_PASSED and len(replay) > 1

    listed = await stub.ListExecutions(api.ListExecutionsRequest(
        status=S.EXECUTION_STATUS_PASSED, scenario_name="slow-link", labels=dict(request.labels)), timeout=5)
    assert [e.execution_id for e in listed.executions] == [submitted.execution_id]
    second = await stub.SubmitExecution(api.SubmitExecutionRequest(
        request=slow_link("1s", labels=dict(request.labels))), timeout=15)
    page = await stub.ListExecutions(api.ListExecutionsRequest(labels=dict(request.labels), page_size=1), timeout=5)
    assert [e.execution_id for e in page.executions] == [second.execution_id] and page.next_page_token
    rest = await stub.ListExecutions(api.ListExecutionsRequest(labels=dict(request.labels), page_size=1,
                                                               page_token=page.next_page_token), timeout=5)
    assert [e.execution_id for e in rest.executions] == [submitted.execution_id] and not rest.next_page_token


async def test_bad_calls_get_the_right_status_codes_and_a_bad_scenario_every_problem(
    stub: api_grpc.CoordinatorServiceStub
) -> None:
    broken = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), scenario_yaml=(
        "apiVersion: coordinator/v1\nkind: Scenario\nmetadata: {name: broken}\nspec:\n"
        "  targets: {t: {driver: toxiproxy, selector: {proxy: p}}}\n"
        "  steps:\n    - {name: s, fault: kil, target: t}\n    - {name: w, wait: soon}\n"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitExecution(api.SubmitExecutionRequest(request=broken), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    fields = {v.field: v.description for v in details.field_violations}
    assert "spec.steps[0].fault" in fields and "unknown fault 'kil'" in fields["spec.steps[0].fault"]
    assert "spec.steps[1].wait" in fields and fields["spec.steps[1].wait"].startswith("request ")

    unknown = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), scenario_name="no-such-scenario")
    assert await _code(stub.SubmitExecution(api.SubmitExecutionRequest(request=unknown), timeout=10)) == \
        grpc.StatusCode.NOT_FOUND
    assert await _code(stub.SubmitExecution(api.SubmitExecutionRequest(
        request=events_pb2.ScenarioRequest(scenario_name="slow-link")), timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(stub.GetExecution(api.GetExecutionRequest(execution_id="nope"), timeout=5)) == \
        grpc.StatusCode.NOT_FOUND
    assert await _code(stub.ListExecutions(api.ListExecutionsRequest(page_token="garbage!"), timeout=5)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link()), timeout=0.001)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED

    checked = await stub.ValidateScenario(api.ValidateScenarioRequest(
        scenario_yaml=broken.scenario_yaml, file_name="broken.yaml"), timeout=5)
    assert not checked.valid
    assert {(e.path, e.file, e.line) for e in checked.errors} >= {("spec.steps[0].fault", "broken.yaml", 7)}
    good = await stub.ValidateScenario(api.ValidateScenarioRequest(
        scenario_yaml=(ROOT / "tests/fixtures/engine/slow-link.yaml").read_text(), file_name="slow-link.yaml"),
        timeout=5)
    assert (good.valid, good.scenario_name, list(good.errors)) == (True, "slow-link", [])
    listed = await stub.ListScenarios(api.ListScenariosRequest(), timeout=5)
    flagship = next(s for s in listed.scenarios if s.name == "restart-risk-monitor-during-trading")
    assert list(flagship.faults) == ["restart"] and "risk-monitor" in flagship.targets


async def test_schedules_and_the_run_history_over_grpc(stub: api_grpc.CoordinatorServiceStub) -> None:
    name = f"grpc-{uuid.uuid4().hex[:6]}"
    doc = (f"apiVersion: coordinator/v1\nkind: Schedule\nmetadata: {{name: {name}}}\n"
           "spec: {scenario: slow-link, every: 1h, paused: true}\n")
    applied = await stub.ApplySchedule(api.ApplyScheduleRequest(schedule_yaml=doc), timeout=30)
    assert (applied.schedule.name, applied.schedule.paused, applied.schedule.interval.seconds) == (name, True, 3600)
    assert applied.schedule.requester.startswith("grpc:")
    assert name in [s.name for s in (await stub.ListSchedules(api.ListSchedulesRequest(), timeout=30)).schedules]
    resumed = await stub.PauseSchedule(api.PauseScheduleRequest(name=name, paused=False), timeout=30)
    assert resumed.schedule.paused is False
    await stub.DeleteSchedule(api.DeleteScheduleRequest(name=name), timeout=30)
    assert name not in [s.name for s in (await stub.ListSchedules(api.ListSchedulesRequest(), timeout=30)).schedules]
    assert await _code(stub.DeleteSchedule(api.DeleteScheduleRequest(name=name), timeout=30)) == \
        grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a file is never read on the agent's side
        await stub.ApplySchedule(api.ApplyScheduleRequest(schedule_yaml=doc.replace("slow-link", "/etc/x.yaml").replace(
            "every: 1h", "cron: '99 * * * *'"), file_name="s.yaml"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    assert {v.field for v in details.field_violations} == {"spec.cron"}, details  # the file is checked once valid

    submitted = await stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link("1s")), timeout=15)
    [_ async for _ in stub.WatchExecution(api.WatchExecutionRequest(execution_id=submitted.execution_id), timeout=60)]
    found = await stub.GetHistory(api.GetHistoryRequest(scenario_name="slow-link", last=500), timeout=10)
    assert found.scenario_name == "slow-link" and found.runs >= 1 and 0 <= found.pass_rate <= 1
    assert submitted.execution_id in [r.execution_id for r in found.recent]
    assert await _code(stub.GetHistory(api.GetHistoryRequest(scenario_name="never-ran"), timeout=10)) == \
        grpc.StatusCode.NOT_FOUND


async def test_cancel_halt_and_resume(stub: api_grpc.CoordinatorServiceStub) -> None:
    submitted = await stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link("60s")), timeout=15)
    watch = stub.WatchExecution(api.WatchExecutionRequest(execution_id=submitted.execution_id), timeout=60)
    async for update in watch:
        if update.HasField("progress") and update.progress.phase == "steps":
            break
    cancelled = await stub.CancelExecution(api.CancelExecutionRequest(execution_id=submitted.execution_id,
                                                                      reason="enough"), timeout=5)
    assert cancelled.status == S.EXECUTION_STATUS_RUNNING
    last = [u async for u in watch][-1]
    assert last.result.status == S.EXECUTION_STATUS_ABORTED and "enough" in last.result.reason
    assert await _code(stub.CancelExecution(api.CancelExecutionRequest(execution_id=submitted.execution_id),
                                            timeout=5)) == grpc.StatusCode.FAILED_PRECONDITION

    running = await stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link("60s")), timeout=15)
    await asyncio.sleep(1)
    halted = await stub.HaltAll(api.HaltAllRequest(reason="incident 42"), timeout=15)
    assert halted.aborted_executions >= 1
    try:
        ended = [u async for u in stub.WatchExecution(api.WatchExecutionRequest(execution_id=running.execution_id),
                                                      timeout=60)][-1]
        assert ended.result.status == S.EXECUTION_STATUS_ABORTED and "incident 42" in ended.result.reason
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link()), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "halted (incident 42)" in (caught.value.details() or "")
    finally:
        await stub.Resume(api.ResumeRequest(), timeout=5)
    after = await stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link()), timeout=15)
    assert after.execution_id


TIMES_OUT = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: times-out}}
spec:
  targets:
    link: {{driver: toxiproxy, selector: {{proxy: {proxy}, listen: "127.0.0.1:{listen}", upstream: "127.0.0.1:{up}"}}}}
  steps:
    - {{name: slow, fault: latency, target: link, duration: 30s, parameters: {{latency: 10ms}}}}
  limits: {{timeout: 2s}}
"""


async def test_cancelling_a_run_that_timed_out_is_refused_as_already_ended(
    stub: api_grpc.CoordinatorServiceStub
) -> None:
    request = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), requester="test", scenario_yaml=TIMES_OUT.format(
        proxy=f"grpc-{uuid.uuid4().hex[:6]}", listen=free_port(), up=free_port()))
    submitted = await stub.SubmitExecution(api.SubmitExecutionRequest(request=request), timeout=15)
    updates = [u async for u in stub.WatchExecution(api.WatchExecutionRequest(execution_id=submitted.execution_id),
                                                    timeout=60)]
    assert updates[-1].result.status == S.EXECUTION_STATUS_TIMED_OUT, updates[-1].result.reason
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelExecution(api.CancelExecutionRequest(execution_id=submitted.execution_id), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already ended (TIMED_OUT)" in (caught.value.details() or "")


async def test_health_turns_not_serving_when_the_agent_shuts_down(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    process = AgentProcess(env, tmp_path / "agent.log", ready=GRPC_READY).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.url}") as channel:
            await _serving(channel)
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE),
                                                               timeout=60)
            seen = []
            async for answer in stream:
                seen.append(answer.status)
                if answer.status == health_pb2.HealthCheckResponse.SERVING and len(seen) == 1:
                    process.signal(signal.SIGTERM)
                if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
            assert seen[-2:] == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
        assert process.wait(30) == 0
    finally:
        process.stop()


async def test_submit_is_unavailable_while_kafka_is_down(stack: Stack, stub: api_grpc.CoordinatorServiceStub
                                                         ) -> None:
    await asyncio.to_thread(stack.stop, "kafka")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitExecution(api.SubmitExecutionRequest(request=slow_link()), timeout=20)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "kafka" in (caught.value.details() or "")
    finally:
        await asyncio.to_thread(stack.start, "kafka")


# -- security -------------------------------------------------------------------------------------
def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make test certificates"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=coordinator-test-ca")
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *(["-extfile", "server.ext"] if name == "server" else []))
    return {name: directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def secured(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[AgentProcess, dict[str, Path]]]:
    directory = tmp_path_factory.mktemp("tls")
    files = _certificates(directory)
    process = AgentProcess({**env, "COORDINATOR_GRPC_TOKEN": "s3cret-token",
                            "COORDINATOR_GRPC_TLS_CERT_FILE": str(files["server.pem"]),
                            "COORDINATOR_GRPC_TLS_KEY_FILE": str(files["server.key"]),
                            "COORDINATOR_GRPC_TLS_CLIENT_CA_FILE": str(files["ca.pem"])},
                           directory / "agent.log", ready=GRPC_READY).start()
    yield process, files
    process.stop()
    assert "s3cret-token" not in (directory / "agent.log").read_text(), "the token never reaches the logs"


def _tls(files: dict[str, Path], *, client_cert: bool) -> grpc.ChannelCredentials:
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=files["ca.pem"].read_bytes())
    return grpc.ssl_channel_credentials(root_certificates=files["ca.pem"].read_bytes(),
                                        private_key=files["client.key"].read_bytes(),
                                        certificate_chain=files["client.pem"].read_bytes())


CALLS = {
    "SubmitExecution": api.SubmitExecutionRequest(request=events_pb2.ScenarioRequest(request_id="x")),
    "GetExecution": api.GetExecutionRequest(execution_id="x"),
    "ListExecutions": api.ListExecutionsRequest(),
    "WatchExecution": api.WatchExecutionRequest(execution_id="x"),
    "CancelExecution": api.CancelExecutionRequest(execution_id="x"),
    "HaltAll": api.HaltAllRequest(),
    "Resume": api.ResumeRequest(),
    "ValidateScenario": api.ValidateScenarioRequest(scenario_yaml="{}"),
    "ListScenarios": api.ListScenariosRequest(),
    "ApplySchedule": api.ApplyScheduleRequest(schedule_yaml="{}"),
    "ListSchedules": api.ListSchedulesRequest(),
    "PauseSchedule": api.PauseScheduleRequest(name="x"),
    "DeleteSchedule": api.DeleteScheduleRequest(name="x"),
    "GetHistory": api.GetHistoryRequest(scenario_name="x"),
}


async def test_with_tls_and_a_token_every_method_refuses_a_bad_token_and_a_missing_client_certificate(
    secured: tuple[AgentProcess, dict[str, Path]]
) -> None:
    process, files = secured
    address = f"127.0.0.1:{process.url}"
    assert set(CALLS) == set(api.DESCRIPTOR.services_by_name["CoordinatorService"].methods_by_name)
    async with grpc.aio.secure_channel(address, _tls(files, client_cert=True)) as channel:
        await _serving(channel)  # health needs no token
        stub = api_grpc.CoordinatorServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret-token"),)):
            for method, message in CALLS.items():
                call = getattr(stub, method)(message, metadata=metadata, timeout=10)
                if method == "WatchExecution":
                    call = _drain(call)
                assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED, (method, metadata)
        good = (("authorization", "Bearer s3cret-token"),)
        listed = await stub.ListScenarios(api.ListScenariosRequest(), metadata=good, timeout=10)
        assert listed.scenarios
        assert await _code(stub.GetExecution(api.GetExecutionRequest(execution_id="x"), metadata=good,
                                             timeout=10)) == grpc.StatusCode.NOT_FOUND

    # without a client certificate the TLS handshake itself is refused: no call reaches the service
    async with grpc.aio.secure_channel(address, _tls(files, client_cert=False)) as channel:
        stub = api_grpc.CoordinatorServiceStub(channel)
        code = await _code(stub.ListScenarios(api.ListScenariosRequest(),
                                              metadata=(("authorization", "Bearer s3cret-token"),), timeout=10))
        assert code == grpc.StatusCode.UNAVAILABLE
    # and a plaintext client gets nothing either
    async with grpc.aio.insecure_channel(address) as channel:
        code = await _code(api_grpc.CoordinatorServiceStub(channel).ListScenarios(api.ListScenariosRequest(),
                                                                                   timeout=10))
        assert code == grpc.StatusCode.UNAVAILABLE

    # grpcurl, an external client, with the client certificate and the token
    out = await asyncio.to_thread(_grpcurl, "-cacert", str(files["ca.pem"]), "-cert", str(files["client.pem"]),
                                  "-key", str(files["client.key"]), "-H", "authorization: Bearer s3cret-token",
                                  address, f"{SERVICE}/ListScenarios")
    assert out.returncode == 0, out.stderr
    assert json_format.Parse(out.stdout, api.ListScenariosResponse()).scenarios


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass
