"""The fault catalogue: every fault of every registered driver, by name.

Each driver declares its faults and their typed parameters in its own module (``SPEC`` in
``agent/drivers/*.py``); this is the live view of all of them, so that a driver registered at run
time (an embedding, a test's toy driver) is known everywhere at once. Names are kebab-case and match
what users know: process faults as in Pumba and Chaos Mesh, network faults as Toxiproxy's toxics,
Kafka event faults (ours).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from agent import drivers
from agent.drivers.base import FaultKind


class _Faults(Mapping[str, FaultKind]):
    def __init__(self) -> None:
        self._cache: tuple[int, dict[str, FaultKind]] | None = None

    def _all(self) -> dict[str, FaultKind]:
        generation = drivers.generation()
        if self._cache is None or self._cache[0] != generation:
            self._cache = (generation, drivers.faults())
        return self._cache[1]

    def __getitem__(self, name: str) -> FaultKind:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


#: fault name -> its kind (driver, parameter model, lasting or not)
FAULTS: Mapping[str, FaultKind] = _Faults()

__all__ = ["FAULTS", "FaultKind"]
