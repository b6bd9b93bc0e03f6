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
BUILTIN = ("agent.drivers.supervisor", "agent.drivers.docker", "agent.drivers.toxiproxy", "agent.drivers.kafka",
           "agent.drivers.kubernetes")

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
    """Add a driver (or replace one of the same name). A fault name may be shared by several drivers
    (``restart`` of a program, of a container) when they agree on what it is: lasting or not, relaying
    or not, and the same type for every parameter both declare."""
    global _generation
    known = specs()
    problems = [problem for other in known.values() if other.name != spec.name
                for mine in spec.faults for theirs in other.faults if mine.name == theirs.name
                for problem in [_clash(mine, theirs)] if problem]
    if problems:
        raise ValueError(f"driver '{spec.name}': " + "; ".join(problems))
    known[spec.name] = spec
    _generation += 1


def _clash(mine: FaultKind, theirs: FaultKind) -> str | None:
    if (mine.lasting, mine.relay) != (theirs.lasting, theirs.relay):
        return f"fault '{mine.name}' of driver '{theirs.driver}' is {_shape(theirs)}, this one {_shape(mine)}"
    ours, other = mine.parameters.model_fields, theirs.parameters.model_fields
    for name in sorted(set(ours) & set(other)):
        if ours[name].annotation != other[name].annotation:
            return (f"fault '{mine.name}': parameter '{name}' has another type in driver '{theirs.driver}' "
                    f"({other[name].annotation} there, {ours[name].annotation} here)")
    return None


def _shape(kind: FaultKind) -> str:
    return ("lasting" if kind.lasting else "instantaneous") + (", relaying" if kind.relay else "")


def unregister(name: str) -> None:
    global _generation
    if specs().pop(name, None) is not None:
        _generation += 1


def faults() -> dict[str, FaultKind]:
    """Every fault name, with the kind of the first driver that declares it (drivers that share a
    name agree on whether it lasts; their parameters may differ: see ``fault``)."""
    out: dict[str, FaultKind] = {}
    for spec in specs().values():
        for kind in spec.faults:
            out.setdefault(kind.name, kind)
    return out


def fault(driver: str, name: str) -> FaultKind | None:
    """The fault ``name`` as driver ``driver`` declares it (its own parameters), or None."""
    spec = specs().get(driver)
    return next((f for f in spec.faults if f.name == name), None) if spec else None


def drivers_of(name: str) -> list[str]:
    """The drivers that declare fault ``name``."""
    return [spec.name for spec in specs().values() if any(f.name == name for f in spec.faults)]


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
            self._drivers[name] = spec.factory(spec.settings_of(self.settings))
        return self._drivers[name]

    def use(self, name: str, driver: FaultDriver) -> None:
        """Serve ``name`` with this driver instance (an embedding, or a test's in-memory driver)."""
        self._drivers[name] = driver

    async def aclose(self) -> None:
        for driver in self._drivers.values():
            await driver.aclose()
        self._drivers.clear()


__all__ = ["BUILTIN", "DriverRegistry", "DriverSpec", "FaultDriver", "FaultKind", "FaultRequest", "drivers_of",
           "fault", "faults", "register", "specs", "unregister"]
