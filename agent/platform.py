"""Platform audit events: what the drivers see their platform do to the targets' processes.

A service cannot report its own crash. The agent watches the platforms its drivers talk to (under
supervisord: every program's pid, polled every ``COORDINATOR_PLATFORM_POLL_INTERVAL``; a Docker
engine: its ``start`` and ``die`` container events, as they come) and publishes
what it sees on the audit topic, as audit events of the agent's own making:

- ``process_exited``: a process went away; metadata ``exit_status`` and ``state`` as supervisord
  recorded them (``EXITED``, ``BACKOFF``, ``STOPPED``, ...).
- ``process_started``: a new process (a new pid) is there.

Each has ``service_name`` = the program's name, ``instance`` = its pid, metadata ``platform`` = the
driver, and the correlation id of this agent's active fault on that program when there is one (the
fault caused it). The CloudEvents source is ``/coordinator/platform/{driver}`` and the id names the
program, pid and change, so that the copies several agents publish count once (docs/correlation.md).
The stream worker uses them for ``stable`` expectations; they never count as the service itself
speaking. Best effort: a platform that cannot be reached is retried with back-off, and never makes
the agent unready.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from agent import drivers
from agent._proto.coordinator.v1 import events_pb2
from agent.drivers import DriverRegistry
from agent.drivers.base import FaultDriver, PlatformEvent
from agent.engine.faults import FaultManager
from agent.engine.publisher import Publisher
from agent.logs import get_logger

log = get_logger("agent.platform")


class PlatformWatch:
    def __init__(self, registry: DriverRegistry, publisher: Publisher, faults: FaultManager, interval: float) -> None:
        self.registry = registry
        self.publisher = publisher
        self.faults = faults
        self.interval = interval

    async def run(self) -> None:
        """Follow every driver that can see its platform, until cancelled."""
        followed = [self._follow(name, self.registry.get(name)) for name in drivers.specs()]
        await asyncio.gather(*followed)
        await asyncio.Event().wait()  # no platform to watch: idle (a part that returns would stop the agent)

    async def _follow(self, name: str, driver: FaultDriver) -> None:
        delay, reachable = 1.0, True
        while True:
            events = driver.platform_events(self.interval)
            if events is None:
                return  # this driver cannot see its platform
            try:
                async for event in events:
                    delay, reachable = 1.0, True
                    await self._publish(name, event)
            except Exception as exc:  # noqa: BLE001 - the platform is away: try again later
                if reachable:  # one line per change of state
                    log.warning("platform events: cannot watch; retrying", driver=name,
                                error=f"{type(exc).__name__}: {exc}")
                reachable = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _publish(self, driver: str, seen: PlatformEvent) -> None:
        event = events_pb2.AuditEvent(
            id=seen.identity, service_name=seen.service, event_type=seen.event_type, instance=seen.instance,
            correlation_id=self._cause(driver, seen.service), status="ok",
            metadata={"platform": driver, **seen.details})
        event.timestamp.FromDatetime(datetime.fromtimestamp(seen.at, UTC))
        try:
            await self.publisher.audit(event, source=f"/coordinator/platform/{driver}")
        except (KafkaError, OSError) as exc:
            log.warning("platform event not published", service=seen.service, event_type=seen.event_type,
                        error=str(exc))
            return
        log.info("platform event", driver=driver, service=seen.service, event_type=seen.event_type,
                 instance=seen.instance, correlation_id=event.correlation_id or None, **seen.details)

    def _cause(self, driver: str, service: str) -> str:
        """The correlation id of this agent's active fault on ``service`` through ``driver``, if any."""
        spec = drivers.specs().get(driver)
        for correlation_id, active in self.faults.active.items():
            lease = active.lease
            if lease.driver != driver:
                continue
            names = spec.acts_on(lease.recipe) if spec is not None and spec.acts_on is not None else set()
            if service in {lease.service, *names}:
                return correlation_id
        return ""
