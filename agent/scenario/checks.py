"""Cross-reference checks that a single field's type cannot express.

They run on the plain data (after parameter substitution), so they report alongside schema errors
even when other parts of the document are malformed: every problem at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

from agent import drivers
from agent.scenario.faults import FAULTS
from agent.scenario.loader import Path
from agent.scenario.models import suggest

Found = tuple[Path, str]


def cross_references(data: Any, allowed_targets: list[str] | None = None) -> list[Found]:
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        return []
    spec = data["spec"]
    targets = spec.get("targets") if isinstance(spec.get("targets"), dict) else {}
    names = tuple(targets)
    found: list[Found] = []

    fault_steps: dict[str, Path] = {}
    all_names: dict[str, Path] = {}
    for path, step in _steps(spec.get("steps"), ("spec", "steps")):
        name = step.get("name")
        if isinstance(name, str):
            if name in all_names:
                found.append(((*path, "name"), f"step name '{name}' is used twice"))
            all_names.setdefault(name, path)
            if "fault" in step:
                fault_steps.setdefault(name, path)
        if "fault" not in step:
            continue
        target = step.get("target")
        if not isinstance(target, str):
            continue
        if target not in targets:
            found.append(((*path, "target"), f"unknown target '{target}'{_hint(target, names)}"))
            continue
        kind = FAULTS.get(step.get("fault"))  # type: ignore[arg-type]
        spec_target = targets[target] if isinstance(targets[target], dict) else {}
        driver = spec_target.get("driver")
        able = drivers.drivers_of(kind.name) if kind else []
        if kind and isinstance(driver, str) and driver in drivers.specs() and driver not in able:
            found.append(((*path, "fault"), f"fault '{kind.name}' needs a {' or '.join(able)} target; "
                                            f"target '{target}' uses driver '{driver}'"))
        elif kind and isinstance(driver, str) and len(able) > 1:
            found += _parameters_for(driver, kind.name, step.get("parameters"), (*path, "parameters"))
        spec_of = drivers.specs().get(driver) if isinstance(driver, str) else None
        selector = spec_target.get("selector")
        own = drivers.fault(spec_of.name, kind.name) if kind and spec_of is not None else None
        if own is not None and spec_of is not None and spec_of.check_step and isinstance(selector, dict):
            problem = spec_of.check_step(own, selector)
            if problem:
                found.append(((*path, "fault"), f"target '{target}': {problem}"))

    expectations = spec.get("expectations")
    listed = [e for e in expectations if isinstance(e, dict)] if isinstance(expectations, list) else []
    for i, expectation in enumerate(expectations if isinstance(expectations, list) else []):
        after = expectation.get("after") if isinstance(expectation, dict) else None
        if isinstance(after, str) and after not in fault_steps:
            hint = _hint(after, tuple(fault_steps)) if fault_steps else "; the scenario has no fault step"
            found.append((("spec", "expectations", i, "after"), f"'{after}' is not a fault step{hint}"))
        if isinstance(expectation, dict) and isinstance(expectation.get("onlyAfter"), str):
            problem = _only_after(expectation, listed)
            if problem:
                found.append((("spec", "expectations", i, "onlyAfter"), problem))

    probes = (spec.get("steadyState") or {}).get("probes") if isinstance(spec.get("steadyState"), dict) else None
    for i, probe in enumerate(probes if isinstance(probes, list) else []):
        if not isinstance(probe, dict):
            continue
        for kind, body in probe.items():
            if isinstance(body, dict) and isinstance(body.get("target"), str) and body["target"] not in targets:
                found.append((("spec", "steadyState", "probes", i, kind, "target"),
                              f"unknown target '{body['target']}'{_hint(body['target'], names)}"))

    rollbacks = spec.get("rollbacks") if isinstance(spec.get("rollbacks"), dict) else {}
    actions = rollbacks.get("actions")
    for i, action in enumerate(actions if isinstance(actions, list) else []):
        target = action.get("target") if isinstance(action, dict) else None
        if isinstance(target, str) and target not in targets:
            found.append((("spec", "rollbacks", "actions", i, "target"),
                          f"unknown target '{target}'{_hint(target, names)}"))
            continue
        spec_target = targets.get(target) if isinstance(target, str) else None
        driver = drivers.specs().get(str(spec_target.get("driver"))) if isinstance(spec_target, dict) else None
        verb = action.get("action") if isinstance(action, dict) else None
        if driver is not None and isinstance(verb, str) and verb not in driver.rollbacks:
            offered = ", ".join(driver.rollbacks) or "none"
            found.append((("spec", "rollbacks", "actions", i, "action"),
                          f"the {driver.name} driver of target '{target}' has no rollback action '{verb}' "
                          f"(it offers: {offered})"))

    if allowed_targets is not None:
        for name, target in targets.items():
            if not isinstance(target, dict):
                continue
            label = target.get("service") or name
            given = target.get("selector")
            refused = refused_by_allow_list(label, str(target.get("driver")), given if isinstance(given, dict) else {},
                                            allowed_targets)
            if refused:
                found.append((("spec", "targets", name), f"{refused} ({', '.join(allowed_targets)})"))
    return found


def _parameters_for(driver: str, fault: str, given: Any, path: Path) -> list[Found]:
    """A fault several drivers share: do its parameters fit the target's driver? (Their types were
    checked against every driver's parameters; here, which ones this driver takes.)"""
    own = drivers.fault(driver, fault)
    if own is None or not isinstance(given, dict):
        return []
    fields = own.parameters.model_fields
    names = {info.alias or name: name for name, info in fields.items()}
    found: list[Found] = [((*path, key), f"the {driver} driver's '{fault}' takes no parameter '{key}'"
                           + (f" (it takes: {', '.join(names)})" if names else ""))
                          for key in given if key not in names]
    found += [((*path, alias), f"the {driver} driver's '{fault}' needs parameter '{alias}'")
              for alias, name in names.items() if fields[name].is_required() and alias not in given]
    return found


