"""Platform audit events from what supervisord's process table shows (its XML-RPC answers replayed),
and their publication: one event per change, the cause's correlation id, an identity that is the
same for every agent. supervisord itself is exercised in tests/integration/test_flagship.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent._proto.coordinator.v1 import events_pb2
from agent.drivers.base import PlatformEvent
from agent.drivers.supervisor import SupervisorDriver, SupervisorSettings
from agent.platform import PlatformWatch
from agent.store import Lease


def answers(*tables: dict[str, tuple[int, str, int]], logs: list[str] | None = None) -> Any:
    """getAllProcessInfo answers: program -> (pid, state, exit status), one table per poll; and
    supervisord's main log, which grows by ``logs[i]`` at poll i."""
    queue = [[{"name": n, "group": n, "pid": pid, "statename": state, "exitstatus": status}
              for n, (pid, state, status) in table.items()] for table in tables]
    growth = list(logs or [])
    main_log = ["2026-11-26 10:00:00,000 INFO supervisord started with pid 1\n"]

    async def call(method: str, *args: Any) -> Any:
        text = "".join(main_log)
        if method == "readLog":
            offset, length = args
            return text[offset:offset + length] if length else text[offset:]
        assert method == "getAllProcessInfo"
        if not queue:
            raise ConnectionRefusedError("supervisord went away")
        if growth:
            main_log.append(growth.pop(0))
        return queue.pop(0)

    return call


async def events_of(driver: SupervisorDriver) -> list[tuple[str, str, str, str]]:
    out = []
    stream = driver.platform_events(0.0)
    assert stream is not None
    try:
        async for event in stream:
            out.append((event.service, event.event_type, event.instance, event.details.get("exit_status", "")))
    except ConnectionRefusedError:
        pass
    return out


async def test_pid_changes_become_exits_and_starts_and_the_first_poll_is_only_a_baseline() -> None:
    driver = SupervisorDriver(SupervisorSettings(url=None))  # type: ignore[arg-type]
    driver._call = answers(  # type: ignore[method-assign]
        {"risk": (100, "RUNNING", 0), "engine": (200, "RUNNING", 0)},
        {"risk": (0, "BACKOFF", 3), "engine": (200, "RUNNING", 0)},   # crashed
        {"risk": (101, "STARTING", 3), "engine": (200, "RUNNING", 0)},  # started again
        {"risk": (102, "RUNNING", 3), "engine": (0, "STOPPED", 0)},     # crashed and back within one poll
    )
    assert await events_of(driver) == [
        ("risk", "process_exited", "100", "3"),
        ("risk", "process_started", "101", ""),
        ("risk", "process_exited", "101", "unknown"), ("risk", "process_started", "102", ""),
        ("engine", "process_exited", "200", "0"),
    ]


async def test_the_exit_status_of_a_process_restarted_between_two_polls_comes_from_supervisords_log() -> None:
    driver = SupervisorDriver(SupervisorSettings(url=None))  # type: ignore[arg-type]
    driver._call = answers(  # type: ignore[method-assign]
        {"risk": (100, "RUNNING", 0)},
        {"risk": (101, "STARTING", 0)},  # exited with 3 and autorestarted since the last poll
        {"risk": (0, "STOPPED", 0)},
        logs=["", "x INFO exited: risk (exit status 3; not expected)\nx INFO spawned: 'risk' with pid 101\n",
              "x INFO stopped: risk (terminated by SIGKILL)\n"])
    assert await events_of(driver) == [
        ("risk", "process_exited", "100", "3"), ("risk", "process_started", "101", ""),
        ("risk", "process_exited", "101", "SIGKILL"),
    ]


class Sent:
    def __init__(self) -> None:
        self.events: list[tuple[events_pb2.AuditEvent, str]] = []

    async def audit(self, event: events_pb2.AuditEvent, *, source: str) -> None:
        self.events.append((event, source))


class Faults:
    def __init__(self, leases: list[Lease]) -> None:
        self.active = {lease.correlation_id: type("Active", (), {"lease": lease})() for lease in leases}


async def test_published_platform_events_name_their_cause_and_are_the_same_from_every_agent() -> None:
    lease = Lease(correlation_id="cid-1", execution_id="e", driver="supervisor", target="rm", service="risk-monitor",
                  fault="stop", step_name="s", recipe={"action": "ensure-running", "program": "sim:risk"},
                  owner="a", created_at=0, expires_at=0)
    sent = Sent()
    watch = PlatformWatch(None, sent, Faults([lease]), 0.1)  # type: ignore[arg-type]
    seen = PlatformEvent("risk", "process_exited", "100", time.time(), {"exit_status": "0", "state": "STOPPED"})
    await watch._publish("supervisor", seen)
    await watch._publish("supervisor", PlatformEvent("engine", "process_started", "7", time.time(), {}))
    (exited, source), (started, _) = sent.events
    assert source == "/coordinator/platform/supervisor" and exited.id == "risk/100/process_exited"
    assert exited.correlation_id == "cid-1" and started.correlation_id == ""
    assert exited.instance == "100" and dict(exited.metadata) == {"platform": "supervisor", "exit_status": "0",
                                                                   "state": "STOPPED"}


async def test_a_platform_that_cannot_be_reached_is_retried_without_failing() -> None:
    class Away(SupervisorDriver):
        calls = 0

        async def _call(self, method: str, *args: Any) -> Any:
            Away.calls += 1
            raise ConnectionRefusedError("no supervisord here")

    watch = PlatformWatch(None, Sent(), Faults([]), 0.0)  # type: ignore[arg-type]
    follower = asyncio.create_task(watch._follow("supervisor", Away(SupervisorSettings(url=None))))  # type: ignore[arg-type]
    for _ in range(100):  # the first retry comes after 1 s of back-off
        if Away.calls >= 2:
            break
        await asyncio.sleep(0.05)
    assert not follower.done() and Away.calls >= 2, "retried, and still following"
    follower.cancel()
