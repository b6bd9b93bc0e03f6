"""A broken scenario reports every problem at once, with file, line, column and field path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ScenarioError
from agent.scenario import load_scenario, load_scenario_file

ROOT = Path(__file__).resolve().parents[3]
BROKEN = ROOT / "tests" / "fixtures" / "scenarios" / "broken.yaml"

EXPECTED = [
    (4, 3, "metadata.name", "'Bad_Name' is not a valid name"),
    (5, 3, "metadata.descripton", "unknown field 'descripton'; did you mean 'description'?"),
    (13, 5, "spec.targets.link", "unknown driver 'toxiprox'; did you mean 'toxiproxy'?"),
    (18, 7, "spec.steps[0].fault", "unknown fault 'kil'; did you mean 'kill'?"),
    (22, 7, "spec.steps[1].target", "unknown target 'risk-monitr'; did you mean 'risk-monitor'?"),
    (24, 38, "spec.steps[1].parameters.jiter", "unknown field 'jiter'; did you mean 'jitter'?"),
    (28, 7, "spec.steps[2].timeout", "unknown parameter '${deadlin}'; did you mean 'deadline'?"),
    (29, 7, "spec.steps[3].wait", "expected a duration"),
    (33, 20, "spec.steps[4].parameters.signal", "'SIGKIL' is not allowed here; did you mean 'SIGKILL'?"),
    (36, 7, "spec.expectations[0].after", "'kill-itt' is not a fault step; did you mean 'kill-it'?"),
    (42, 15, "spec.expectations[1].count.min", "expected an int, got str '1'"),
]


def test_every_problem_is_reported_at_once_with_its_position() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_file(BROKEN)
    issues = caught.value.issues
    assert len(issues) == len(EXPECTED)
    for issue, (line, column, path, fragment) in zip(issues, EXPECTED, strict=True):
        assert issue.file == str(BROKEN)
        assert (issue.line, issue.column, issue.path) == (line, column, path)
        assert fragment in issue.message


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, check=False, timeout=60)


def test_validate_prints_every_error_and_exits_non_zero() -> None:
    done = _cli("validate", str(BROKEN))
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith(str(BROKEN))]
    assert len(lines) == len(EXPECTED)
    assert f"{BROKEN}:18:7: spec.steps[0].fault: unknown fault 'kil'; did you mean 'kill'?" in lines
    assert "1 of 1 file(s) invalid, 11 problem(s)" in done.stderr


def test_validate_json_output_lists_errors_with_positions() -> None:
    done = _cli("validate", "--output", "json", str(BROKEN), str(ROOT / "scenarios"))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False
    broken = next(f for f in report["files"] if f["file"] == str(BROKEN))
    assert broken["errors"][3] == {"file": str(BROKEN), "line": 18, "column": 7, "path": "spec.steps[0].fault",
                                   "message": "unknown fault 'kil'; did you mean 'kill'?"}
    assert sum(f["valid"] for f in report["files"]) == len(list((ROOT / "scenarios").glob("*.yaml")))


def test_validate_exits_zero_for_valid_scenarios_and_prints_a_plan() -> None:
    done = _cli("validate", "--plan", str(ROOT / "scenarios" / "kill-trading-engine.yaml"))
    assert done.returncode == 0, done.stderr
    assert "valid (kill-trading-engine)" in done.stdout
    assert "kill on trading-engine (supervisor) signal=SIGKILL" in done.stdout


def test_a_bad_parameter_override_is_named() -> None:
    done = _cli("validate", "--param", "latency=fast", "--param", "latncy=1s",
                str(ROOT / "scenarios" / "engine-exchange-latency.yaml"))
    assert done.returncode == 1
    assert "parameter 'latency': value: expected a duration" in done.stderr
    assert "the scenario has no parameter 'latncy'; did you mean 'latency'?" in done.stderr


def test_schema_is_json_schema_for_editors() -> None:
    done = _cli("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "_BadStep" not in done.stdout and "_UnknownFault" not in done.stdout
    assert {"Metadata", "Spec", "Expectation"} <= set(schema["$defs"])


def test_scenarios_list_shows_the_catalog() -> None:
    done = _cli("scenarios", "list", "--output", "json")
    assert done.returncode == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)["scenarios"]}
    assert "restart-risk-monitor-during-trading" in names


MINIMAL = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: m}
spec:
  targets:
    rm: {driver: supervisor, selector: {program: rm}}
    link: {driver: toxiproxy, selector: {proxy: p}}
    topic: {driver: kafka, selector: {topic: t}}
  steps:
"""


