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
import re
import time
import xmlrpc.client
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from defusedxml.xmlrpc import monkey_patch
from pydantic import SecretStr

from agent.drivers.base import ENDED_INSTANCE, DriverSpec, FaultDriver, FaultKind, FaultRequest, PlatformEvent
from agent.errors import ActionError, RevertError
from agent.fields import NoParameters, SelectorName, Signal, Strict
from agent.settings import Settings

monkey_patch()

# supervisor's fault codes (supervisor.xmlrpc.Faults)
_BAD_NAME, _NOT_RUNNING, _ALREADY_STARTED, _SPAWN_ERROR = 10, 70, 60, 50
_STOPPED_STATES = {"STOPPED", "EXITED", "FATAL", "BACKOFF"}



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
        observed = {"program": program, "pid_before": before.get("pid"), "state_after": after.get("statename"),
                    "pid_after": after.get("pid")}
        if request.fault in {"restart", "kill", "stop"} and before.get("pid"):
            observed[ENDED_INSTANCE] = str(before["pid"])  # the incarnation this fault ends
        return observed

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

    def platform_events(self, interval: float) -> AsyncIterator[PlatformEvent]:
        return self._watch(interval)

    async def _watch(self, interval: float) -> AsyncIterator[PlatformEvent]:
        """Poll every program's pid: a pid that goes away is ``process_exited``, a new pid is
        ``process_started``. The exit status comes from supervisord's own log ("exited: NAME (exit
        status 3; not expected)"), read from where it ended at the previous poll: a program that
        autorestarts has a new process, and no exit status in its process info, by the next poll.
        The first poll only sets the baseline."""
        last: dict[str, int] | None = None
        log = _MainLog(self._call)
        while True:
            infos = await self._call("getAllProcessInfo")
            now = time.time()
            exits = await log.exits()
            for info in infos if last is not None else []:
                name, pid, before = str(info["name"]), int(info.get("pid") or 0), (last or {}).get(str(info["name"]), 0)
                if before and pid != before:
                    state = str(info.get("statename", ""))
                    status = exits.get(name) or (str(info.get("exitstatus", "")) if not pid else "unknown")
                    yield PlatformEvent(name, "process_exited", str(before), now, {"exit_status": status,
                                                                                  "state": state})
                if pid and pid != before:
                    yield PlatformEvent(name, "process_started", str(pid), now, {"state": str(info.get("statename"))})
            last = {str(i["name"]): int(i.get("pid") or 0) for i in infos}
            await asyncio.sleep(interval)

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


def _touches(selector: dict[str, Any]) -> list[str]:
    program = str(selector.get("program", ""))
    return [f"{selector['group']}:{program}" if selector.get("group") else program]


SPEC = DriverSpec(
    name="supervisor", selector=SupervisorSelector, factory=SupervisorDriver, configure=_configure,
    rollbacks=("start", "stop", "restart"), touches=_touches,
    acts_on=lambda recipe: {str(recipe.get("program", "")).rpartition(":")[2]},
    summary="processes run by supervisord (XML-RPC)",
    faults=(
        FaultKind("restart", NoParameters, False, summary="restart the process"),
        FaultKind("kill", KillParameters, False, summary="send a signal (SIGKILL by default); the supervisor brings "
                                                         "it back"),
        FaultKind("stop", NoParameters, True, summary="stop the process; started again on revert"),
        FaultKind("pause", NoParameters, True, summary="SIGSTOP the process; SIGCONT on revert"),
    ),
)


_EXIT_LINE = re.compile(r"(?:exited|stopped): (\S+) \((?:exit status (\d+)|terminated by (\w+))")


class _MainLog:
    """supervisord's main log, read from where the previous read ended (``readLog``): the exit
    status of each program that exited since. Without a main log, it answers nothing."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._offset: int | None = None
        self._partial = ""
        self._usable = True

    async def exits(self) -> dict[str, str]:
        if not self._usable:
            return {}
        try:
            if self._offset is None:
                self._offset = await self._size()
                return {}
            text = await self._call("readLog", self._offset, 0)
        except xmlrpc.client.Fault:  # no main log file (syslog, or none)
            self._usable = False
            return {}
        self._offset += len(text.encode())
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        out: dict[str, str] = {}
        for line in lines:
            found = _EXIT_LINE.search(line)
            if found:
                out[found.group(1)] = found.group(2) or found.group(3)
        return out

    async def _size(self) -> int:
        """The log's length in bytes, found without reading it all (it may be large)."""
        low, high = 0, 1
        while await self._call("readLog", high, 1):
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if await self._call("readLog", middle, 1):
                low = middle
            else:
                high = middle
        return high if await self._call("readLog", low, 1) else low
