"""Failpoints: named places in the request path where a test can make the agent crash, stall or fail.

In the spirit of FreeBSD's fail(9) and TiKV's ``fail-rs``. Armed through one environment variable,
read once at start-up::

    COORDINATOR_FAILPOINTS="after-lease=exit;before-result=sleep(5);after-inject=1*raise"

``coordinator serve`` and ``coordinator worker`` arm them when they start. Each entry is ``NAME=[COUNT*]ACTION[(ARG)]``:

- ``exit``: the process dies at once, as from SIGKILL (no clean-up, no ``finally``); ``exit(N)``
  exits with status N instead of the signal.
- ``sleep(SECONDS)``: the task stalls there (the event loop goes on).
- ``raise``: a ``FailpointError`` is raised there, as an unexpected bug would be.
- ``hang``: the task waits there, ignoring being cancelled, as a stuck client would (until the points
  are disarmed and it is cancelled once more).
- ``block(SECONDS)``: the whole event loop is blocked there (a synchronous sleep), as a blocking call
  made on the loop would.
- ``COUNT*``: the action is taken the first COUNT times only; afterwards the point is inert.

Disarmed (the variable unset), ``await point(name)`` is one dict lookup. The points, in the order a
request meets them, are in ``POINTS`` (the worker's in ``WORKER_POINTS``, the stop's in
``STOP_POINTS``); an unknown name in the variable is refused at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass

from agent.errors import ConfigError, CoordinatorError

ENV = "COORDINATOR_FAILPOINTS"

POINTS = (
    "after-consume",      # a request record was fetched; nothing done with it yet
    "after-claim",        # its request id is claimed and its execution record written (one step)
    "after-record",       # the execution is recorded RUNNING; no step yet
    "after-lease",        # a fault's lease is written; the fault is not applied yet
    "after-inject",       # the fault is applied; no chaos event yet
    "after-chaos-event",  # the INJECTED chaos event is published
    "before-result",      # the final result is built; not published yet
    "after-result",       # the final result is published and marked published
)
#: met outside the request path
STOP_POINTS = (
    "part-stopping",      # a part of ``coordinator serve`` (ingress, scheduler, ...) is being cancelled at stop
)
#: the stream worker's (``coordinator worker``)
WORKER_POINTS = (
    "worker-route",       # the worker's intake fetched audit events; they are not routed yet
)

_ENTRY = re.compile(r"^(?:(?P<count>\d+)\*)?(?P<action>exit|sleep|raise|hang|block)(?:\((?P<arg>[^)]*)\))?$")


class FailpointError(CoordinatorError):
    """Raised by a failpoint armed with ``raise``."""


@dataclass
class _Armed:
    action: str
    arg: str | None
    remaining: int | None


_armed: dict[str, _Armed] = {}


def parse(spec: str) -> dict[str, _Armed]:
    """``"a=exit;b=2*sleep(1)"`` -> armed points; ``ConfigError`` naming every bad entry."""
    armed: dict[str, _Armed] = {}
    problems = []
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        name, _, action = entry.partition("=")
        name = name.strip()
        match = _ENTRY.match(action.strip())
        if name not in POINTS + WORKER_POINTS + STOP_POINTS:
            problems.append(f"unknown failpoint '{name}' (known: {', '.join(POINTS + WORKER_POINTS + STOP_POINTS)})")
        elif match is None:
            problems.append(f"failpoint '{name}': expected [COUNT*]exit|sleep(S)|raise|hang|block(S), got '{action}'")
        elif match["action"] in ("sleep", "block") and not _is_number(match["arg"]):
            problems.append(f"failpoint '{name}': {match['action']} needs seconds, e.g. {match['action']}(2.5)")
        else:
            count = int(match["count"]) if match["count"] else None
            armed[name] = _Armed(match["action"], match["arg"], count)
    if problems:
        raise ConfigError(f"{ENV}: " + "; ".join(problems))
    return armed


def arm(spec: str) -> None:
    """Arm the points in ``spec`` (replacing any armed before); ``""`` disarms everything."""
    _armed.clear()
    _armed.update(parse(spec))


def armed() -> list[str]:
    return sorted(_armed)


async def point(name: str) -> None:
    """Pass through the failpoint ``name``: nothing happens unless it is armed."""
    if not _armed:
        return
    found = _armed.get(name)
    if found is None or found.remaining == 0:
        return
    if found.remaining is not None:
        found.remaining -= 1
    if found.action == "exit":
        if found.arg:
            os._exit(int(found.arg))
        os.kill(os.getpid(), signal.SIGKILL)
    elif found.action == "sleep":
        await asyncio.sleep(float(found.arg or 0))
    elif found.action == "block":
        time.sleep(float(found.arg or 0))  # noqa: ASYNC251 - on purpose: the loop stops with it
    elif found.action == "hang":
        while _armed.get(name) is found:  # until disarmed (and woken)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)
    else:
        raise FailpointError(f"failpoint '{name}' fired")


def _is_number(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True

