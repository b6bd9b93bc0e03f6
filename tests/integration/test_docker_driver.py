"""The docker driver against a real Docker Engine API (the stack's podman service): containers
restarted, killed, stopped and paused, and brought back; selectors by compose service and modes;
the allow-list on the containers chosen; an agent SIGKILLed mid-fault whose paused container another
agent unpauses."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agent import client
from agent._proto.coordinator.v1 import events_pb2
from agent.devstack.engine import BASE_IMAGE, STACK_LABEL
from agent.drivers.base import FaultRequest
from agent.drivers.docker import COMPOSE_PROJECT, COMPOSE_SERVICE, DockerDriver, DockerSettings
from agent.errors import ActionError, RevertError
from agent.settings import Settings
from tests.helpers.engine import chaos, engine_env, read_all, settings_from, status
from tests.integration.test_reliability import _Agents, _one_result

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def docker_url(stack_env: dict[str, str]) -> str:
    url = stack_env.get("COORDINATOR_DOCKER_URL")
    assert url, "the local stack runs a container engine (its docker part)"
    return url


@pytest.fixture
async def engine(docker_url: str) -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker(url=docker_url) as docker:
        yield docker


@pytest.fixture
async def driver(docker_url: str) -> AsyncIterator[DockerDriver]:
    made = DockerDriver(DockerSettings(url=docker_url))
    yield made
    await made.aclose()


class Project:
    """Containers of one compose project (``sleep``, on the host's network), removed afterwards."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.name = f"p{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    async def service(self, service: str, replicas: int = 1, restart: str = "no") -> list[str]:
        names = []
        for i in range(1, replicas + 1):
            name = f"{self.name}-{service}-{i}"
            container = await self.docker.containers.create(name=name, config={
                "Image": BASE_IMAGE, "Cmd": ["/bin/sleep", "3600"], "StopSignal": "SIGKILL",
                "Labels": {COMPOSE_PROJECT: self.name, COMPOSE_SERVICE: service, STACK_LABEL: "test"},
                "HostConfig": {"NetworkMode": "host", "RestartPolicy": {"Name": restart}}})
            await container.start()
            self.made.append(name)
            names.append(name)
        return names

    async def state(self, name: str) -> dict[str, Any]:
        return (await self.docker.containers.get(name)).__getitem__("State")  # type: ignore[no-any-return]

    async def remove(self) -> None:
        for name in self.made:
            try:
                await (await self.docker.containers.get(name)).delete(force=True)
            except aiodocker.DockerError:
                pass


@pytest.fixture
async def project(engine: aiodocker.Docker) -> AsyncIterator[Project]:
    made = Project(engine)
    yield made
    await made.remove()


def request(fault: str, project: Project, service: str, parameters: dict[str, Any] | None = None,
            mode: str = "one", value: int | None = None) -> FaultRequest:
    selector = {"compose": {"project": project.name, "service": service}, "labels": {}, "mode": mode, "value": value}
    return FaultRequest(str(uuid.uuid4()), "e1", fault, service, service, selector, parameters or {}, None)


async def apply(driver: DockerDriver, wanted: FaultRequest) -> tuple[FaultRequest, dict[str, Any], dict[str, Any]]:
    resolved = await driver.resolve(wanted)
    recipe = driver.recipe(resolved)  # written to the lease before anything is touched
    return resolved, recipe, await driver.inject(resolved)


async def test_restart_ends_the_old_process_and_names_it(driver: DockerDriver, project: Project) -> None:
    [name] = await project.service("risk-monitor")
    before = await project.state(name)
    resolved, recipe, observed = await apply(driver, request("restart", project, "risk-monitor", {"timeout": 1.0}))
    after = await project.state(name)
    assert observed["touched"] == [name] and observed["ended_instance"] == str(before["Pid"])
    assert after["Running"] and after["Pid"] != before["Pid"] and after["StartedAt"] != before["StartedAt"]
    await driver.revert(recipe)
    await driver.revert(recipe)  # twice is fine
    assert (await project.state(name))["Pid"] == after["Pid"], "a running container is left as it is"


async def test_kill_stop_and_pause_are_reverted_idempotently(driver: DockerDriver, project: Project) -> None:
    [name] = await project.service("engine")
    _, killed, observed = await apply(driver, request("kill", project, "engine", {"signal": "SIGKILL"}))
    state = await project.state(name)
    assert not state["Running"] and state["ExitCode"] == 137 and observed["ended_instance"]
    await driver.revert(killed)
    assert (await project.state(name))["Running"], "kill: started again on revert"

    _, stopped, _ = await apply(driver, request("stop", project, "engine", {"timeout": 1.0}))
    assert not (await project.state(name))["Running"]
    await driver.revert(stopped)
    await driver.revert(stopped)
    assert (await project.state(name))["Running"], "stop: started again on revert"

    _, paused, observed = await apply(driver, request("pause", project, "engine"))
    assert (await project.state(name))["Paused"] and "ended_instance" not in observed, "a pause ends nothing"
    await driver.revert(paused)
    await driver.revert(paused)
    state = await project.state(name)
    assert state["Running"] and not state["Paused"], "pause: unpaused on revert"


async def test_a_killed_container_with_a_restart_policy_is_left_to_it(driver: DockerDriver, project: Project) -> None:
    [name] = await project.service("exchange", restart="always")
    before = await project.state(name)
    _, recipe, _ = await apply(driver, request("kill", project, "exchange"))
    await driver.revert(recipe)
    state = await project.state(name)
    assert state["Running"] and state["Pid"] != before["Pid"]


async def test_modes_choose_among_the_replicas_and_the_revert_brings_back_those_chosen(
        driver: DockerDriver, project: Project) -> None:
    replicas = await project.service("market-data", replicas=4)
    for mode, value, touched in (("one", None, 1), ("fixed", 3, 3), ("percent", 50, 2), ("all", None, 4)):
        resolved, recipe, observed = await apply(driver, request("pause", project, "market-data", mode=mode,
                                                                 value=value))
        paused = [n for n in replicas if (await project.state(n))["Paused"]]
        assert sorted(observed["touched"]) == paused and len(paused) == touched, (mode, paused)
        assert [c["name"] for c in recipe["containers"]] == observed["touched"], "the lease names them"
        await driver.revert(recipe)
        assert not [n for n in replicas if (await project.state(n))["Paused"]], mode


async def test_a_selector_that_matches_nothing_running_and_a_removed_container_are_handled(
        driver: DockerDriver, project: Project, engine: aiodocker.Docker) -> None:
    with pytest.raises(ActionError, match="no running container matches the selector of 'nobody'"):
        await driver.resolve(request("restart", project, "nobody"))
    [name] = await project.service("audit")
    _, recipe, _ = await apply(driver, request("stop", project, "audit"))
    await (await engine.containers.get(name)).delete(force=True)
    await driver.revert(recipe)  # removed meanwhile: nothing to bring back, no error


async def test_an_unreachable_engine_is_a_clear_retryable_error(tmp_path: Path) -> None:
    gone = DockerDriver(DockerSettings(url=f"unix://{tmp_path}/no.sock"))
    try:
        with pytest.raises(ActionError, match="the Docker engine is unreachable to list containers") as caught:
            await gone.resolve(FaultRequest("c", "e", "restart", "t", "t", {"name": "x", "labels": {}}, {}, None))
        assert caught.value.retryable
    finally:
        await gone.aclose()


# -- through the agent ------------------------------------------------------------------------------
PAUSE = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: freeze-the-risk-monitor}}
spec:
  targets:
    risk: {{driver: docker, service: risk-monitor, selector: {{compose: {{project: {project}, service: risk-monitor}},
                                                          mode: all}}}}
  steps:
    - {{name: freeze, fault: pause, target: risk, duration: {hold}}}
