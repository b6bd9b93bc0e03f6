"""The driver interfaces: a fault driver applies and reverts faults, a probe observes.

A fault driver is small on purpose (compare httpx's transport): ``recipe`` says, before anything
is touched, how to undo the fault (it goes into the Redis lease); ``inject`` applies it;
``revert`` undoes it from the recipe alone, idempotently, so that any agent can revert a fault
that another, crashed, agent applied. Drivers translate their backend's exceptions into
``ActionError``/``RevertError``/``ProbeError`` with a ``retryable`` flag.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from agent.settings import Settings


@dataclass(frozen=True)
class FaultRequest:
    correlation_id: str
    execution_id: str
    fault: str
    target_name: str
    service: str
    selector: dict[str, Any]
    parameters: dict[str, Any]
    duration: float | None


class FaultDriver(ABC):
    name: str = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        """How to undo ``request``: plain JSON data, enough for ``revert`` on its own."""

    @abstractmethod
    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        """Apply the fault; return what was observed (shown in the journal)."""

    @abstractmethod
    async def revert(self, recipe: dict[str, Any]) -> None:
        """Undo a fault from its recipe. Reverting twice, or a fault never applied, is fine."""

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        """Run a scenario's rollback action (start, stop, restart, remove-toxics, enable-proxy)."""
        from agent.errors import ActionError

        raise ActionError(f"the {self.name} driver has no rollback action '{action}'")

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass
