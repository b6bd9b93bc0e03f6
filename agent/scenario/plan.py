"""A dry-run plan: what a scenario would do, in order, without touching anything.

Offsets are the earliest start of each step counted from the first step, assuming injections take
no time; a background fault runs beside the steps after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.scenario.base import format_duration
from agent.scenario.faults import FAULTS
from agent.scenario.models import FaultStep, ParallelStep, Scenario, SerialStep, WaitStep


@dataclass(frozen=True)
class PlannedStep:
    offset: float
    depth: int
    kind: str
    name: str
    detail: str
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return {"offset_s": self.offset, "kind": self.kind, "name": self.name, "detail": self.detail,
                "duration_s": self.duration, "depth": self.depth}


def plan(scenario: Scenario) -> list[PlannedStep]:
    out: list[PlannedStep] = []
    _serial(scenario, scenario.spec.steps, 0.0, 0, out)
    return out


def total_duration(scenario: Scenario) -> float:
    return _serial(scenario, scenario.spec.steps, 0.0, 0, [])


def render(scenario: Scenario) -> str:
    lines = [f"plan for '{scenario.name}' (dry run: nothing is touched)"]
    probes = scenario.spec.steady_state.probes
    if probes:
        lines.append("  steady state: " + ", ".join(f"{p.name} [{p.mode}]" for p in probes))
    for step in plan(scenario):
        pad = "  " * step.depth
        lines.append(f"  +{format_duration(step.offset):<7} {pad}{step.kind:<9} {step.name} {step.detail}".rstrip())
    for e in scenario.spec.expectations:
        lines.append(f"  expect {e.name}: {e.kind.replace('_', '-')} after '{e.after}', "
                     f"decided by +{format_duration(e.deadline)}")
    if scenario.spec.rollbacks.actions:
        lines.append(f"  rollbacks ({scenario.spec.rollbacks.strategy}): "
                     + ", ".join(a.name for a in scenario.spec.rollbacks.actions))
    lines.append(f"  steps take about {format_duration(total_duration(scenario))}; "
                 f"limit {format_duration(scenario.spec.limits.timeout)}")
    return "\n".join(lines)


def _serial(scenario: Scenario, steps: list[Any], start: float, depth: int, out: list[PlannedStep]) -> float:
    now = start
    for step in steps:
        now = _one(scenario, step, now, depth, out)
    return now


def _one(scenario: Scenario, step: Any, now: float, depth: int, out: list[PlannedStep]) -> float:
    if isinstance(step, WaitStep):
        out.append(PlannedStep(now, depth, "wait", step.name or "", format_duration(step.wait), step.wait))
        return now + step.wait
    if isinstance(step, SerialStep):
        out.append(PlannedStep(now, depth, "serial", step.name or "", "", 0.0))
        return _serial(scenario, step.serial, now, depth + 1, out)
    if isinstance(step, ParallelStep):
        out.append(PlannedStep(now, depth, "parallel", step.name or "", "", 0.0))
        ends = [_one(scenario, s, now, depth + 1, out) for s in step.parallel]
        return max(ends, default=now)
    assert isinstance(step, FaultStep)
    start = now + step.delay
    target = scenario.spec.targets[step.target]
    lasting = step.duration or 0.0
    params = step.parameters.model_dump(mode="json", by_alias=True)
    detail = f"{step.fault} on {step.target} ({target.driver})"
    if params:
        detail += " " + ", ".join(f"{k}={v}" for k, v in params.items())
    if lasting:
        detail += f" for {format_duration(lasting)}" + (" in background" if step.background else "")
    out.append(PlannedStep(start, depth, "fault", step.name, detail, lasting))
    if step.background or not FAULTS[step.fault].lasting:
        return start
    return start + lasting