def _only_after(expectation: dict[str, Any], expectations: list[dict[str, Any]]) -> str | None:
    """Why ``onlyAfter`` cannot name what it names, or None: it must be another expectation of the
    same fault step that waits for one event (appears, timeToRecover) of a given type from the same
    service, so that the worker watching this one sees that event too."""
    name = expectation["onlyAfter"]
    by_name = {e.get("name"): e for e in expectations if isinstance(e.get("name"), str)}
    gate = by_name.get(name)
    if gate is None:
        return f"'{name}' is not an expectation of this scenario{_hint(name, tuple(n for n in by_name if n))}"
    if gate is expectation:
        return "an expectation cannot wait for itself"
    if gate.get("after") != expectation.get("after"):
        return (f"'{name}' follows '{gate.get('after')}', this expectation '{expectation.get('after')}': "
                "both must follow the same fault step")
    if not any(k in gate for k in ("appears", "timeToRecover")):
        return f"'{name}' must wait for an event (appears or timeToRecover) for its event to open this one"
    event: dict[str, Any] = gate["event"] if isinstance(gate.get("event"), dict) else {}
    mine: dict[str, Any] = expectation["event"] if isinstance(expectation.get("event"), dict) else {}
    if not event.get("type"):
        return f"'{name}' names no event.type: there is no one event to wait for"
    if event.get("service") != mine.get("service"):
        return (f"'{name}' watches service '{event.get('service')}', this expectation '{mine.get('service')}': "
                "both must name the same event.service")
    return None


def target_allowed(service: str, patterns: list[str]) -> bool:
    """Does the agent's allow-list (unqualified glob patterns on service names) admit ``service``?"""
    return any(fnmatch.fnmatchcase(service, pattern) for pattern in patterns if not _qualified(pattern))


def touched(driver: str, selector: dict[str, Any]) -> list[str] | None:
    """What a driver acts on for ``selector`` (its spec's ``touches``): a supervisord program, containers,
    a Toxiproxy proxy, Kafka topics. None when the driver is unknown or cannot say."""
    spec = drivers.specs().get(driver)
    if spec is None or spec.touches is None:
        return None
    return spec.touches(selector)


def refused_by_allow_list(service: str, driver: str, selector: dict[str, Any], patterns: list[str]) -> str | None:
    """Why the allow-list refuses this target, or None when it admits it.

    Unqualified patterns (``risk-*``) name services, and also admit what a driver touches;
    ``DRIVER:PATTERN`` (``toxiproxy:engine-to-*``, ``supervisor:risk-monitor``, ``kafka:orders.*``)
    admits only what that driver touches. A target needs its service admitted and everything its
    driver would touch (program, proxy, topics) admitted too.
    """
    if not target_allowed(service, patterns):
        return f"target '{service}' is not in the agent's allow-list"
    if driver not in drivers.specs():
        return f"target '{service}': driver '{driver}' is not a driver this agent has"
    mine = [p.partition(":")[2] for p in patterns if p.partition(":")[0] == driver and _qualified(p)]
    plain = [p for p in patterns if not _qualified(p)]
    names = touched(driver, selector)
    if names is None:
        if mine:  # entries for this driver exist, and nothing tells whether they admit the target
            return (f"target '{service}': driver '{driver}' does not say what a selector touches, so the "
                    f"allow-list's '{driver}:' entries cannot admit it")
        return None
    for name in names:
        if not any(fnmatch.fnmatchcase(name, p) for p in plain + mine):
            return f"target '{service}': {driver} '{name}' is not in the agent's allow-list"
    return None


def _qualified(pattern: str) -> bool:
    return ":" in pattern and pattern.partition(":")[0] in drivers.specs()


def _steps(steps: Any, path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    if not isinstance(steps, list):
        return
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        here = (*path, i)
        yield here, step
        for group in ("serial", "parallel"):
            if group in step:
                yield from _steps(step[group], (*here, group))


def _hint(name: str, choices: tuple[str, ...]) -> str:
    return suggest(name, choices) if choices else ""
