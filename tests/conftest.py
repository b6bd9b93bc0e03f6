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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
    # the Kubernetes tests last, their control plane built meanwhile (at the lowest CPU priority): a
    # machine without the build in its cache makes it beside the other tests, not before its own
    kubernetes = [item for item in items if item.path.name == "test_kubernetes.py"]
    if kubernetes:
        items[:] = [item for item in items if item.path.name != "test_kubernetes.py"] + kubernetes
        from agent.devstack import kubebuild

        if kubebuild.built() is None:
            threading.Thread(target=_build_quietly, name="kubernetes-build", daemon=True).start()


def _build_quietly() -> None:
    """Build the control plane; a failure is for the Kubernetes tests' own call to report."""
    from agent.devstack import kubebuild

    with contextlib.suppress(Exception):
        kubebuild.ensure_kubernetes(nice=True)


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
