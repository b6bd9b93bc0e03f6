"""The scenario format: ``apiVersion``, ``kind: Scenario``, ``metadata``, ``spec``.

Models are strict pydantic v2: unknown fields are refused, types are not coerced (a string is not
an int), durations are written "250ms"/"30s"/"5m". YAML uses camelCase; fault names are kebab-case.
Cross-references (a step's target, an expectation's step) are checked by ``agent.scenario.checks``.

Some fields are unions chosen by a key (a step by ``fault``/``wait``/``serial``/``parallel``, a
target by ``driver``); their tags start with ``@`` and are dropped from error paths. Those unions
come from the drivers (``agent.drivers.specs``): each declares its selector, faults with their
parameters, and rollback actions, and ``scenario_model()`` builds the validating model from them.
The classes below (``Scenario``, ``Target``, ``FaultStep``, ...) are what code reads; every
validated scenario is an instance of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from types import GenericAlias
from typing import Annotated, Any, ForwardRef, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from agent import drivers, expectations
from agent.expectations import KINDS
from agent.fields import NAME_PATTERN, Duration, Strict
from agent.scenario.faults import FAULTS
from agent.scenario.parameters import Parameter
from agent.scenario.probes import SteadyState, exactly_one

API_VERSION = "coordinator/v1"
StepName = Annotated[str, Field(pattern=NAME_PATTERN)]


def suggest(name: object, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; expected one of {', '.join(choices)}"


# -- targets ------------------------------------------------------------------------------------------
# Selectors are data, never paths: each driver's selector model allows only names of the shape its
# backend allows, so nothing a scenario says can reach another endpoint of a backend's API.
class Endpoints(Strict):
    grpc: str | None = None
    http: str | None = None


class Target(Strict):
    """A target: its driver, the selector that driver defines, and the service it is. Each driver
    gets a subclass whose ``driver`` is its name and whose ``selector`` is its selector model."""

    driver: str
    selector: Strict
    #: the service name in audit events and in the registry (default: the target's name)
    service: str | None = None
    endpoints: Endpoints | None = None


class _BadTarget(Strict):
    model_config = Strict.model_config | {"extra": "allow"}

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        names = tuple(drivers.specs())
        if not isinstance(value, dict):
            raise ValueError(f"a target must be a mapping with a driver, got {type(value).__name__}")
        if "driver" not in value:
            raise ValueError(f"a target needs a driver: one of {', '.join(names)}")
        raise ValueError(f"unknown driver '{value['driver']}'{suggest(value['driver'], names)}")


# -- steps ----------------------------------------------------------------------------------------------
class FaultStep(Strict):
    """A fault step. Each fault gets a subclass whose ``fault`` is its name and whose
    ``parameters`` is its driver's parameter model."""

    name: StepName
    target: str
    fault: str
    parameters: Strict
    #: how long a lasting fault stays before it is reverted
    duration: Duration | None = None
    #: pause before the step starts
    delay: Duration = 0.0
    #: the step fails when injecting (or reverting) takes longer
    timeout: Duration = 30.0
    #: start the fault and go on at once; it is reverted when its duration ends
    background: bool = False

    @model_validator(mode="after")
    def _duration_fits_the_fault(self) -> FaultStep:
        kind = FAULTS[self.fault]
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


class _UnknownFault(Strict):
    model_config = Strict.model_config | {"extra": "allow"}
    fault: str

    @field_validator("fault")
    @classmethod
    def _refuse(cls, value: str) -> str:
        raise ValueError(f"unknown fault '{value}'{suggest(value, list(FAULTS))}")


class WaitStep(Strict):
    name: StepName | None = None
    wait: Duration

    @property
    def kind(self) -> str:
        return "wait"


class SerialStep(Strict):
    name: StepName | None = None
    serial: list[AnyStep] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "serial"


class ParallelStep(Strict):
    name: StepName | None = None
    parallel: list[AnyStep] = Field(min_length=1)

    @property
    def kind(self) -> str:
        return "parallel"


#: one step, as code sees it (validation uses the tagged union built from the drivers: see ``build``)
AnyStep = FaultStep | WaitStep | SerialStep | ParallelStep
SerialStep.model_rebuild()
ParallelStep.model_rebuild()

_STEP_KEYS = ("fault", "wait", "serial", "parallel")


class _BadStep(Strict):
    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"a step must be a mapping, got {type(value).__name__}")
        given = [k for k in _STEP_KEYS if k in value]
        raise ValueError(f"a step needs exactly one of {', '.join(_STEP_KEYS)} (given: {', '.join(given) or 'none'})")


# -- expectations on the audit trail -------------------------------------------------------------------
class EventMatch(Strict):
    #: the audit event type, e.g. service_ready; empty: any event (of ``service``)
    type: str | None = None
    #: the emitting service; empty means any service
    service: str | None = None
    #: metadata fields that must be equal
    match: dict[str, str] = Field(default_factory=dict)


