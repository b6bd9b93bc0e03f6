from __future__ import annotations

import pytest

from agent.errors import ScenarioError
from agent.scenario import load_scenario, plan
from agent.scenario.parameters import Parameter, coerce, resolve, substitute
from agent.scenario.probes import Tolerance


def _param(**fields: object) -> Parameter:
    return Parameter.model_validate(fields)


@pytest.mark.parametrize(("definition", "text", "value"), [
    ({"type": "int", "min": 1, "max": 10}, "3", 3),
    ({"type": "float"}, "0.25", 0.25),
    ({"type": "bool"}, "yes", True),
    ({"type": "bool"}, "false", False),
    ({"type": "duration", "max": "1m"}, "250ms", 0.25),
    ({"type": "enum", "values": ["a", "b"]}, "b", "b"),
    ({"type": "string"}, "anything", "anything"),
])
def test_command_line_values_are_parsed_to_the_parameter_type(definition: dict, text: str, value: object) -> None:
    assert coerce(_param(**definition), text, from_text=True) == value


@pytest.mark.parametrize(("definition", "value", "fragment"), [
    ({"type": "int", "min": 1, "max": 10}, 11, "above the maximum 10"),
    ({"type": "int"}, "3", "is not an int"),
    ({"type": "int"}, 2.5, "is not an int"),
    ({"type": "duration", "min": "1s"}, "100ms", "0.1s is below the minimum 1s"),
    ({"type": "enum", "values": ["a", "b"]}, "c", "'c' is not one of a, b"),
    ({"type": "bool"}, "true", "is not a bool"),
])
def test_typed_values_out_of_type_or_bounds_are_refused(definition: dict, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        coerce(_param(**definition), value, from_text=False)


def test_json_numbers_that_are_whole_serve_as_ints() -> None:
    assert coerce(_param(type="int"), 4.0, from_text=False) == 4


@pytest.mark.parametrize(("definition", "fragment"), [
    ({"type": "enum"}, "an enum parameter needs values"),
    ({"type": "string", "min": 1}, "min and max apply to int, float and duration"),
    ({"type": "int", "min": 5, "max": 1}, "min 5 is above max 1"),
    ({"type": "int", "default": 20, "max": 10}, "default 20 is above the maximum 10"),
    ({"type": "duration", "default": "soon"}, "default: expected a duration"),
])
def test_contradictory_definitions_are_refused(definition: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        _param(**definition)


def test_resolution_uses_overrides_then_defaults_and_names_what_is_missing() -> None:
    definitions = {"a": _param(type="int", default=1), "b": _param(type="string"),
                   "c": _param(type="bool", default=False)}
    values, issues = resolve(definitions, {"c": "true"}, from_text=True)
    assert values == {"a": 1, "c": True}
    assert [i.message for i in issues] == ["parameter 'b' has no default and no value was given"]


def test_substitution_keeps_types_for_whole_values_and_interpolates_in_text() -> None:
    data = {"spec": {"n": "${n}", "label": "n=${n}, d=${d}, f=${f}", "literal": "$${n}", "parameters": {"x": "${n}"}}}
    out, issues = substitute(data, {"n": 3, "d": 1.5, "f": True}, {"n": "int", "d": "duration", "f": "bool"})
    assert issues == []
    assert out["spec"]["n"] == 3
    assert out["spec"]["label"] == "n=3, d=1.5s, f=true"
    assert out["spec"]["literal"] == "${n}"
    assert out["spec"]["parameters"] == {"x": "${n}"}


SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: p}
spec:
  parameters:
    hold: {type: duration, default: 10s}
    pause: {type: duration}
  targets:
    rm: {driver: supervisor, selector: {program: rm}}
    link: {driver: toxiproxy, selector: {proxy: x}}
  steps:
    - {name: slow, fault: latency, target: link, duration: "${hold}", background: true, parameters: {latency: 1s}}
    - {wait: "${pause}"}
    - parallel:
        - {name: stop-rm, fault: stop, target: rm, duration: 5s, delay: 1s}
        - serial:
            - {wait: 2s}
            - {name: kill-rm, fault: kill, target: rm}
"""


def test_a_parameter_without_default_must_be_given() -> None:
    with pytest.raises(ScenarioError, match="parameter 'pause' has no default"):
        load_scenario(SCENARIO)


def test_the_plan_lays_out_offsets_of_series_parallel_and_background_steps() -> None:
    scenario = load_scenario(SCENARIO, overrides={"pause": "3s"}, overrides_from_text=True)
    laid = [(s.offset, s.kind, s.name) for s in plan(scenario) if s.kind in {"fault", "wait"}]
    assert laid == [(0.0, "fault", "slow"), (0.0, "wait", ""), (4.0, "fault", "stop-rm"),
                    (3.0, "wait", ""), (5.0, "fault", "kill-rm")]


@pytest.mark.parametrize(("tolerance", "observed", "ok"), [
    ({"equals": "SERVING"}, "SERVING", True),
    ({"equals": "SERVING"}, "NOT_SERVING", False),
    ({"equals": 200}, "200", True),
    ({"equals": True}, "true", True),
    ({"oneOf": [200, 204]}, 204, True),
    ({"oneOf": [200, 204]}, 500, False),
    ({"range": {"max": 100}}, 42, True),
    ({"range": {"min": 1, "max": 5}}, 6, False),
    ({"range": {"min": 1}}, "not a number", False),
    ({"regex": "^(healthy|ready)$"}, "ready", True),
    ({"regex": "^ready$"}, "ready-ish", False),
    ({"contains": "ok"}, "all ok here", True),
    ({"comparator": {"op": "<", "value": 50}}, 49, True),
    ({"comparator": {"op": ">=", "value": 3}}, 2, False),
    ({"comparator": {"op": "!=", "value": "DOWN"}}, "UP", True),
])
def test_tolerances_judge_observations(tolerance: dict, observed: object, ok: bool) -> None:
    result, reason = Tolerance.model_validate(tolerance).check(observed)
    assert result is ok
    assert repr(observed) in reason or str(observed) in reason


@pytest.mark.parametrize(("tolerance", "fragment"), [
    ({}, "a tolerance needs exactly one of equals, oneOf, range, regex, contains, comparator (given: none)"),
    ({"equals": 1, "regex": "x"}, "(given: equals, regex)"),
    ({"regex": "("}, "invalid regex"),
    ({"range": {}}, "a range needs min, max or both"),
])
def test_malformed_tolerances_say_why(tolerance: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Tolerance.model_validate(tolerance)
