"""The driver interfaces: a fault driver applies and reverts faults, a probe observes.

A driver module owns its vocabulary and declares it in one ``DriverSpec`` named ``SPEC``: its
selector model (how a scenario names a target), its faults with their parameter models, its
rollback actions, its settings group and the class that does the work. The scenario language
builds its target, step and rollback models from the registered specs (``agent.drivers.specs``),
so adding a driver is one module plus one registration.

A fault driver is small on purpose (compare httpx's transport): ``recipe`` says, before anything
is touched, how to undo the fault (it goes into the Redis lease); ``inject`` applies it;
``revert`` undoes it from the recipe alone, idempotently, so that any agent can revert a fault
that another, crashed, agent applied. Drivers translate their backend's exceptions into
``ActionError``/``RevertError``/``ProbeError`` with a ``retryable`` flag.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from agent.errors import ConfigError
from agent.fields import Strict
from agent.settings import Settings

#: the key of ``inject``'s answer that names the incarnation of the target a fault ended (a pid, a
#: container's start): it goes into the chaos event, and recovery evidence from it does not count
ENDED_INSTANCE = "ended_instance"
#: the key of ``inject``'s answer that lists what the fault acted on, when a selector chose among
#: several (the containers picked): named in the chaos event, the result and the journal
TOUCHED = "touched"
#: the key of ``revert``'s answer that lists what matched the fault's selector and appeared while the
#: fault was active (pods a ReplicaSet made): named in the REVERTED chaos event and the result
ARRIVED = "arrived"


class Choosing(Strict):
    """A selector that may match several targets (containers, pods) and says which a fault touches,
    as Chaos Mesh does: ``one`` (at random, the default), ``all``, ``fixed`` (``value`` of them, at
    random) or ``percent`` (``value`` per cent of them, at least one). See ``choose``."""

    #: which of the matching targets a fault touches
    mode: Literal["one", "all", "fixed", "percent"] = "one"
    #: ``fixed``: how many; ``percent``: what share (1-100)
    value: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _mode_and_value(self) -> Choosing:
        if self.mode in {"fixed", "percent"} and self.value is None:
            raise ValueError(f"mode '{self.mode}' needs a value (how many, or what share)")
        if self.mode == "percent" and self.value is not None and self.value > 100:
            raise ValueError("mode 'percent' takes a value from 1 to 100")
        if self.mode in {"one", "all"} and self.value is not None:
            raise ValueError(f"mode '{self.mode}' takes no value")
        return self


def choose(candidates: list[dict[str, str]], mode: str, value: int | None,
           rng: random.Random | None = None) -> list[dict[str, str]]:
    """The targets a fault touches among the matching ones, per a ``Choosing`` selector's ``mode``
    and ``value`` (sorted by name)."""
    rng = rng or random.SystemRandom()
    count = {"one": 1, "all": len(candidates), "fixed": value or 1,
             "percent": max(1, math.floor(len(candidates) * (value or 100) / 100))}[mode]
    picked = candidates if count >= len(candidates) else rng.sample(candidates, count)
    return sorted(picked, key=lambda c: c["name"])


@dataclass(frozen=True)
class FaultKind:
    """One fault a driver applies: its kebab-case name and its typed parameters."""

    name: str
    parameters: type[BaseModel]
    #: the fault lasts until reverted (a duration applies); instantaneous faults have no duration
    lasting: bool
    #: the fault reads events from the target's relay source topic
    relay: bool = False
    summary: str = ""
    #: filled in by the spec that declares it
    driver: str = ""


@dataclass(frozen=True)
class DriverSpec:
    """What a driver module adds to the scenario language, and how to build the driver."""

    name: str
    #: the model of ``selector`` in a target of this driver
    selector: type[BaseModel]
    faults: tuple[FaultKind, ...]
    #: the driver from its settings group
    factory: Callable[[Any], FaultDriver]
    #: the driver's settings group, taken from the agent's settings (default: all of them); a group
    #: that is a dataclass or pydantic model also takes its fields from ``Settings.drivers[name]``
    #: (``COORDINATOR_DRIVERS__<NAME>__<FIELD>``): see ``settings_of``
    configure: Callable[[Settings], Any] = lambda settings: settings
    #: actions a scenario's rollbacks may ask of this driver
    rollbacks: tuple[str, ...] = ()
    #: the names of what a selector acts on (a program, a proxy, topics, containers), which the
    #: allow-list's ``DRIVER:PATTERN`` entries must admit; None: the driver cannot say, and a target
    #: of it is refused wherever such entries name it
    touches: Callable[[dict[str, Any]], list[str]] | None = None
    #: the names this driver's platform events give the processes a fault's recipe acts on (so a
    #: platform event is tied to the fault that caused it); None: only the target's service
    acts_on: Callable[[dict[str, Any]], set[str]] | None = None
    #: what is wrong with a fault step of this driver given its target's selector (``fault``, the
    #: selector as written), None when nothing: rules that join the two, beyond each one's model
    check_step: Callable[[FaultKind, dict[str, Any]], str | None] | None = None
    summary: str = ""

    def settings_of(self, settings: Settings) -> Any:
        """The driver's settings group: what ``configure`` makes of the agent's settings, with the
        fields ``COORDINATOR_DRIVERS__<NAME>__<FIELD>`` sets over it (validated and converted by the
        group's own types). ``ConfigError`` names a field the group does not have, or a bad value."""
        group = self.configure(settings)
        given = settings.drivers.get(self.name)
        if not given:
            return group
        prefix = f"COORDINATOR_DRIVERS__{self.name.upper()}__"
        if isinstance(group, BaseModel):
            current, names = group.model_dump(), set(type(group).model_fields)
        elif dataclasses.is_dataclass(group) and not isinstance(group, type):
            current, names = dataclasses.asdict(group), {f.name for f in dataclasses.fields(group)}
        else:
            raise ConfigError(f"{prefix}*: the {self.name} driver has no settings group of its own")
        unknown = sorted(set(given) - names)
        if unknown:
            raise ConfigError(f"{prefix}{unknown[0].upper()}: the {self.name} driver has no setting '{unknown[0]}'; "
                              f"it has: {', '.join(sorted(names))}")
        # a list or a mapping comes from the environment as JSON text, as for the agent's own settings
        given = {k: _json_or_text(v) for k, v in given.items()}
        try:
            return TypeAdapter(type(group)).validate_python({**current, **given})
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = str(problem["loc"][0]) if problem["loc"] else "?"
            raise ConfigError(f"{prefix}{field.upper()}: {problem['msg']} (got {problem.get('input')!r})") from None

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", tuple(
            f if f.driver == self.name else FaultKind(f.name, f.parameters, f.lasting, f.relay, f.summary, self.name)
            for f in self.faults))


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in {"[", "{"}:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class PlatformEvent:
    """What a driver saw its platform do to a process, whoever caused it (``agent.platform``)."""

    service: str
    #: process_started | process_exited
    event_type: str
    #: the incarnation it is about (a pid under supervisord)
    instance: str
    at: float
    details: dict[str, str]
    #: tells apart changes of one kind to one incarnation (a pod's container that restarted, its
    #: readiness that changed again); the same for every agent that sees the change
    seq: str = ""

    @property
    def identity(self) -> str:
        """The same for every agent that sees it: a copy is recognised as one event."""
        return f"{self.service}/{self.instance}/{self.event_type}" + (f"/{self.seq}" if self.seq else "")


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
    #: the injection's trace context (W3C ``traceparent``), when executions are traced: what the
    #: fault sends into the system carries it, so the system's spans join the experiment's trace
    traceparent: str = ""


