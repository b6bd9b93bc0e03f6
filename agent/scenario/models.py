"""The scenario format: ``apiVersion``, ``kind: Scenario``, ``metadata``, ``spec``.

Models are strict pydantic v2: unknown fields are refused, types are not coerced (a string is not
an int), durations are written "250ms"/"30s"/"5m". YAML uses camelCase; fault names are kebab-case.
Cross-references (a step's target, an expectation's step) are checked by ``agent.scenario.checks``.

Some fields are unions chosen by a key (a step by ``fault``/``wait``/``serial``/``parallel``, a
target by ``driver``); their tags start with ``@`` and are dropped from error paths.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from agent import vocabulary
from agent.scenario.base import NAME_PATTERN, Duration, Strict
from agent.scenario.faults import FAULT_NAMES, FAULTS
from agent.scenario.probes import SteadyState, exactly_one

API_VERSION = "coordinator/v1"
DRIVERS = ("supervisor", "toxiproxy", "kafka")
StepName = Annotated[str, Field(pattern=NAME_PATTERN)]


def suggest(name: object, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; expected one of {', '.join(choices)}"


# -- targets ------------------------------------------------------------------------------------------
# Selectors are data, never paths: each is a name of the shape its backend allows, so nothing a
# scenario says can reach another endpoint of a backend's API (drivers also quote every URL segment).
#: a supervisord program or group name (supervisord refuses ':' and spaces in them)
SELECTOR_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ProgramName = Annotated[str, Field(pattern=SELECTOR_NAME_PATTERN)]
#: a Toxiproxy proxy name
ProxyName = Annotated[str, Field(pattern=SELECTOR_NAME_PATTERN)]
#: a Kafka topic name, as the broker allows it (but not starting with '.')
TOPIC_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,248}$"
TopicName = Annotated[str, Field(pattern=TOPIC_PATTERN)]


class SupervisorSelector(Strict):
    #: the supervisord program name
    program: ProgramName
    group: ProgramName | None = None


class ToxiproxySelector(Strict):
    #: the proxy name; created from listen/upstream when given and missing
    proxy: ProxyName
    #: host:port, sent in a JSON body (never in a URL); Toxiproxy checks them
    listen: str | None = None
    upstream: str | None = None


class KafkaSelector(Strict):
    #: where events are published (inject) or relayed to (relay faults)
    topic: TopicName
    #: where a relay reads from; required by the relay faults
    source: TopicName | None = None


class Endpoints(Strict):
    grpc: str | None = None
    http: str | None = None


class _TargetBase(Strict):
    #: the service name in audit events and in the registry (default: the target's name)
    service: str | None = None
    endpoints: Endpoints | None = None


class SupervisorTarget(_TargetBase):
    driver: Literal["supervisor"]
    selector: SupervisorSelector


class ToxiproxyTarget(_TargetBase):
    driver: Literal["toxiproxy"]
    selector: ToxiproxySelector


class KafkaTarget(_TargetBase):
    driver: Literal["kafka"]
    selector: KafkaSelector


class _BadTarget(Strict):
    model_config = Strict.model_config | {"extra": "allow"}

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"a target must be a mapping with a driver, got {type(value).__name__}")
        if "driver" not in value:
            raise ValueError(f"a target needs a driver: one of {', '.join(DRIVERS)}")
        raise ValueError(f"unknown driver '{value['driver']}'{suggest(value['driver'], DRIVERS)}")


def _target_tag(value: Any) -> str:
    driver = value.get("driver") if isinstance(value, dict) else getattr(value, "driver", None)
    return f"@driver={driver}" if driver in DRIVERS else "@bad-target"


Target = Annotated[
    Annotated[SupervisorTarget, Tag("@driver=supervisor")]
    | Annotated[ToxiproxyTarget, Tag("@driver=toxiproxy")]
    | Annotated[KafkaTarget, Tag("@driver=kafka")]
    | Annotated[_BadTarget, Tag("@bad-target")],
    Discriminator(_target_tag),
]


# -- steps ----------------------------------------------------------------------------------------------
class _FaultStepBase(Strict):
    name: StepName
    target: str
    #: how long a lasting fault stays before it is reverted
    duration: Duration | None = None
    #: pause before the step starts
    delay: Duration = 0.0
    #: the step fails when injecting (or reverting) takes longer
    timeout: Duration = 30.0
    #: start the fault and go on at once; it is reverted when its duration ends
    background: bool = False

    @model_validator(mode="after")
    def _duration_fits_the_fault(self) -> _FaultStepBase:
        kind = FAULTS[self.fault]  # type: ignore[attr-defined]
        if kind.lasting and self.duration is None:
            raise ValueError(f"fault '{kind.name}' lasts until reverted: give it a duration")
        if not kind.lasting and self.duration is not None:
            raise ValueError(f"fault '{kind.name}' is instantaneous: remove its duration")
        if not kind.lasting and self.background:
            raise ValueError(f"fault '{kind.name}' is instantaneous: it cannot run in the background")
        return self

    @property
    def kind(self) -> str:
        return "fault"


def _fault_step_model(name: str) -> type[_FaultStepBase]:
    params = FAULTS[name].parameters
    required = any(f.is_required() for f in params.model_fields.values())
    default: Any = ... if required else Field(default_factory=params)
    model = create_model(  # type: ignore[call-overload]
        f"FaultStep_{name.replace('-', '_')}",
        __base__=_FaultStepBase,
        fault=(Literal[name], ...),  # type: ignore[valid-type]
        parameters=(params, default),
    )
    return model  # type: ignore[no-any-return]


FAULT_STEP_MODELS = {name: _fault_step_model(name) for name in FAULT_NAMES}


class _UnknownFault(Strict):
    model_config = Strict.model_config | {"extra": "allow"}
    fault: str

    @field_validator("fault")
    @classmethod
    def _refuse(cls, value: str) -> str:
        raise ValueError(f"unknown fault '{value}'{suggest(value, FAULT_NAMES)}")


class WaitStep(Strict):
    name: StepName | None = None
    wait: Duration

    @property
    def kind(self) -> str:
        return "wait"


class SerialStep(Strict):
    name: StepName | None = None
    serial: list[Step] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "serial"


class ParallelStep(Strict):
    name: StepName | None = None
    parallel: list[Step] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "parallel"


_STEP_KEYS = ("fault", "wait", "serial", "parallel")


class _BadStep(Strict):
    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"a step must be a mapping, got {type(value).__name__}")
        given = [k for k in _STEP_KEYS if k in value]
        raise ValueError(f"a step needs exactly one of {', '.join(_STEP_KEYS)} (given: {', '.join(given) or 'none'})")


def _step_tag(value: Any) -> str:
    if not isinstance(value, dict):
        kind = getattr(value, "kind", None)
        if kind == "fault":
            return f"@fault={value.fault}"
        return f"@{kind}" if kind else "@bad-step"
    keys = [k for k in _STEP_KEYS if k in value]
    if len(keys) != 1:
        return "@bad-step"
    if keys[0] == "fault":
        return f"@fault={value['fault']}" if value["fault"] in FAULTS else "@unknown-fault"
    return f"@{keys[0]}"


_STEP_MEMBERS: tuple[Any, ...] = (
    Annotated[WaitStep, Tag("@wait")],
    Annotated[SerialStep, Tag("@serial")],
    Annotated[ParallelStep, Tag("@parallel")],
    Annotated[_UnknownFault, Tag("@unknown-fault")],
    Annotated[_BadStep, Tag("@bad-step")],
    *(Annotated[model, Tag(f"@fault={name}")] for name, model in FAULT_STEP_MODELS.items()),
)
#: one step: a fault, a wait, or steps in series or in parallel
Step = Annotated[Union[_STEP_MEMBERS], Discriminator(_step_tag)]  # noqa: UP007 - built from a tuple
SerialStep.model_rebuild()
ParallelStep.model_rebuild()


# -- expectations on the audit trail -------------------------------------------------------------------
class EventMatch(Strict):
    #: the audit event type, e.g. service_ready; empty: any event (of ``service``)
    type: str | None = None
    #: the emitting service; empty means any service
    service: str | None = None
    #: metadata fields that must be equal
    match: dict[str, str] = Field(default_factory=dict)


class Appears(Strict):
    within: Duration


class Absent(Strict):
    within: Duration


class Count(Strict):
    within: Duration
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Count:
        if self.min is None and self.max is None:
            raise ValueError("a count needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"count min {self.min} is above max {self.max}")
        return self


class Order(Strict):
    #: event types that must appear in this order
    events: list[str] = Field(min_length=2)
    within: Duration


class TimeToRecover(Strict):
    max: Duration


Attribution = Literal["correlation-id", "target-window", "window", "any"]
EXPECTATION_KINDS = tuple(vocabulary.EXPECTATION_KINDS)  # appears, absent, count, order, time_to_recover


class Expectation(Strict):
    name: StepName
    #: the fault step whose injection (and correlation id) this expectation follows
    after: str
    event: EventMatch = Field(default_factory=EventMatch)
    #: how audit events are tied to the injection (see docs/correlation.md)
    attribution: Attribution = "any"
    appears: Appears | None = None
    absent: Absent | None = None
    count: Count | None = None
    order: Order | None = None
    time_to_recover: TimeToRecover | None = None

    @model_validator(mode="after")
    def _one(self) -> Expectation:
        exactly_one(self, EXPECTATION_KINDS, "an expectation")
        if self.order is None and self.event.type is None and self.event.service is None:
            raise ValueError("an expectation needs event.type, event.service or both "
                             "(only order lists its own event types)")
        if self.order is not None and not self.event.service:
            raise ValueError("an order expectation needs event.service (whose events must come in order)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in EXPECTATION_KINDS if getattr(self, k) is not None)

    @property
    def deadline(self) -> float:
        """Seconds after the injection by which the verdict is decided."""
        rule = getattr(self, self.kind)
        return float(rule.max if self.kind == "time_to_recover" else rule.within)


# -- rollbacks, limits, parameters --------------------------------------------------------------------
class RollbackAction(Strict):
    name: StepName
    action: Literal["start", "stop", "restart", "remove-toxics", "enable-proxy"]
    target: str
    timeout: Duration = 30.0


class Rollbacks(Strict):
    #: default: run once the method has started; always; never; deviated: only when the run deviated
    strategy: Literal["default", "always", "never", "deviated"] = "default"
    actions: list[RollbackAction] = Field(default_factory=list)


class Limits(Strict):
    #: the whole run, from the first probe to the last rollback
    timeout: Duration = 600.0
    max_concurrent_faults: int = Field(default=10, ge=1, le=1000)


ParameterType = Literal["string", "int", "float", "bool", "duration", "enum"]


class Parameter(Strict):
    type: ParameterType
    default: str | int | float | bool | None = None
    description: str = ""
    min: int | float | str | None = None
    max: int | float | str | None = None
    values: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        from agent.scenario.parameters import check_definition

        check_definition(self)
        return self


# -- the scenario ----------------------------------------------------------------------------------
class Metadata(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Spec(Strict):
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    targets: dict[str, Target] = Field(min_length=1)
    steady_state: SteadyState = Field(default_factory=SteadyState)
    steps: list[Step] = Field(min_length=1)
    expectations: list[Expectation] = Field(default_factory=list)
    rollbacks: Rollbacks = Field(default_factory=Rollbacks)
    limits: Limits = Field(default_factory=Limits)


class Scenario(Strict):
    api_version: Literal["coordinator/v1"]
    kind: Literal["Scenario"]
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        return self.metadata.name

    def fault_steps(self) -> list[_FaultStepBase]:
        return [s for s in walk_steps(self.spec.steps) if isinstance(s, _FaultStepBase)]

    def to_data(self) -> dict[str, Any]:
        """Plain data in the YAML shape (camelCase, durations as text), defaults left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


FaultStep = _FaultStepBase


def walk_steps(steps: list[Any]) -> list[Any]:
    """Every step, depth first, groups included."""
    out: list[Any] = []
    for step in steps:
        out.append(step)
        if isinstance(step, SerialStep):
            out.extend(walk_steps(step.serial))
        elif isinstance(step, ParallelStep):
            out.extend(walk_steps(step.parallel))
    return out
