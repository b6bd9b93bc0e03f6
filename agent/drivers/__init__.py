"""Fault drivers and probes, looked up by name and imported only when first used.

Adding a driver touches one module: write it, then add one line to ``FAULT_DRIVERS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.drivers.base import FaultDriver, FaultRequest
from agent.errors import NotFound
from agent.settings import Settings

FAULT_DRIVERS = {
    "supervisor": "agent.drivers.supervisor:SupervisorDriver",
    "toxiproxy": "agent.drivers.toxiproxy:ToxiproxyDriver",
    "kafka": "agent.drivers.kafka:KafkaDriver",
}


class DriverRegistry:
    """One instance of each driver per agent, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._drivers: dict[str, FaultDriver] = {}

    def get(self, name: str) -> FaultDriver:
        if name not in self._drivers:
            try:
                module_name, _, class_name = FAULT_DRIVERS[name].partition(":")
            except KeyError:
                raise NotFound(f"unknown driver '{name}'; known: {', '.join(FAULT_DRIVERS)}") from None
            cls: Any = getattr(importlib.import_module(module_name), class_name)
            self._drivers[name] = cls(self.settings)
        return self._drivers[name]

    def use(self, name: str, driver: FaultDriver) -> None:
        """Serve ``name`` with this driver instance (an embedding, or a test's in-memory driver)."""
        self._drivers[name] = driver

    async def aclose(self) -> None:
        for driver in self._drivers.values():
            await driver.aclose()
        self._drivers.clear()


__all__ = ["FAULT_DRIVERS", "DriverRegistry", "FaultDriver", "FaultRequest"]