Attribution = Literal["correlation-id", "target-window", "window", "any"]
#: the kinds the agent ships with (appears, absent, count, order, time_to_recover, stable); a module may
#: register more (``expectations.written()`` is every one a scenario can use now)
EXPECTATION_KINDS = expectations.written()


class Expectation(Strict):
    """An expectation: what every kind shares, and one key per kind (``appears:``, ``count:``, ...),
    each holding that kind's rule. The keys are the registered kinds' (``agent.expectations.KINDS``):
    ``scenario_model()`` adds one optional field per kind with a ``rule`` model, so a kind's module
    alone makes it part of the language; exactly one must be given."""

    name: StepName
    #: the fault step whose injection (and correlation id) this expectation follows
    after: str
    event: EventMatch = Field(default_factory=EventMatch)
    #: how audit events are tied to the injection (see docs/correlation.md)
    attribution: Attribution = "any"
    #: count only what comes after the event of this other expectation (same step, same service):
    #: "risk reports resume" only after "ready again" (see docs/correlation.md)
    only_after: StepName | None = None

    @model_validator(mode="after")
    def _one(self) -> Expectation:
        exactly_one(self, tuple(k for k in expectations.written() if k in type(self).model_fields), "an expectation")
        problem = KINDS[self.kind].check(self.event, self.only_after)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in expectations.written() if getattr(self, k, None) is not None)

    @property
    def rule(self) -> Any:
        """This expectation's rule (the model of its kind's key)."""
        return getattr(self, self.kind)

    @property
    def deadline(self) -> float:
        """Seconds after the injection by which the verdict is decided."""
        return KINDS[self.kind].window(self.rule)


# -- rollbacks, limits, parameters --------------------------------------------------------------------
class RollbackAction(Strict):
    name: StepName
    #: one of the rollback actions of the target's driver
    action: str
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


class RecoveryGate(Strict):
    #: fail the run when its time to recover exceeds the baseline's median by more than this factor
    max_ratio: float = Field(gt=1.0, le=1000.0)


class BaselineGate(Strict):
    """A regression gate against this scenario's own history (agent.history): each time to recover
    is compared with the median of the last ``runs`` PASSED runs."""

    runs: int = Field(default=10, ge=1, le=1000)
    time_to_recover: RecoveryGate


