"""Requester side: publish a scenario request and follow it to its result (``coordinator run``)."""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable

from agent import follow, kafkaio, submission, vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.follow import Follower
from agent.settings import Settings

S = events_pb2
#: exit codes like pytest: 0 passed, 1 failed, 2 interrupted, 3 internal error, 4 usage
EXIT_CODES = {
    S.EXECUTION_STATUS_PASSED: 0, S.EXECUTION_STATUS_FAILED: 1, S.EXECUTION_STATUS_TIMED_OUT: 1,
    S.EXECUTION_STATUS_ABORTED: 2, S.EXECUTION_STATUS_ERROR: 3, S.EXECUTION_STATUS_REJECTED: 4,
}


def build_request(scenario: str, params: dict[str, str], *, dry_run: bool = False,
                  labels: dict[str, str] | None = None, request_id: str | None = None) -> events_pb2.ScenarioRequest:
    """``scenario`` is a catalog name, or a path to a YAML file sent inline (``submission.build``)."""
    return submission.build(scenario, params, requester=f"cli:{_user()}", dry_run=dry_run, labels=labels,
                            request_id=request_id)


async def submit(settings: Settings, request: events_pb2.ScenarioRequest) -> None:
    producer = kafkaio.producer(settings, purpose="cli")
    await kafkaio.started(producer)
    try:
        topic, event = submission.encode(request, settings, source=f"/cli/{_user()}")
        await producer.send_and_wait(topic, event.value, key=event.key, headers=event.headers)
    finally:
        await producer.stop()


async def run_and_follow(settings: Settings, request: events_pb2.ScenarioRequest, *, timeout: float,
                         on_progress: Callable[[events_pb2.ExecutionProgress], None] | None = None,
                         until_accepted: bool = False) -> events_pb2.ScenarioResult | None:
    """Publish ``request`` and return its final result (None when ``timeout`` passes first);
    ``until_accepted``: return as soon as an agent reports the execution it started (progress)."""
    accepted = False
    async with Follower(settings, [settings.topics.scenario_results], purpose="cli") as follower:
        await follower.from_end()  # before the request goes out
        await submit(settings, request)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (until_accepted and accepted):
            for update in await follower.poll():
                if update.message.request_id != request.request_id:
                    continue
                if update.kind == follow.RESULT:
                    return update.message  # type: ignore[no-any-return]
                accepted = True
                if on_progress is not None:
                    on_progress(update.message)
        return None


def status_name(status: int) -> str:
    return vocabulary.status_name(status)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
