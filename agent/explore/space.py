"""The space an exploration searches: the ``Exploration`` document, and how a schedule becomes a scenario.

An exploration document borrows a scenario's parts as they are (``targets``, ``steadyState``,
``expectations``: the properties the system must keep) and adds what a schedule may hold::

    apiVersion: coordinator/v1
    kind: Exploration
    metadata: {name: trading-pairs}
    spec:
      targets: {...}                        # as in a scenario
      expectations:                         # as in a scenario; `after` names a fault below, or is left
        - {name: no-order-lost, ...}        # out: the schedule's first fault
      faults:                               # each may appear at most once in a schedule
        - {name: link-down, fault: down, target: engine-exchange-link, hold: {min: 0.5s, max: 2s}}
        - {name: restart-risk, fault: restart, target: risk-monitor}
      schedule: {faults: {min: 1, max: 3}, start: {max: 2s}, settle: 5s, rest: 8s, maxConcurrentFaults: 3}
      budget: {runs: 20, time: 30m}
      shrink: {tries: 3, failures: 2, runs: 40}
      seed: 7

A schedule renders as an ordinary scenario: a ``wait`` of ``rest`` (when given), one ``parallel``
step whose branches are the faults, each with its ``delay`` (when it starts) and ``duration`` (how
long it is held), then a ``wait`` of ``settle``; each expectation follows its fault's step.

Validation reports every problem of the document at once with file, line and field path, including
those only the rendered scenario shows (an unknown fault, a target's bad selector): they are placed
back where the exploration wrote them.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from agent.errors import Issue, ScenarioError
from agent.fields import NAME_PATTERN, Duration, Strict, format_duration
from agent.scenario import API_VERSION, FAULTS
from agent.scenario.loader import Document, Path, load_yaml
from agent.scenario.validation import _issue, error_path, pydantic_issue, validate_data

#: where the scenario built from an exploration keeps each part, and where the exploration wrote it
_PARALLEL = ("spec", "steps", 0, "parallel")
_SETTLE = ("spec", "steps", 1)


class Span(Strict):
    """A range of seconds; a single duration stands for ``{min: d, max: d}``."""

    min: Duration = 0.0
    max: Duration

    @model_validator(mode="before")
    @classmethod
    def _one_value(cls, value: Any) -> Any:
        return {"min": value, "max": value} if isinstance(value, (str, int, float)) else value

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.min > self.max:
            raise ValueError(f"min ({format_duration(self.min)}) is greater than max ({format_duration(self.max)})")
        return self


class Count(Strict):
    min: int = Field(default=1, ge=1, le=20)
    max: int = Field(default=3, ge=1, le=20)

    @model_validator(mode="after")
    def _ordered(self) -> Count:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Template(Strict):
    """A fault a schedule may hold: a scenario fault step without timing, and the range of its hold."""

    name: str = Field(pattern=NAME_PATTERN)
    fault: str
    target: str
    parameters: dict[str, Any] | None = None
    #: how long a lasting fault is held (instantaneous faults have none)
    hold: Span | None = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _hold_fits_the_fault(self) -> Template:
        kind = FAULTS.get(self.fault)
        if kind is None:
            return self  # the rendered scenario names the unknown fault, with a suggestion
        if kind.lasting and self.hold is None:
            raise ValueError(f"fault '{self.fault}' lasts until reverted: give it a hold (e.g. {{min: 1s, max: 3s}})")
        if not kind.lasting and self.hold is not None:
            raise ValueError(f"fault '{self.fault}' is instantaneous: remove its hold")
        return self

    @property
    def lasting(self) -> bool:
        return self.hold is not None


class ScheduleBounds(Strict):
    #: how many faults one schedule holds (each fault of the space at most once)
    faults: Count = Field(default_factory=Count)
    #: when each fault starts, after the schedule's first one (which starts at 0)
    start: Span = Field(default_factory=lambda: Span(min=0.0, max=2.0))
    #: false: faults never overlap (each starts after the one before has ended)
    overlap: bool = True
    #: how long the run goes on after the faults before it ends (expectations keep their own deadlines)
    settle: Duration = 5.0
    #: a pause before the faults of each run (a ``wait`` step), long enough for the last run's
    #: aftermath to pass (late loss reports, a peer's failure still remembered): otherwise one run's
    #: evidence is the next one's
    rest: Duration = 0.0
    max_concurrent_faults: int = Field(default=10, ge=1, le=1000)


class Budget(Strict):
    #: schedules tried while searching (confirming and shrinking a failure have their own budget)
    runs: int = Field(default=20, ge=1, le=10_000)
    #: the whole exploration, searching and shrinking; the run going on when it ends is finished
    time: Duration | None = None


class Shrinking(Strict):
    #: a candidate still fails when it fails ``failures`` of ``tries`` runs (a flaky system does not
    #: shrink to noise); a found failure is confirmed the same way before shrinking starts
    tries: int = Field(default=3, ge=1, le=20)
    failures: int = Field(default=2, ge=1, le=20)
    #: runs spent confirming and shrinking, at most
    runs: int = Field(default=40, ge=0, le=10_000)

    @model_validator(mode="after")
    def _fits(self) -> Shrinking:
        if self.failures > self.tries:
            raise ValueError(f"failures ({self.failures}) cannot exceed tries ({self.tries})")
        return self


class ExplorationSpec(Strict):
    targets: dict[str, Any] = Field(min_length=1)
    steady_state: dict[str, Any] | None = None
    expectations: list[dict[str, Any]] = Field(default_factory=list)
    faults: list[Template] = Field(min_length=1)
    schedule: ScheduleBounds = Field(default_factory=ScheduleBounds)
    budget: Budget = Field(default_factory=Budget)
    shrink: Shrinking = Field(default_factory=Shrinking)
    seed: int | None = None

    @field_validator("faults")
    @classmethod
    def _distinct(cls, faults: list[Template]) -> list[Template]:
        names = [f.name for f in faults]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"fault names must differ: {', '.join(twice)} used twice")
        taken = sorted(set(names) & {"rest", "settle"})
        if taken:
            raise ValueError(f"'{taken[0]}' is the name of a step every run has: name the fault otherwise")
        return faults


class Metadata(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Exploration(Strict):
    api_version: str = Field(pattern=r"^coordinator/v1$")
    kind: str = Field(pattern=r"^Exploration$")
    metadata: Metadata
    spec: ExplorationSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def template(self, name: str) -> Template:
        return next(t for t in self.spec.faults if t.name == name)


class Space:
    """A validated exploration, its raw parts (rendered into each scenario as written) and its file."""

    def __init__(self, exploration: Exploration, raw: dict[str, Any], source: str) -> None:
        self.exploration = exploration
        self.raw = raw
        self.source = source

    @property
    def name(self) -> str:
        return self.exploration.name

    @property
    def spec(self) -> ExplorationSpec:
        return self.exploration.spec

    def with_budget(self, **budget: Any) -> Space:
        """The same space with these budget fields changed (the CLI's --runs, --time)."""
        spec = self.spec.model_copy(update={"budget": self.spec.budget.model_copy(update=budget)})
        return Space(self.exploration.model_copy(update={"spec": spec}), self.raw, self.source)

    def scenario_data(self, placed: list[tuple[str, float, float | None]], *, name: str | None = None,
                      description: str = "") -> dict[str, Any]:
        """The scenario (plain data, YAML shape) running these faults: (template, start, hold) each."""
        spec = self.raw["spec"]
        steps = []
        for template_name, start, hold in placed:
            template = self.exploration.template(template_name)
            step: dict[str, Any] = {"name": template.name, "fault": template.fault, "target": template.target}
            if template.parameters is not None:
                step["parameters"] = template.parameters
            if start:
                step["delay"] = format_duration(start)
            if hold is not None:
                step["duration"] = format_duration(hold)
            if template.timeout is not None:
                step["timeout"] = format_duration(template.timeout)
            steps.append(step)
        present = [p[0] for p in placed]
        expectations = []
        for raw in spec.get("expectations", []):
            after = raw.get("after")
            if after is None:
                expectations.append({**raw, "after": present[0]})
            elif after in present:
                expectations.append(raw)
            # an expectation following a fault this schedule does not hold does not apply to it
        out_spec: dict[str, Any] = {"targets": spec["targets"]}
        if spec.get("steadyState") is not None:
            out_spec["steadyState"] = spec["steadyState"]
        settle = {"name": "settle", "wait": format_duration(self.spec.schedule.settle)}
        out_spec["steps"] = [{"parallel": steps}, settle]
        if self.spec.schedule.rest:
            out_spec["steps"].insert(0, {"name": "rest", "wait": format_duration(self.spec.schedule.rest)})
        if expectations:
            out_spec["expectations"] = expectations
        out_spec["limits"] = {"maxConcurrentFaults": self.spec.schedule.max_concurrent_faults}
        metadata: dict[str, Any] = {"name": name or self.name}
        if description:
            metadata["description"] = description
        metadata["labels"] = {**self.exploration.metadata.labels, "explored-by": self.name}
        return {"apiVersion": API_VERSION, "kind": "Scenario", "metadata": metadata, "spec": out_spec}


def render_yaml(data: dict[str, Any], header: str = "") -> str:
    """Scenario data as YAML that ``coordinator validate`` reads back the same."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
    return (header + text) if header else text


def load_exploration(text: str | bytes, source: str = "<string>") -> Space:
    """The validated space; ``ScenarioError`` lists every problem with file, line and field path."""
    doc = load_yaml(text, source)
    data = doc.data
    if not isinstance(data, dict):
        raise ScenarioError([Issue(source, 1, 1, "", f"an exploration is a mapping, not {type(data).__name__}")])
    issues: list[Issue] = []
    exploration: Exploration | None = None
    try:
        exploration = Exploration.model_validate(data)
    except ValidationError as exc:
        issues += [pydantic_issue(lambda path, message: _issue(doc, path, message), error, Exploration)
                   for error in exc.errors(include_url=False)
                   # a field of a scenario part (a target's selector) is the rendered scenario's to report
                   if not _inside_scenario_parts(error_path(error))]
    issues += _scenario_issues(doc)
    if issues or exploration is None:
        raise ScenarioError(list(dict.fromkeys(issues)))
    return Space(exploration, data, source)


def load_exploration_file(path: str | FilePath) -> Space:
    file = FilePath(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ScenarioError([Issue(str(file), 0, 0, "", f"cannot read the file: {exc.strerror}")]) from None
    return load_exploration(raw, str(file))


def _inside_scenario_parts(path: Path) -> bool:
    return len(path) > 2 and path[0] == "spec" and path[1] in {"targets", "steadyState", "expectations"}


def _scenario_issues(doc: Document) -> list[Issue]:
    """What the scenario holding every fault of the space says, placed where the exploration wrote it."""
    spec = doc.data.get("spec") if isinstance(doc.data.get("spec"), dict) else {}
    listed = spec.get("faults")
    faults = [f for f in listed if isinstance(f, dict)] if isinstance(listed, list) else []
    if not faults:
        return []
    names = [f.get("name") for f in faults]
    issues: list[Issue] = []
    steps = []
    for fault in faults:
        step = {k: v for k, v in fault.items() if k in {"name", "fault", "target", "parameters", "timeout"}}
        kind = FAULTS.get(str(fault.get("fault")))
        if kind is not None and kind.lasting:
            step["duration"] = "1s"  # the hold is the exploration's own field, checked there
        steps.append(step)
    expectations = []
    raw_expectations = spec.get("expectations")
    for index, expectation in enumerate(raw_expectations if isinstance(raw_expectations, list) else []):
        if not isinstance(expectation, dict):
            expectations.append(expectation)
            continue
        after = expectation.get("after")
        if after is not None and after not in names:
            known = ", ".join(str(n) for n in names)
            issues.append(_issue(doc, ("spec", "expectations", index, "after"),
                                 f"'{after}' is not a fault of this exploration (spec.faults: {known})"))
            after = names[0]
        expectations.append({**expectation, "after": after if after is not None else names[0]})
    scenario_spec: dict[str, Any] = {"targets": spec.get("targets"), "steps": [{"parallel": steps},
                                                                               {"name": "settle", "wait": "1s"}]}
    if "steadyState" in spec:
        scenario_spec["steadyState"] = spec["steadyState"]
    if expectations:
        scenario_spec["expectations"] = expectations
    data = {"apiVersion": API_VERSION, "kind": "Scenario",
            "metadata": {"name": "exploration"}, "spec": scenario_spec}
    _, found = validate_data(data, doc, where=_back)
    return issues + [i for i in found if not i.path.startswith("spec.steps[1]")]


def _back(path: Path) -> Path:
    """A path of the rendered scenario -> the path in the exploration that wrote it."""
    if path[: len(_PARALLEL)] == _PARALLEL and len(path) > len(_PARALLEL):
        rest = path[len(_PARALLEL) + 1:]
        if rest[:1] == ("duration",):
            rest = ("hold",)
        return ("spec", "faults", path[len(_PARALLEL)], *rest)
    if path[:2] == ("spec", "steps"):
        return ("spec", "faults")
    if path[:2] == ("spec", "metadata"):
        return ("metadata",)
    return path