"""


@pytest.fixture
def agents(stack_env: dict[str, str], tmp_path: Path) -> Iterator[_Agents]:
    started = _Agents(engine_env(stack_env, "http://127.0.0.1:9/RPC2"), tmp_path)
    yield started
    for agent in started.all:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGCONT)
        agent.stop()


async def _settings(agents: _Agents) -> Settings:
    from agent import topics

    settings = settings_from(agents.env)
    await topics.apply(settings)
    return settings


async def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_paused_container_is_unpaused_by_another_agent_when_its_agent_is_killed(
        agents: _Agents, project: Project, tmp_path: Path) -> None:
    settings = await _settings(agents)
    replicas = await project.service("risk-monitor", replicas=2)
    scenario = tmp_path / "freeze.yaml"
    scenario.write_text(PAUSE.format(project=project.name, hold="120s"))
    doomed = agents.start("docker-a")
    wanted = client.build_request(str(scenario), {})
    await client.submit(settings, wanted)

    async def all_paused() -> bool:
        return all([(await project.state(n))["Paused"] for n in replicas])

    await _wait(all_paused, "the agent paused both replicas")

    async def told() -> bool:  # killed before its INJECTED event went out, no event could name them
        events = chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
        return any(e.type == events_pb2.CHAOS_EVENT_TYPE_INJECTED and sorted(e.touched) == sorted(replicas)
                   for e in events)

    await _wait(told, "the agent told of the pause")
    doomed.signal(signal.SIGKILL)
    await asyncio.to_thread(doomed.wait, 30)
    assert await all_paused(), "nobody reverts while no agent runs"
    agents.start("docker-b")

    async def none_paused() -> bool:
        states = [await project.state(n) for n in replicas]
        return all(s["Running"] and not s["Paused"] for s in states)

    await _wait(none_paused, "the second agent unpaused the replicas of the killed one", timeout=90)
    result = await _one_result(settings, wanted.request_id)
    assert status(result) == "ABORTED", result.reason
    events = [e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
              if e.execution_id == result.execution_id]
    injected = [e for e in events if e.type == events_pb2.CHAOS_EVENT_TYPE_INJECTED]
    reverted = [e for e in events if e.type == events_pb2.CHAOS_EVENT_TYPE_REVERTED]
    assert len(injected) == 1 and sorted(injected[0].touched) == sorted(replicas), "the event names the containers"
    assert len(reverted) == 1 and reverted[0].owner.startswith("docker-b"), "reverted once, by the survivor"


async def test_the_allow_list_applies_to_the_containers_a_selector_chose(
        agents: _Agents, project: Project, tmp_path: Path) -> None:
    settings = await _settings(agents)
    [name] = await project.service("risk-monitor")
    agents.env["COORDINATOR_ALLOWED_TARGETS"] = '["risk-monitor", "docker:someone-else-*"]'
    agents.start("docker-allow")
    scenario = tmp_path / "freeze.yaml"
    scenario.write_text(PAUSE.format(project=project.name, hold="1s"))
    wanted = client.build_request(str(scenario), {})
    await client.submit(settings, wanted)
    result = await _one_result(settings, wanted.request_id)
    assert f"docker '{name}' is not in the agent's allow-list" in result.reason, result.reason
    state = await project.state(name)
    assert state["Running"] and not state["Paused"], "nothing was touched"


async def test_the_engines_start_and_die_events_are_the_platform_events_of_a_compose_service(
        driver: DockerDriver, project: Project) -> None:
    [name] = await project.service("quotes")
    before = await project.state(name)
    events = driver.platform_events(0.5)
    assert events is not None
    seen: list = []

    async def read() -> None:
        async for event in events:
            if event.details.get("container") == name:
                seen.append(event)

    reading = asyncio.create_task(read())
    try:
        await asyncio.sleep(1.0)  # subscribed
        _, recipe, _ = await apply(driver, request("kill", project, "quotes"))
        await driver.revert(recipe)
        after = await project.state(name)
        await _wait(lambda: _ready(len(seen) >= 2), "an exit and a start, from the engine's own events", 30)
    finally:
        reading.cancel()
    exited, started = seen[:2]
    assert (exited.service, exited.event_type, exited.instance) == ("quotes", "process_exited", str(before["Pid"]))
    assert exited.details["exit_status"] == "137"
    assert (started.service, started.event_type, started.instance) == ("quotes", "process_started",
                                                                       str(after["Pid"]))


async def _ready(value: bool) -> bool:
    return value



async def test_a_container_that_cannot_start_fails_its_revert_with_the_engines_answer(
        driver: DockerDriver, project: Project, engine: aiodocker.Docker) -> None:
    [name] = await project.service("broken")
    _, recipe, _ = await apply(driver, request("stop", project, "broken", {"timeout": 1.0}))
    await (await engine.containers.get(name)).delete(force=True)
    replaced = await engine.containers.create(name=name, config={  # what is there now cannot run at all
        "Image": BASE_IMAGE, "Cmd": ["/bin/no-such-program"], "HostConfig": {"NetworkMode": "host"}})
    project.made.append(name)
    recipe["containers"][0]["id"] = replaced.id
    started = time.monotonic()
    with pytest.raises(RevertError, match=f"could not bring back 1 container\\(s\\): {name}: the Docker engine "
                                          "refused to start container") as caught:
        await driver.revert(recipe)
    assert caught.value.retryable, "the reconciler tries again later"
    assert time.monotonic() - started < 30, "bounded, never a hang"
