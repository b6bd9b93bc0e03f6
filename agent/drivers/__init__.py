"""Fault drivers and probes: the registry of driver specs, and one driver instance per name.

Each driver module declares a ``SPEC`` (``agent.drivers.base.DriverSpec``): its selector model,
faults and their parameter models, rollback actions, settings group and class. The scenario
language builds its models from ``specs()``; ``DriverRegistry`` builds each driver from its spec
on first use. Adding a driver is one module: write it with its ``SPEC``, then list the module in
``BUILTIN`` (or, from an embedding or a test, call ``register(SPEC)``).
"""

from __future__ import annotations

import importlib

from agent.drivers.base import DriverSpec, FaultDriver, FaultKind, FaultRequest
from agent.errors import NotFound
from agent.settings import Settings

#: the driver modules that ship with the agent, in the order their names are listed
BUILTIN = ("agent.drivers.supervisor", "agent.drivers.toxiproxy", "agent.drivers.kafka")

_specs: dict[str, DriverSpec] = {}
_generation = 0


def specs() -> dict[str, DriverSpec]:
    """Every driver spec by name: the built-in ones, then those registered."""
    if not _specs:
        for module in BUILTIN:
            spec: DriverSpec = importlib.import_module(module).SPEC
            _specs.setdefault(spec.name, spec)
    return _specs


def generation() -> int:
    """Changes whenever the set of drivers changes (the scenario models rebuild when it does)."""
    specs()
    return _generation


def register(spec: DriverSpec) -> None:
    """Add a driver (or replace one of the same name); its faults must not clash with another's."""
    global _generation
    known = specs()
    taken = {f.name: s.name for s in known.values() if s.name != spec.name for f in s.faults}
    clashes = [f.name for f in spec.faults if f.name in taken]
    if clashes:
        raise ValueError(f"driver '{spec.name}': fault names already taken: "
                         + ", ".join(f"{n} ({taken[n]})" for n in clashes))
    known[spec.name] = spec
    _generation += 1


def unregister(name: str) -> None:
    global _generation
    if specs().pop(name, None) is not None:
        _generation += 1


def faults() -> dict[str, FaultKind]:
    """Every fault of every driver, by name."""
    return {f.name: f for spec in specs().values() for f in spec.faults}


class DriverRegistry:
    """One instance of each driver per agent, built from its spec (and settings group) on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._drivers: dict[str, FaultDriver] = {}

    def get(self, name: str) -> FaultDriver:
        if name not in self._drivers:
            spec = specs().get(name)
            if spec is None:
                raise NotFound(f"unknown driver '{name}'; known: {', '.join(specs())}")
            self._drivers[name] = spec.factory(spec.configure(self.settings))
        return self._drivers[name]

    def use(self, name: str, driver: FaultDriver) -> None:
        """Serve ``name`` with this driver instance (an embedding, or a test's in-memory driver)."""
        self._drivers[name] = driver

    async def aclose(self) -> None:
        for driver in self._drivers.values():
            await driver.aclose()
        self._drivers.clear()


__all__ = ["BUILTIN", "DriverRegistry", "DriverSpec", "FaultDriver", "FaultKind", "FaultRequest", "faults",
           "register", "specs", "unregister"]