@pytest.mark.parametrize(("steps", "path", "fragment"), [
    ("    - {name: a, fault: latency, target: rm, duration: 5s, parameters: {latency: 1s}}",
     "spec.steps[0].fault", "fault 'latency' needs a toxiproxy target; target 'rm' uses driver 'supervisor'"),
    ("    - {name: a, fault: latency, target: link, parameters: {latency: 1s}}",
     "spec.steps[0]", "fault 'latency' lasts until reverted: give it a duration"),
    ("    - {name: a, fault: kill, target: rm, duration: 5s}",
     "spec.steps[0]", "fault 'kill' is instantaneous: remove its duration"),
    ("    - {name: a, fault: latency, target: link, duration: 5s}",
     "spec.steps[0].parameters", "missing required field 'parameters'"),
    ("    - {name: a, fault: drop-events, target: topic, duration: 5s}",
     "spec.steps[0].fault", "needs selector.source"),
    ("    - {name: a, wait: 1s, fault: kill}",
     "spec.steps[0]", "a step needs exactly one of fault, wait, serial, parallel (given: fault, wait)"),
    ("    - {name: a, fault: kill, target: rm}\n    - {name: a, fault: restart, target: rm}",
     "spec.steps[1].name", "step name 'a' is used twice"),
    ("    - serial: []", "spec.steps[0].serial", "list should have at least 1 item"),
])
def test_structural_mistakes_are_explained(steps: str, path: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(MINIMAL + steps + "\n")
    found = {(i.path, i.message) for i in caught.value.issues}
    assert any(p == path and fragment in m for p, m in found), found


def test_targets_outside_the_allow_list_are_refused() -> None:
    text = MINIMAL + "    - {name: a, fault: kill, target: rm}\n"
    with pytest.raises(ScenarioError, match="target 'link' is not in the agent's allow-list"):
        load_scenario(text, allowed_targets=["rm", "topic"])
    load_scenario(text, allowed_targets=["*"])


ANY_EVENT = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: any-event}}
spec:
  targets:
    risk: {{driver: supervisor, service: risk-monitor, selector: {{program: risk-monitor}}}}
  steps:
    - {{name: restart-risk, fault: restart, target: risk}}
  expectations:
    - {{name: risk-speaks, after: restart-risk, event: {event}, appears: {{within: 10s}}}}
"""


def test_an_expectation_may_name_only_a_service_but_not_nothing() -> None:
    scenario = load_scenario(ANY_EVENT.format(event="{service: risk-monitor}"), "any.yaml")
    assert scenario.spec.expectations[0].event.type is None
    with pytest.raises(ScenarioError) as caught:
        load_scenario(ANY_EVENT.format(event="{}"), "nothing.yaml")
    assert "an expectation needs event.type, event.service or both" in str(caught.value)


ONLY_AFTER = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: only-after}
spec:
  targets:
    risk: {driver: supervisor, selector: {program: risk-monitor}}
  steps:
    - {name: restart-risk, fault: restart, target: risk}
    - {name: restart-again, fault: restart, target: risk}
  expectations:
    - {name: ready, after: restart-risk, event: {type: service_ready, service: risk-monitor}, appears: {within: 9s}}
    - {name: lost, after: restart-risk, event: {type: order_lost}, absent: {within: 9s}}
    - {name: later, after: restart-again, event: {type: service_ready, service: risk-monitor}, appears: {within: 9s}}
    - {name: any, after: restart-risk, event: {service: risk-monitor}, appears: {within: 9s}}
    - {name: reports, after: restart-risk, onlyAfter: %s, event: {type: risk_report, service: %s},
       appears: {within: 9s}}
"""


@pytest.mark.parametrize(("gate", "service", "fragment"), [
    ("reddy", "risk-monitor", "'reddy' is not an expectation of this scenario; did you mean 'ready'?"),
    ("reports", "risk-monitor", "an expectation cannot wait for itself"),
    ("later", "risk-monitor", "'later' follows 'restart-again', this expectation 'restart-risk'"),
    ("lost", "risk-monitor", "'lost' must wait for an event (appears or timeToRecover)"),
    ("any", "risk-monitor", "'any' names no event.type"),
    ("ready", "trading-engine", "'ready' watches service 'risk-monitor', this expectation 'trading-engine'"),
])
def test_only_after_must_name_one_event_of_the_same_injection_and_service(gate: str, service: str,
                                                                          fragment: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(ONLY_AFTER % (gate, service), "gate.yaml")
    [issue] = caught.value.issues
    assert (issue.file, issue.path) == ("gate.yaml", "spec.expectations[4].onlyAfter") and fragment in issue.message
    assert issue.line == 15


def test_only_after_reaches_the_chaos_event() -> None:
    from agent.engine.faults import expectation_message

    scenario = load_scenario(ONLY_AFTER % ("ready", "risk-monitor"), "gate.yaml")
    reports = scenario.spec.expectations[4]
    assert reports.only_after == "ready" and expectation_message(reports).only_after == "ready"
    assert expectation_message(scenario.spec.expectations[0]).only_after == ""


def test_a_bad_parameter_default_is_reported_once_at_its_own_line() -> None:
    source = (ROOT / "scenarios" / "kill-trading-engine.yaml").read_text()
    broken = source.replace("default: 15s", "default: 15 seconds", 1)
    assert broken != source
    with pytest.raises(ScenarioError) as caught:
        load_scenario(broken, "k.yaml")
    [issue] = caught.value.issues
    assert issue.path == "spec.parameters.restartBound" and "got '15 seconds'" in issue.message
    with pytest.raises(ScenarioError) as caught:
        load_scenario(broken, "k.yaml", overrides={"restartBound": "soon"}, overrides_from_text=True)
    assert [i.path for i in caught.value.issues] == ["spec.parameters.restartBound"], \
        "the places that use it are not reported, whatever the override"
