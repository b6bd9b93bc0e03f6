"""The toy driver's lamps and an engine over in-memory fakes of our own interfaces, for the
engine's unit tests (the driver is in test_toy_driver.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from agent import drivers
from agent.engine import Engine
from agent.settings import Settings
from agent.testing import MemoryPublisher, MemoryStore
from tests.unit.engine.test_toy_driver import LAMPS, LOG, SPEC


@pytest.fixture
def lamps() -> Iterator[None]:
    drivers.register(SPEC)
    LAMPS.clear()
    LOG.clear()
    try:
        yield
    finally:
        drivers.unregister("lamps")


@pytest.fixture
async def engine(lamps: None) -> AsyncIterator[Engine]:
    settings = Settings(instance_id="house-7", lease_ttl=3, reconcile_interval=1, verdict_grace=0.1)
    async with Engine.open(settings, owner="agent-a/1", store=MemoryStore(),  # type: ignore[arg-type]
                           publisher=MemoryPublisher()) as engine:  # type: ignore[arg-type]
        await engine.store.renew_leases(engine.owner, [], 3)
        yield engine
