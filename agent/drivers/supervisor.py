"""Process faults on programs run by supervisord, over its XML-RPC API.

=========  ===================================  ===================================
fault      inject                               revert
=========  ===================================  ===================================
restart    stopProcess, startProcess            ensure RUNNING
kill       signalProcess(signal)                ensure RUNNING (after the supervisor
                                                had its chance to restart it)
stop       stopProcess                          startProcess
pause      signalProcess(STOP)                  signalProcess(CONT), ensure RUNNING
=========  ===================================  ===================================

XML-RPC is synchronous; calls run in a worker thread. XML parsing is hardened by defusedxml.
"""

from __future__ import annotations

import asyncio
import time
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Literal

from defusedxml.xmlrpc import monkey_patch
from pydantic import SecretStr

from agent.drivers.base import DriverSpec, FaultDriver, FaultKind, FaultRequest
from agent.errors import ActionError, RevertError
from agent.fields import NoParameters, SelectorName, Strict
from agent.settings import Settings

monkey_patch()

# supervisor's fault codes (supervisor.xmlrpc.Faults)
_BAD_NAME, _NOT_RUNNING, _ALREADY_STARTED, _SPAWN_ERROR = 10, 70, 60, 50
_STOPPED_STATES = {"STOPPED", "EXITED", "FATAL", "BACKOFF"}


Signal = Literal["SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"]


class SupervisorSelector(Strict):
    #: the supervisord program name
    program: SelectorName
    group: SelectorName | None = None


class KillParameters(Strict):
    signal: Signal = "SIGKILL"


@dataclass(frozen=True)
class SupervisorSettings:
    #: supervisord's XML-RPC endpoint (may carry credentials: a secret)
    url: SecretStr


class SupervisorDriver(FaultDriver):
    name = "supervisor"
    settings: SupervisorSettings

    #: how long revert waits for the supervisor's own autorestart before starting the program itself
    settle_s = 10.0

    def _proxy(self) -> Any:
        return xmlrpc.client.ServerProxy(self.settings.url.get_secret_value(), allow_none=True)

    async def _call(self, method: str, *args: Any) -> Any:
        def call() -> Any:
            proxy = self._proxy()
            try:
                return getattr(proxy.supervisor, method)(*args)
            finally:
                proxy("close")()

        return await asyncio.to_thread(call)

    @staticmethod
    def _program(selector: dict[str, Any]) -> str:
        program = str(selector["program"])
        group = selector.get("group")
        return f"{group}:{program}" if group else program

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        program = self._program(request.selector)
        if request.fault == "pause":
            return {"action": "continue", "program": program}
        return {"action": "ensure-running", "program": program}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        program = self._program(request.selector)
        try:
            before = await self._call("getProcessInfo", program)
            if request.fault == "restart":
                await self._stop(program)
                await self._call("startProcess", program, True)
            elif request.fault == "kill":
                await self._call("signalProcess", program, request.parameters.get("signal", "SIGKILL"))
            elif request.fault == "stop":
                await self._stop(program)
            elif request.fault == "pause":
                await self._call("signalProcess", program, "SIGSTOP")
            else:
                raise ActionError(f"the supervisor driver cannot apply fault '{request.fault}'")
            after = await self._call("getProcessInfo", program)
        except xmlrpc.client.Fault as exc:
            raise ActionError(f"supervisord refused {request.fault} of '{program}': {exc.faultString}",
                              retryable=exc.faultCode not in {_BAD_NAME}) from exc
        except OSError as exc:
            raise ActionError(f"supervisord unreachable for {request.fault} of '{program}': {exc}",
                              retryable=True) from exc
        return {"program": program, "pid_before": before.get("pid"), "state_after": after.get("statename"),
                "pid_after": after.get("pid")}

    async def revert(self, recipe: dict[str, Any]) -> None:
        program = recipe["program"]
        try:
            if recipe["action"] == "continue":
                try:
                    await self._call("signalProcess", program, "SIGCONT")
                except xmlrpc.client.Fault as exc:
                    if exc.faultCode != _NOT_RUNNING:
                        raise
            await self._ensure_running(program)
        except xmlrpc.client.Fault as exc:
            raise RevertError(f"supervisord refused to bring back '{program}': {exc.faultString}",
                              retryable=True) from exc
        except OSError as exc:
            raise RevertError(f"supervisord unreachable to bring back '{program}': {exc}", retryable=True) from exc

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        program = self._program(selector)
        if action == "start":
            await self._ensure_running(program)
        elif action == "stop":
            await self._stop(program)
        elif action == "restart":
            await self._stop(program)
            await self._call("startProcess", program, True)
        else:
            await super().rollback(action, selector)

    async def state(self, program: str) -> dict[str, Any]:
        return await self._call("getProcessInfo", program)  # type: ignore[no-any-return]

    async def _stop(self, program: str) -> None:
        try:
            await self._call("stopProcess", program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != _NOT_RUNNING:
                raise

    async def _ensure_running(self, program: str) -> None:
        deadline = time.monotonic() + self.settle_s
        while True:
            info = await self._call("getProcessInfo", program)
            state = info.get("statename")
            if state == "RUNNING":
                return
            if state in _STOPPED_STATES and (state != "BACKOFF" or time.monotonic() > deadline):
                try:
                    await self._call("startProcess", program, True)
                except xmlrpc.client.Fault as exc:
                    if exc.faultCode != _ALREADY_STARTED:
                        raise
                continue
            if time.monotonic() > deadline + self.settle_s:
                raise RevertError(f"'{program}' is still {state} after {2 * self.settle_s:.0f}s", retryable=True)
            await asyncio.sleep(0.2)


def _configure(settings: Settings) -> SupervisorSettings:
    return SupervisorSettings(url=settings.supervisor_url)


SPEC = DriverSpec(
    name="supervisor", selector=SupervisorSelector, factory=SupervisorDriver, configure=_configure,
    rollbacks=("start", "stop", "restart"), summary="processes run by supervisord (XML-RPC)",
    faults=(
        FaultKind("restart", NoParameters, False, summary="restart the process"),
        FaultKind("kill", KillParameters, False, summary="send a signal (SIGKILL by default); the supervisor brings "
                                                         "it back"),
        FaultKind("stop", NoParameters, True, summary="stop the process; started again on revert"),
        FaultKind("pause", NoParameters, True, summary="SIGSTOP the process; SIGCONT on revert"),
    ),
)
