"""What the agent may do right now: the allow-list and the concurrency limit.

``Settings`` are read once and never change while the agent runs. The two values an operator may
change at run time live here instead: a ``Policy`` is an immutable snapshot, and a ``PolicySource``
holds the current one, refreshed from the ecosystem's configuration service (keys
``allowed_targets`` and ``max_concurrent_executions``) and falling back to the local settings when
the service has nothing usable. Whoever needs the policy (the fault manager, the scenario loader,
the API, the execution slots) is given the source and reads ``source.current`` when it decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agent.config_service import ConfigService
from agent.scenario.checks import refused_by_allow_list
from agent.settings import Settings


@dataclass(frozen=True)
class Policy:
    #: glob patterns (see docs/scenarios.md: plain, or qualified by a driver)
    allowed_targets: tuple[str, ...] = ("*",)
    max_concurrent_executions: int = 20

    def refused(self, service: str, driver: str, selector: dict[str, Any]) -> str | None:
        """Why this policy refuses the target, or None when it may be touched."""
        return refused_by_allow_list(service, driver, selector, list(self.allowed_targets))


class PolicySource:
    """The current policy: local settings, overridden by the configuration service when it answers."""

    def __init__(self, settings: Settings, service: ConfigService | None = None) -> None:
        self.local = Policy(tuple(settings.allowed_targets), settings.max_concurrent_executions)
        self.service = service
        self.current = self.local

    async def refresh(self) -> Policy:
        if self.service is None:
            return self.current
        allowed = await self.service.get("allowed_targets")
        targets = self.local.allowed_targets
        if allowed is not None:
            value = allowed.value
            if isinstance(value, str):
                value = [p.strip() for p in value.split(",") if p.strip()]
            if isinstance(value, list) and all(isinstance(p, str) for p in value):
                targets = tuple(value)
            else:
                self.service.warn("allowed_targets", "not a list of patterns")
        limit = await self.service.get("max_concurrent_executions")
        number = limit.value if limit is not None else None
        concurrency = self.local.max_concurrent_executions
        if isinstance(number, int | float) and not isinstance(number, bool) and number >= 1:
            concurrency = int(number)
        elif limit is not None:
            self.service.warn("max_concurrent_executions", f"{number!r} is not a number >= 1")
        self.current = Policy(targets, concurrency)
        return self.current

    async def refresh_forever(self, on_change: Any = None) -> None:
        """Refresh every ``ttl`` of the service; ``on_change()`` (awaited) after each refresh."""
        ttl = self.service.ttl if self.service is not None else 30.0
        while True:
            await asyncio.sleep(max(1.0, ttl))
            await self.refresh()
            if on_change is not None:
                await on_change()
