"""Property: any valid scenario survives model -> YAML -> model unchanged."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.scenario import load_scenario
from agent.scenario.models import Scenario

names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_characters="$", exclude_categories=("Cs", "Cc")), max_size=30)
seconds = st.one_of(st.integers(0, 3600).map(float), st.floats(0, 3600, allow_nan=False, allow_infinity=False))
positive = st.floats(0.001, 600, allow_nan=False, allow_infinity=False)


def duration(strategy: st.SearchStrategy[float] = seconds) -> st.SearchStrategy[Any]:
    """Durations written as a number, as "Ns", or as "Nms" where that is exact."""
    def written(value: float) -> st.SearchStrategy[Any]:
        options: list[Any] = [st.just(value), st.just(f"{value!r}s")]
        if value.is_integer():
            options.append(st.just(f"{int(value)}s"))
        return st.one_of(options)
    return strategy.flatmap(written)


TOXIC_PARAMS = {
    "latency": st.fixed_dictionaries({"latency": duration()},
                                     optional={"jitter": duration(), "toxicity": st.floats(0, 1)}),
    "bandwidth": st.fixed_dictionaries({"rate": st.integers(0, 10**6)},
                                       optional={"stream": st.sampled_from(["upstream", "downstream"])}),
    "timeout": st.fixed_dictionaries({}, optional={"timeout": duration()}),
    "slicer": st.fixed_dictionaries({"averageSize": st.integers(1, 10**4)}, optional={"delay": duration()}),
    "limit-data": st.fixed_dictionaries({"bytes": st.integers(0, 10**9)}),
    "down": st.just({}),
}
PROCESS_PARAMS = {
    "kill": st.fixed_dictionaries({}, optional={"signal": st.sampled_from(["SIGKILL", "SIGTERM", "SIGQUIT"])}),
    "restart": st.just({}), "stop": st.just({}), "pause": st.just({}),
}
KAFKA_PARAMS = {
    "inject-events": st.fixed_dictionaries({}, optional={
        "count": st.integers(1, 1000), "key": text,
        "payload": st.dictionaries(names, st.one_of(st.integers(-10**6, 10**6), text, st.booleans()), max_size=3),
        "headers": st.dictionaries(names, text, max_size=2)}),
    "duplicate-events": st.fixed_dictionaries({}, optional={"copies": st.integers(1, 5),
                                                            "probability": st.floats(0, 1)}),
    "drop-events": st.fixed_dictionaries({}, optional={"probability": st.floats(0, 1)}),
    "delay-events": st.fixed_dictionaries({"delay": duration()}),
    "corrupt-events": st.fixed_dictionaries({}, optional={
        "mode": st.sampled_from(["truncate", "garbage", "flip-bits"])}),
}
LASTING = {"stop", "pause", "latency", "bandwidth", "timeout", "slicer", "limit-data", "down", "duplicate-events",
           "drop-events", "delay-events", "corrupt-events"}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    targets: dict[str, Any] = {
        "proc": {"driver": "supervisor", "selector": {"program": draw(names)}},
        "link": {"driver": "toxiproxy", "selector": {"proxy": draw(names)}},
        "topic": {"driver": "kafka", "service": draw(names), "selector": {"topic": "t.v1", "source": "s.v1"}},
    }
    by_target = {"proc": PROCESS_PARAMS, "link": TOXIC_PARAMS, "topic": KAFKA_PARAMS}
    counter = iter(range(10_000))

    def fault_step() -> dict[str, Any]:
        target = draw(st.sampled_from(sorted(by_target)))
        fault = draw(st.sampled_from(sorted(by_target[target])))
        step: dict[str, Any] = {"name": f"s{next(counter)}", "fault": fault, "target": target}
        params = draw(by_target[target][fault])
        if params or draw(st.booleans()):
            step["parameters"] = params
        if fault in LASTING:
            step["duration"] = draw(duration(positive))
            if draw(st.booleans()):
                step["background"] = True
        if draw(st.booleans()):
            step["delay"] = draw(duration())
        return step

    def steps(depth: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["fault", "fault", "wait"] + (["serial", "parallel"] if depth < 2 else [])))
            if kind == "fault":
                out.append(fault_step())
            elif kind == "wait":
                out.append({"wait": draw(duration())})
            else:
                out.append({kind: steps(depth + 1)})
        return out

    spec: dict[str, Any] = {"targets": targets, "steps": steps(0)}
    faults = [s for s in _walk(spec["steps"]) if "fault" in s]
    if not faults:
        spec["steps"].append(fault_step())
        faults = [spec["steps"][-1]]
    expectations = []
    for i in range(draw(st.integers(0, 3))):
        rule = draw(st.sampled_from(["appears", "absent", "count", "timeToRecover", "order"]))
        expectation: dict[str, Any] = {"name": f"e{i}", "after": draw(st.sampled_from(faults))["name"],
                                       "attribution": draw(st.sampled_from(["correlation-id", "target-window", "any"]))}
        if rule == "order":
            expectation["order"] = {"events": draw(st.lists(names, min_size=2, max_size=4)), "within": draw(duration())}
            expectation["event"] = {"service": draw(names)}
        else:
            expectation["event"] = {"type": draw(names), "service": draw(names)}
            if rule == "count":
                expectation["count"] = {"min": draw(st.integers(0, 5)), "within": draw(duration())}
            elif rule == "timeToRecover":
                expectation["timeToRecover"] = {"max": draw(duration())}
            else:
                expectation[rule] = {"within": draw(duration())}
        expectations.append(expectation)
    spec["expectations"] = expectations
    probes = []
    for i in range(draw(st.integers(0, 2))):
        probes.append({"name": f"p{i}", "mode": draw(st.sampled_from(["SOT", "EOT", "Edge", "Continuous", "OnChaos"])),
                       "grpcHealth": {"target": "proc"}, "tolerance": {"equals": "SERVING"},
                       "interval": draw(duration(positive))})
    spec["steadyState"] = {"probes": probes}
    spec["rollbacks"] = {"strategy": draw(st.sampled_from(["default", "always", "never", "deviated"])),
                         "actions": [{"name": "r0", "action": "start", "target": "proc"}]}
    spec["limits"] = {"timeout": draw(duration(positive)), "maxConcurrentFaults": draw(st.integers(1, 50))}
    return {"apiVersion": "coordinator/v1", "kind": "Scenario",
            "metadata": {"name": draw(names), "description": draw(text),
                         "labels": draw(st.dictionaries(names, text, max_size=2))},
            "spec": spec}


def _walk(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for step in steps:
        out.append(step)
        for group in ("serial", "parallel"):
            out.extend(_walk(step.get(group, [])))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_valid_scenarios_round_trip_through_yaml(raw: dict[str, Any]) -> None:
    model = Scenario.model_validate(raw)
    document = yaml.safe_dump(model.to_data(), sort_keys=False, allow_unicode=True)
    again = load_scenario(document, "roundtrip.yaml")
    assert again == model
    assert again.to_data() == model.to_data()