# -- the scenario ----------------------------------------------------------------------------------
class Metadata(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Spec(Strict):
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    targets: dict[str, Target] = Field(min_length=1)
    steady_state: SteadyState = Field(default_factory=SteadyState)
    steps: list[AnyStep] = Field(min_length=1)
    expectations: list[Expectation] = Field(default_factory=list)
    rollbacks: Rollbacks = Field(default_factory=Rollbacks)
    limits: Limits = Field(default_factory=Limits)
    #: a regression gate against the scenario's history
    baseline: BaselineGate | None = None


class Scenario(Strict):
    """A scenario, as code reads it. Validate documents with ``scenario_model()``, whose targets,
    steps and rollback actions are the registered drivers' own models."""

    api_version: Literal["coordinator/v1"]
    kind: Literal["Scenario"]
    metadata: Metadata
    spec: Spec

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Scenario:
        """Validate with the drivers' models (``scenario_model()``) when called on this class."""
        model = scenario_model() if cls is Scenario else cls
        return super(Scenario, model).model_validate(obj, **kwargs)

    @property
    def name(self) -> str:
        return self.metadata.name

    def fault_steps(self) -> list[FaultStep]:
        return [s for s in walk_steps(self.spec.steps) if isinstance(s, FaultStep)]

    def to_data(self) -> dict[str, Any]:
        """Plain data in the YAML shape (camelCase, durations as text), defaults left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


# -- the models built from the drivers -------------------------------------------------------------------
def _tagged(members: list[tuple[Any, str]], tag: Callable[[Any], str]) -> Any:
    """A union chosen by ``tag``: each member a model and its tag (tags start with '@')."""
    return Annotated[Union[tuple(Annotated[m, Tag(t)] for m, t in members)], Discriminator(tag)]  # noqa: UP007


def _of(container: type, *items: Any) -> Any:
    """``container[items]`` for types known only at run time."""
    return GenericAlias(container, items)


def _literal(*values: str) -> Any:
    return Literal.__getitem__(values)


def build(specs: dict[str, drivers.DriverSpec]) -> type[Scenario]:
    """The model that validates scenario documents, for these drivers: targets, fault steps and
    rollback actions are unions of what each driver declares."""
    names = tuple(specs)
    targets: list[tuple[Any, str]] = [(create_model(
        f"{name.title()}Target", __base__=Target, __module__=__name__,
        driver=(_literal(name), ...), selector=(spec.selector, ...)), f"@driver={name}")
        for name, spec in specs.items()]

    def target_tag(value: Any) -> str:
        driver = value.get("driver") if isinstance(value, dict) else getattr(value, "driver", None)
        return f"@driver={driver}" if driver in names else "@bad-target"

    faults: dict[str, list[drivers.FaultKind]] = {}
    for declared in specs.values():
        for kind in declared.faults:
            faults.setdefault(kind.name, []).append(kind)
    fault_steps: list[tuple[Any, str]] = []
    for name, kinds in faults.items():
        parameters = kinds[0].parameters if len(kinds) == 1 else _shared_parameters(name, kinds)
        required = any(f.is_required() for f in parameters.model_fields.values())
        default: Any = ... if required else Field(default_factory=parameters)
        fault_steps.append((create_model(
            f"FaultStep_{name.replace('-', '_')}", __base__=FaultStep, __module__=__name__,
            fault=(_literal(name), ...), parameters=(parameters, default)), f"@fault={name}"))

    def step_tag(value: Any) -> str:
        if not isinstance(value, dict):
            kind = getattr(value, "kind", None)
            if kind == "fault":
                return f"@fault={value.fault}"
            return f"@{kind}" if kind else "@bad-step"
        keys = [k for k in _STEP_KEYS if k in value]
        if len(keys) != 1:
            return "@bad-step"
        if keys[0] == "fault":
            return f"@fault={value['fault']}" if value["fault"] in faults else "@unknown-fault"
        return f"@{keys[0]}"

    later = ForwardRef("Step")  # the union below, which holds these two
    serial = create_model("SerialStep", __base__=SerialStep, __module__=__name__,
                          serial=(_of(list, later), Field(min_length=1)))
    parallel = create_model("ParallelStep", __base__=ParallelStep, __module__=__name__,
                            parallel=(_of(list, later), Field(min_length=1)))
    step = _tagged([(WaitStep, "@wait"), (serial, "@serial"), (parallel, "@parallel"),
                    (_UnknownFault, "@unknown-fault"), (_BadStep, "@bad-step"), *fault_steps], step_tag)
    for group in (serial, parallel):
        group.model_rebuild(_types_namespace={"Step": step})
    actions = sorted({a for spec in specs.values() for a in spec.rollbacks})
    action = create_model("RollbackAction", __base__=RollbackAction, __module__=__name__,
                          action=(_literal(*actions), ...))
    rollbacks = create_model("Rollbacks", __base__=Rollbacks, __module__=__name__,
                             actions=(_of(list, action), Field(default_factory=list)))
    target = _tagged([*targets, (_BadTarget, "@bad-target")], target_tag)
    rules: dict[str, Any] = {name: (Optional[KINDS[name].rule], None) for name in expectations.written()}  # noqa: UP045
    expectation = create_model("Expectation", __base__=Expectation, __module__=__name__, **rules)
    spec = create_model(
        "Spec", __base__=Spec, __module__=__name__,
        expectations=(_of(list, expectation), Field(default_factory=list)),
        targets=(_of(dict, str, target), Field(min_length=1)),
        steps=(_of(list, step), Field(min_length=1)),
        rollbacks=(rollbacks, Field(default_factory=rollbacks)))
    return create_model("Scenario", __base__=Scenario, __module__=__name__, spec=(spec, ...))


def _shared_parameters(name: str, kinds: list[drivers.FaultKind]) -> type[Strict]:
    """The parameters of a fault several drivers declare: every parameter any of them takes, optional
    unless all require it. Whether the target's driver takes each one is checked against that
    driver's own model (``agent.scenario.checks``), and the engine hands the driver its own model."""
    fields: dict[str, Any] = {}
    for kind in kinds:
        for field_name, info in kind.parameters.model_fields.items():
            if field_name in fields:
                continue
            everywhere = all(field_name in k.parameters.model_fields and
                             k.parameters.model_fields[field_name].is_required() for k in kinds)
            if everywhere or not info.is_required():
                fields[field_name] = (info.annotation, info)
            else:  # required by one driver only: that driver's own model says so
                fields[field_name] = (Optional[info.annotation], Field(None, alias=info.alias))  # noqa: UP045
    model: type[Strict] = create_model(f"{name.title().replace('-', '')}Parameters", __base__=Strict,
                                       __module__=__name__, **fields)
    return model


_built: tuple[tuple[int, int], type[Scenario]] | None = None


def scenario_model() -> type[Scenario]:
    """The validating model for the drivers and expectation kinds registered now (rebuilt when they
    change)."""
    global _built
    generation = (drivers.generation(), expectations.generation())
    if _built is None or _built[0] != generation:
        _built = (generation, build(drivers.specs()))
    return _built[1]


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
