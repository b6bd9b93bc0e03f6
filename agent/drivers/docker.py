"""Process faults on containers, over the Docker Engine API (aiodocker; any engine that serves the
API: Docker, or podman's ``podman system service``).

=========  =======================================  ===========================================
fault      inject                                   revert
=========  =======================================  ===========================================
restart    POST /containers/{id}/restart?t=timeout  ensure running
kill       POST /containers/{id}/kill?signal=       ensure running (after the container's restart
                                                    policy had its chance)
stop       POST /containers/{id}/stop?t=timeout     start
pause      POST /containers/{id}/pause              unpause, ensure running
=========  =======================================  ===========================================

A selector names a container (``name``), a docker-compose service (``compose: {project, service}``,
read from the labels compose puts on its containers) or any set of ``labels``. When it matches
several running containers, ``mode`` picks which the fault touches, as Chaos Mesh does: ``one`` (at
random, the default), ``all``, ``fixed`` (``value`` of them, at random) or ``percent`` (``value`` per
cent of them, at least one). The choice is made before the lease is written (``resolve``), so the
lease, the chaos event and the journal name exactly the containers touched, the allow-list is
applied to them, and any agent can revert them after a crash: the recipe lists their ids.

A fault that ends a container's process (restart, kill, stop) names the incarnation it ended: the
container's main process id on the host (``State.Pid``), one per container touched. The engine's own
``start`` and ``die`` events become the agent's platform audit events (``process_started``,
``process_exited`` with the exit code), whoever caused them.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from pydantic import Field, model_validator

from agent.drivers.base import (
    ENDED_INSTANCE,
    TOUCHED,
    Choosing,
    DriverSpec,
    FaultDriver,
    FaultKind,
    FaultRequest,
    PlatformEvent,
    choose,
)
from agent.errors import ActionError, RevertError
from agent.fields import Duration, NoParameters, SelectorName, Signal, Strict
from agent.settings import Settings

#: a label key as Docker allows it (reverse-DNS names, compose's ``com.docker.compose.service``)
LabelKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")]
COMPOSE_PROJECT, COMPOSE_SERVICE = "com.docker.compose.project", "com.docker.compose.service"
_DEFAULT_SOCKET = Path("/var/run/docker.sock")
#: the status aiodocker gives a DockerError when it could not reach the engine at all
_NO_CONNECTION = 900


class ComposeService(Strict):
    #: the compose project (by default the directory compose ran in) and the service in it
    project: SelectorName
    service: SelectorName


class DockerSelector(Choosing):
    #: one container, by name
    name: SelectorName | None = None
    #: the containers of a docker-compose service
    compose: ComposeService | None = None
    #: containers carrying every one of these labels
    labels: dict[LabelKey, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_way(self) -> DockerSelector:
        if self.name is not None and (self.compose is not None or self.labels):
            raise ValueError("select containers by name, or by compose service and labels, not both")
        if self.name is None and self.compose is None and not self.labels:
            raise ValueError("a docker selector needs name, compose or labels")
        return self


class StopParameters(Strict):
    #: how long the container may take to stop before it is killed (Docker's ``t``)
    timeout: Duration = 10.0


class KillParameters(Strict):
    signal: Signal = "SIGKILL"


@dataclass(frozen=True)
class DockerSettings:
    url: str
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True


def engine_url(settings: DockerSettings) -> str | None:
    """Where the engine is: the setting, else ``DOCKER_HOST``, else the default socket when it exists;
    None when there is none."""
    if settings.url:
        return settings.url
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return f"unix://{_DEFAULT_SOCKET}" if _DEFAULT_SOCKET.is_socket() else None


def labels_of(selector: dict[str, Any]) -> dict[str, str]:
    """The labels a selector asks for, compose's included."""
    labels = dict(selector.get("labels") or {})
    compose = selector.get("compose")
    if compose:
        labels.update({COMPOSE_PROJECT: compose["project"], COMPOSE_SERVICE: compose["service"]})
    return labels