class FaultDriver(ABC):
    name: str = ""

    def __init__(self, settings: Any) -> None:
        #: the driver's settings group (``DriverSpec.configure``)
        self.settings = settings

    async def resolve(self, request: FaultRequest) -> FaultRequest:
        """Fix what the fault will act on, before its lease is written: a selector that matches
        several targets chooses among them here (into ``request.selector``), so that the recipe, the
        allow-list and the events name exactly that. Default: the request as it is."""
        return request

    @abstractmethod
    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        """How to undo ``request``: plain JSON data, enough for ``revert`` on its own."""

    @abstractmethod
    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        """Apply the fault; return what was observed (shown in the journal). A fault that ends the
        target's process says which incarnation it ended under ``ENDED_INSTANCE``."""

    @abstractmethod
    async def revert(self, recipe: dict[str, Any]) -> dict[str, Any] | None:
        """Undo a fault from its recipe. Reverting twice, or a fault never applied, is fine. May
        return what it saw (``ARRIVED``: what appeared under the selector while the fault lasted)."""

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        """Run a scenario's rollback action (one of the spec's ``rollbacks``)."""
        from agent.errors import ActionError

        raise ActionError(f"the {self.name} driver has no rollback action '{action}'")

    def platform_events(self, interval: float) -> AsyncIterator[PlatformEvent] | None:
        """Processes starting and exiting on this driver's platform, for as long as it is read (polled
        every ``interval`` seconds); None when the driver cannot see them. Raises when the platform
        cannot be reached (the caller retries)."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional
        pass
