"""The docker driver's scenario vocabulary, without an engine: selectors, modes, the faults it
shares with the supervisor driver (each driver gets its own parameters), and the allow-list applied
to the containers a selector chose."""

from __future__ import annotations

import random

import pytest

from agent.drivers.base import choose
from agent.drivers.docker import COMPOSE_PROJECT, COMPOSE_SERVICE, labels_of
from agent.engine.faults import driver_parameters
from agent.errors import ScenarioError
from agent.scenario import load_scenario
from agent.scenario.checks import refused_by_allow_list

SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: containers}
spec:
  targets:
    risk: {driver: docker, service: risk-monitor, selector: %s}
    program: {driver: supervisor, selector: {program: risk-monitor}}
  steps:
    - {name: hit, fault: %s, target: %s%s}
"""


def scenario(selector: str = "{compose: {project: trading, service: risk-monitor}}", fault: str = "restart",
             target: str = "risk", extra: str = "") -> str:
    return SCENARIO % (selector, fault, target, extra)


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(text, "c.yaml")
    return [(i.path, i.message) for i in caught.value.issues]


def test_a_compose_service_is_selected_by_its_labels_and_restart_takes_a_stop_timeout() -> None:
    loaded = load_scenario(scenario(extra=", parameters: {timeout: 3s}"), "c.yaml")
    target = loaded.spec.targets["risk"]
    selector = target.selector.model_dump(mode="python")
    assert labels_of(selector) == {COMPOSE_PROJECT: "trading", COMPOSE_SERVICE: "risk-monitor"}
    assert selector["mode"] == "one"
    [step] = loaded.fault_steps()
    own = driver_parameters("docker", step)
    assert own.model_dump() == {"timeout": 3.0}


def test_the_supervisor_driver_gets_its_own_parameters_for_the_faults_both_drivers_know() -> None:
    loaded = load_scenario(scenario(target="program"), "c.yaml")
    [step] = loaded.fault_steps()
    assert driver_parameters("supervisor", step).model_dump() == {}, "no docker stop timeout reaches supervisord"
    assert problems(scenario(target="program", extra=", parameters: {timeout: 3s}")) == [
        ("spec.steps[0].parameters.timeout", "the supervisor driver's 'restart' takes no parameter 'timeout'")]
    kill = load_scenario(scenario(fault="kill", extra=", parameters: {signal: SIGTERM}"), "c.yaml")
    assert driver_parameters("docker", kill.fault_steps()[0]).model_dump() == {"signal": "SIGTERM"}


@pytest.mark.parametrize(("selector", "fragment"), [
    ("{name: risk-1, labels: {tier: risk}}", "select containers by name, or by compose service and labels"),
    ("{mode: all}", "a docker selector needs name, compose or labels"),
    ("{labels: {tier: risk}, mode: fixed}", "mode 'fixed' needs a value"),
    ("{labels: {tier: risk}, mode: percent, value: 150}", "mode 'percent' takes a value from 1 to 100"),
    ("{labels: {tier: risk}, mode: one, value: 2}", "mode 'one' takes no value"),
    ("{name: ../../containers/x}", "is not a valid name"),
    ("{labels: {tier: risk}, mode: some}", "'some' is not allowed here"),
])
def test_a_selector_that_cannot_mean_one_thing_is_refused_with_its_position(selector: str, fragment: str) -> None:
    found = problems(scenario(selector=selector))
    assert any(path.startswith("spec.targets.risk") and fragment in message for path, message in found), found


def test_a_fault_the_docker_driver_lacks_names_the_drivers_that_have_it() -> None:
    found = problems(scenario(fault="latency", extra=", duration: 1s"))
    assert ("spec.steps[0].fault", "fault 'latency' needs a toxiproxy target; target 'risk' uses driver 'docker'") \
        in found


def test_modes_pick_one_all_a_fixed_number_or_a_share_at_least_one() -> None:
    five = [{"id": str(i), "name": f"risk-{i}"} for i in range(5)]
    rng = random.Random(7)
    assert len(choose(five, "one", None, rng)) == 1
    assert choose(five, "all", None, rng) == five
    assert len(choose(five, "fixed", 2, rng)) == 2 and len(choose(five, "fixed", 9, rng)) == 5
    assert len(choose(five, "percent", 40, rng)) == 2 and len(choose(five, "percent", 1, rng)) == 1
    picked = choose(five, "fixed", 3, rng)
    assert picked == sorted(picked, key=lambda c: c["name"]), "named in a stable order"


def test_the_allow_list_applies_to_the_containers_chosen() -> None:
    chosen = {"compose": {"project": "trading", "service": "risk-monitor"},
              "chosen": [{"id": "a1", "name": "trading-risk-monitor-1"}, {"id": "b2", "name": "payments-db-1"}]}
    patterns = ["risk-monitor", "docker:trading-*"]
    assert refused_by_allow_list("risk-monitor", "docker", chosen, patterns) == \
        "target 'risk-monitor': docker 'payments-db-1' is not in the agent's allow-list"
    chosen["chosen"] = chosen["chosen"][:1]
    assert refused_by_allow_list("risk-monitor", "docker", chosen, patterns) is None
    assert refused_by_allow_list("risk-monitor", "docker", {"name": "other-1"}, patterns) is not None
