"""Bounded stops for ``coordinator serve``: a SIGTERM ends the process however stuck a part is.

Two bounds, one inside the event loop and one outside it:

- ``Stopping.cancel`` and ``Stopping.within`` give each step of the service's stop a few seconds;
  a task still going after them is left behind and named in the log with where it waits
  (``waits_at``), and the stop goes on with the next step (the registry entry is still removed, the
  clients still closed). The process then exits without waiting for what was left behind.
- ``Watchdog`` is a thread armed by the signal itself: if the process has not exited
  ``shutdown_drain + stop_grace`` seconds after SIGTERM (say, a call that blocks the event loop),
  it writes every thread's stack and every task's awaiting point to stderr and exits with status 1.

Faults are safe either way: each is leased in Redis before it is applied, and a lease that is no
longer renewed is reverted by whichever agent's reconciler finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import sys
import threading
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from agent.logs import get_logger

log = get_logger("agent.stopping")
T = TypeVar("T")

#: seconds the parts of the service have, once cancelled, to end
PARTS_STOP_S = 10.0
#: seconds between cancellations of a task that is still running at stop
RECANCEL_S = 1.0
#: frames of a stuck task shown in the log, innermost last
FRAMES_SHOWN = 6


def waits_at(task: asyncio.Future[Any]) -> str:
    """Where ``task`` is waiting: the coroutine frames of its await chain, outermost first, followed
    into the tasks it awaits (``file:line in function > ...``)."""
    frames: list[str] = []
    current: Any = task
    for _ in range(16):
        if not isinstance(current, asyncio.Task):
            break
        step: Any = current.get_coro()
        for _ in range(64):
            if step is None:
                break
            frame = _first(step, ("cr_frame", "ag_frame", "gi_frame"))
            if frame is not None:
                frames.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} in {frame.f_code.co_name}")
            step = _first(step, ("cr_await", "ag_await", "gi_yieldfrom"))
        current = getattr(current, "_fut_waiter", None)  # the future it awaits (asyncio keeps no public name for it)
    return " > ".join(frames[-FRAMES_SHOWN:]) or repr(task)


def _first(obj: Any, names: tuple[str, ...]) -> Any:
    return next((v for v in (getattr(obj, n, None) for n in names) if v is not None), None)


class Stopping:
    """The steps of one stop, each bounded; what had to be left behind is kept in ``left_behind``."""

    def __init__(self) -> None:
        self.left_behind: list[str] = []
        self._abandoned: set[asyncio.Future[Any]] = set()

    async def cancel(self, tasks: Iterable[asyncio.Task[Any]], seconds: float = PARTS_STOP_S) -> None:
        """Cancel ``tasks`` and wait for them to end, for at most ``seconds`` (a task left behind
        before is not waited for again).

        asyncio delivers a cancellation once, and Python 3.11's ``asyncio.wait_for`` drops one that
        lands in the same loop turn as the call it waits for completes (python/cpython#86296, fixed
        by 3.12's rewrite). An agent stopped just as it starts serving met that in the heartbeat and
        control parts: the task went on for good and the agent never exited. So, as anyio's
        level-triggered cancellation does, a task still running is cancelled again every
        ``RECANCEL_S``, and said in the log."""
        pending = {t for t in tasks if t not in self._abandoned}
        deadline = asyncio.get_running_loop().time() + seconds
        first = True
        while pending:
            for task in pending:
                if not first:
                    log.warning("still running after it was cancelled; cancelling it again", part=task.get_name(),
                                waiting_at=waits_at(task))
                task.cancel()
            first = False
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
        for task in pending:
            self._leave(task.get_name(), task, seconds)

    async def within(self, what: str, step: Awaitable[T], seconds: float) -> T | None:
        """``step``'s result (or its exception); None when it took longer than ``seconds`` and was
        left behind."""
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait([task], timeout=seconds)
        if not done:
            task.cancel()
            self._leave(what, task, seconds)
            return None
        return task.result()

    def _leave(self, what: str, task: asyncio.Future[Any], seconds: float) -> None:
        self.left_behind.append(what)
        self._abandoned.add(task)
        log.error("did not stop in time; left behind", part=what, seconds=seconds, waiting_at=waits_at(task))


class Watchdog:
    """Exits the process ``seconds`` after ``arm`` unless it has exited by then, writing first where
    every thread and task was (a thread: it fires even while the event loop is blocked)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(seconds, self._fire, args=(seconds,))
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, seconds: float) -> None:
        print(f"agent not stopped {seconds:g}s after SIGTERM; exiting. Where it was:", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):  # the loop's tasks, read from beside it: best effort
            for task in list(asyncio.all_tasks(self.loop)):
                print(f"  task {task.get_name()}: {waits_at(task)}", file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(1)
