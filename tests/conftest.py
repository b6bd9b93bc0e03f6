"""Shared fixtures. Integration tests get one real local stack per session.

When ``COORDINATOR_DEVSTACK_DIR`` names a running stack (``coordinator devstack up``), it is reused
and left running; otherwise a fresh stack is started in a temporary directory and stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.devstack import Stack
from agent.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


#: test files whose parts are built from Go modules the first time, run last in this order while
#: their builds go on beside the other tests (at the lowest CPU priority, one after the other)
BUILT_LAST = ("test_otel.py", "test_kubernetes.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
    # a machine without the builds in its cache makes them beside the other tests, not before their own
    last = {name: [item for item in items if item.path.name == name] for name in BUILT_LAST}
    if any(last.values()):
        items[:] = [item for item in items if item.path.name not in BUILT_LAST] + [
            item for name in BUILT_LAST for item in last[name]]
        wanted = [name for name in BUILT_LAST if last[name]]
        threading.Thread(target=_build_quietly, args=(wanted,), name="go-builds", daemon=True).start()


def _build_quietly(wanted: list[str]) -> None:
    """Build what the tests in ``wanted`` need, when missing; a failure is for their own call to report."""
    from agent.devstack import kubebuild, otelbuild

    builds = {"test_otel.py": (otelbuild.built, otelbuild.ensure_collector),
              "test_kubernetes.py": (kubebuild.built, kubebuild.ensure_kubernetes)}
    for name in wanted:
        done, ensure = builds[name]
        if done() is None:
            with contextlib.suppress(Exception):
                ensure(nice=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    configured = os.environ.get("COORDINATOR_DEVSTACK_DIR")
    if configured and Stack(configured).is_up():
        yield Stack(configured)
        return
    fresh = Stack(tmp_path_factory.mktemp("devstack"))
    try:
        fresh.up()
        yield fresh
    finally:
        fresh.down()


@pytest.fixture(scope="session")
def stack_env(stack: Stack) -> dict[str, str]:
    return stack.env()


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
        redis_url=stack_env["COORDINATOR_REDIS_URL"],
        toxiproxy_url=stack_env["COORDINATOR_TOXIPROXY_URL"],
        topic_replication_factor=1,
    )


@pytest.fixture(scope="session")
async def topics_applied(settings: Settings) -> Settings:
    from agent import topics

    await topics.apply(settings)
    return settings