class DockerDriver(FaultDriver):
    name = "docker"
    settings: DockerSettings

    #: how long revert leaves a container with a restart policy to come back on its own
    settle_s = 10.0

    def __init__(self, settings: DockerSettings) -> None:
        super().__init__(settings)
        self._client: aiodocker.Docker | None = None

    # -- the engine ----------------------------------------------------------------------------------
    def _docker(self) -> aiodocker.Docker:
        if self._client is None:
            url = engine_url(self.settings)
            if url is None:
                raise ActionError("no Docker engine: set COORDINATOR_DOCKER_URL or DOCKER_HOST "
                                  "(e.g. unix:///var/run/docker.sock)")
            self._client = aiodocker.Docker(url=url, ssl_context=self._tls() if url.startswith("tcp") else None)
        return self._client

    def _tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if not (s.tls_ca or s.tls_cert):
            return None
        context = ssl.create_default_context(cafile=s.tls_ca or None)
        if not s.tls_verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if s.tls_cert:
            context.load_cert_chain(s.tls_cert, s.tls_key or None)
        return context

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]],
                    error: type[ActionError | RevertError] = ActionError) -> Any:
        """One engine call; its failures as the driver's errors, with the engine's own answer."""
        try:
            return await call()
        except DockerError as exc:
            if exc.status == _NO_CONNECTION:
                raise error(f"the Docker engine is unreachable to {what}: {exc.message}", retryable=True) from exc
            raise error(f"the Docker engine refused to {what}: {exc.message} (HTTP {exc.status})",
                        retryable=exc.status >= 500) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise error(f"the Docker engine is unreachable to {what}: {type(exc).__name__}: {exc}",
                        retryable=True) from exc

    async def _inspect(self, container_id: str) -> dict[str, Any] | None:
        """A container's details, None when it is gone."""
        try:
            return await self._docker().containers.container(container_id).show()
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise

    async def matching(self, selector: dict[str, Any], running: bool, every: bool = False) -> list[dict[str, str]]:
        """Every container the selector matches (id and name), only the running ones if asked;
        ``every``: an empty selector matches every container."""
        if not every and not (selector.get("name") or labels_of(selector)):
            return []  # a selector that names nothing matches nothing
        filters: dict[str, list[str]] = {}
        labels = labels_of(selector)
        if labels:
            filters["label"] = [f"{k}={v}" for k, v in sorted(labels.items())]
        if selector.get("name"):
            filters["name"] = [str(selector["name"])]
        if running:
            filters["status"] = ["running"]
        found = await self._call("list containers", lambda: self._docker().containers.list(
            all=True, filters=json.dumps(filters)))
        out = []
        for container in found:
            data = container._container
            names = [n.lstrip("/") for n in data.get("Names") or []]
            if selector.get("name") and selector["name"] not in names:
                continue  # the engine's name filter matches parts of names too
            out.append({"id": str(data["Id"]), "name": names[0] if names else str(data["Id"])[:12]})
        return out

    # -- faults --------------------------------------------------------------------------------------
    async def resolve(self, request: FaultRequest) -> FaultRequest:
        candidates = await self.matching(request.selector, running=True)
        if not candidates:
            raise ActionError(f"no running container matches the selector of '{request.target_name}' "
                              f"({_describe(request.selector)})")
        chosen = choose(candidates, request.selector.get("mode", "one"), request.selector.get("value"))
        return replace(request, selector={**request.selector, "chosen": chosen})

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        chosen = request.selector.get("chosen")
        if not chosen:
            raise ActionError("the docker driver chooses its containers before the lease (resolve) is written")
        return {"action": "unpause" if request.fault == "pause" else "ensure-running", "containers": chosen}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        chosen: list[dict[str, str]] = request.selector["chosen"]
        results = await asyncio.gather(*(self._apply(request, c) for c in chosen), return_exceptions=True)
        failed = [(c, r) for c, r in zip(chosen, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            applied = [c["name"] for c, r in zip(chosen, results, strict=True) if not isinstance(r, BaseException)]
            detail = "; ".join(f"{c['name']}: {r}" for c, r in failed)
            raise ActionError(f"{request.fault} failed on {len(failed)} of {len(chosen)} container(s): {detail}"
                              + (f" (applied to {', '.join(applied)}: reverted with the rest)" if applied else ""),
                              retryable=all(getattr(r, "retryable", False) for _, r in failed))
        before = {c["name"]: r for c, r in zip(chosen, results, strict=True) if not isinstance(r, BaseException)}
        observed: dict[str, Any] = {"containers": before, TOUCHED: [c["name"] for c in chosen]}
        ended = [str(r["pid_before"]) for r in before.values() if r.get("pid_before")]
        if request.fault in {"restart", "kill", "stop"} and ended:
            observed[ENDED_INSTANCE] = ",".join(ended)  # the incarnations this fault ends
        return observed

    async def _apply(self, request: FaultRequest, chosen: dict[str, str]) -> dict[str, Any]:
        container = self._docker().containers.container(chosen["id"])
        what = f"{request.fault} container '{chosen['name']}'"
        state = (await self._call(f"inspect container '{chosen['name']}'", container.show)).get("State", {})
        seconds = max(0, math.ceil(float(request.parameters.get("timeout", 10.0))))
        if request.fault == "restart":
            await self._call(what, lambda: container.restart(t=seconds))
        elif request.fault == "stop":
            await self._call(what, lambda: container.stop(t=seconds))
        elif request.fault == "kill":
            await self._call(what, lambda: container.kill(signal=request.parameters.get("signal", "SIGKILL")))
        elif request.fault == "pause":
            await self._call(what, container.pause)
        else:
            raise ActionError(f"the docker driver cannot apply fault '{request.fault}'")
        return {"pid_before": state.get("Pid"), "started_before": state.get("StartedAt")}

    async def revert(self, recipe: dict[str, Any]) -> None:
        containers: list[dict[str, str]] = recipe["containers"]
        results = await asyncio.gather(*(self._bring_back(c, recipe["action"] == "unpause") for c in containers),
                                       return_exceptions=True)
        failed = [(c, r) for c, r in zip(containers, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            detail = "; ".join(f"{c['name']}: {r}" for c, r in failed)
            raise RevertError(f"could not bring back {len(failed)} container(s): {detail}", retryable=True)

    async def _bring_back(self, chosen: dict[str, str], unpause: bool) -> None:
        """Running and not paused again, idempotently; a container that was removed is left alone."""
        name = chosen["name"]
        container = self._docker().containers.container(chosen["id"])
        deadline = time.monotonic() + self.settle_s
        while True:
            info = await self._call(f"inspect container '{name}'", lambda: self._inspect(chosen["id"]), RevertError)
            if info is None:
                return  # removed: nothing left to bring back
            state = info.get("State", {})
            if state.get("Paused"):
                await self._call(f"unpause container '{name}'", container.unpause, RevertError)
                continue
            if state.get("Running"):
                return
            if time.monotonic() > deadline + self.settle_s:  # a container that will not stay up: retried later
                raise RevertError(f"container '{name}' is still {state.get('Status') or 'not running'} after "
                                  f"{2 * self.settle_s:.0f}s", retryable=True)
            policy = ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
            if state.get("Restarting") or (policy != "no" and not unpause and time.monotonic() < deadline):
                await asyncio.sleep(0.2)  # its restart policy brings it back on its own
                continue
            await self._call(f"start container '{name}'", container.start, RevertError)

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        """A scenario's rollback acts on every container its selector matches (``mode`` aside)."""
        containers = await self.matching(selector, running=False)
        if action == "start":
            await asyncio.gather(*(self._bring_back(c, False) for c in containers))
        elif action == "unpause":
            await asyncio.gather(*(self._bring_back(c, True) for c in containers))
        else:
            await super().rollback(action, selector)

    def platform_events(self, interval: float) -> AsyncIterator[PlatformEvent] | None:
        if engine_url(self.settings) is None:
            return None  # no engine here: nothing to watch (faults on containers would say so)
        return self._watch()


    async def _watch(self) -> AsyncIterator[PlatformEvent]:
        """The engine's own container events (``start``, ``die``), as they happen: a container's
        process that exits is ``process_exited`` (its exit code), a new one ``process_started``. The
        service is the compose service when the container has one, else the container's name; the
        instance its main process id on the host, read when it starts (and for those running when
        the watch begins), as the faults name the incarnations they end. (The stream is filtered
        here: podman's Docker API does not apply an ``event`` filter.)"""
        docker = self._docker()
        known: dict[str, tuple[str, str]] = {}  # container id -> (service, pid)
        subscriber = docker.events.subscribe(filters=json.dumps({"type": ["container"]}))  # type: ignore[no-untyped-call]
        try:
            for container in await self.matching({}, running=True, every=True):
                await self._know(container["id"], known)
            while True:
                event = await subscriber.get()
                if event is None:
                    raise ActionError("the Docker engine's event stream ended")
                seen = await self._platform_event(event, known)
                if seen is not None:
                    yield seen
        finally:
            await docker.events.stop()  # type: ignore[no-untyped-call]

    async def _know(self, container_id: str, known: dict[str, tuple[str, str]]) -> tuple[str, str]:
        """A container's service (its compose service, else its name) and main process id."""
        info = await self._inspect(container_id) or {}
        labels = (info.get("Config") or {}).get("Labels") or {}
        name = str(info.get("Name") or container_id[:12]).lstrip("/")
        known[container_id] = (str(labels.get(COMPOSE_SERVICE) or name),
                               str((info.get("State") or {}).get("Pid") or ""))
        return known[container_id]

    async def _platform_event(self, event: dict[str, Any], known: dict[str, tuple[str, str]]) -> PlatformEvent | None:
        action = str(event.get("Action") or event.get("status") or "")
        if str(event.get("Type") or "container") != "container" or action not in {"start", "die"}:
            return None
        actor = event.get("Actor") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        attributes: dict[str, str] = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        nanos = event.get("timeNano")
        at = int(nanos) / 1e9 if nanos else time.time()
        details = {"container": attributes.get("name") or container_id[:12]}
        if action == "start":
            service, pid = await self._know(container_id, known)
            return PlatformEvent(service, "process_started", pid, at, {**details, "state": "running"})
        service, pid = known.pop(container_id, (attributes.get(COMPOSE_SERVICE) or details["container"], ""))
        return PlatformEvent(service, "process_exited", pid or "unknown", at,
                             {**details, "exit_status": attributes.get("exitCode", "unknown"), "state": "exited"})

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def _describe(selector: dict[str, Any]) -> str:
    if selector.get("name"):
        return f"name {selector['name']}"
    return ", ".join(f"{k}={v}" for k, v in sorted(labels_of(selector).items()))


def _configure(settings: Settings) -> DockerSettings:
    return DockerSettings(url=settings.docker_url, tls_ca=settings.docker_tls_ca, tls_cert=settings.docker_tls_cert,
                          tls_key=settings.docker_tls_key, tls_verify=settings.docker_tls_verify)


def _touches(selector: dict[str, Any]) -> list[str]:
    """The containers chosen (at injection), else the one named."""
    chosen = selector.get("chosen")
    if chosen:
        return [str(c["name"]) for c in chosen]
    return [str(selector["name"])] if selector.get("name") else []


SPEC = DriverSpec(
    name="docker", selector=DockerSelector, factory=DockerDriver, configure=_configure,
    rollbacks=("start", "unpause"), touches=_touches,
    acts_on=lambda recipe: {str(c.get("name")) for c in recipe.get("containers") or []},
    summary="containers, over the Docker Engine API",
    faults=(
        FaultKind("restart", StopParameters, False, summary="restart the container (stopped within timeout)"),
        FaultKind("kill", KillParameters, False, summary="send a signal (SIGKILL by default); its restart policy "
                                                         "or the revert brings it back"),
        FaultKind("stop", StopParameters, True, summary="stop the container; started again on revert"),
        FaultKind("pause", NoParameters, True, summary="freeze the container (cgroup freezer); unpaused on revert"),
    ),
)
