"""The expectation kinds are one module each, registered in one place: every kind the scenario
language and the worker know is in the registry, and a new kind is one class registered (here a toy
one: written in a scenario under its own key, carried by the chaos event, judged by a watch like any
other; nothing else in the agent names it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.expectations import KINDS, PASSED, AuditObservation, Kind, Verdict, Watch, register, unregister
from agent.fields import Duration, Strict
from agent.vocabulary import EXPECTATION_KIND_NAMES, REACTION


def test_the_registry_lists_every_expectation_kind() -> None:
    # every wire kind has its module; reaction is the worker's own, metric travels by name
    assert set(EXPECTATION_KIND_NAMES.values()) | {"reaction", "metric"} == set(KINDS), "a kind without its module"
    assert REACTION  # the worker's own watch, of kind "reaction"
    for name, kind in KINDS.items():
        assert kind.name == name and type(kind).__module__.startswith("agent.expectations.")


class EchoRule(Strict):
    """What a scenario writes under ``echo:``."""

    within: Duration
    word: str = "yes"


class Echo(Kind):
    """A toy: PASSED as soon as a matching event says ``echo: WORD``; FAILED at the deadline."""

    name = "echo"
    rule = EchoRule

    def take(self, watch: Watch, event: AuditObservation) -> bool | None:
        if event.metadata.get("echo") != watch.params.get("word", "yes"):
            return False
        watch.first_seen = event.timestamp
        return True

    def early(self, watch: Watch) -> Verdict | None:
        return watch.verdict(PASSED, "heard the echo") if watch.first_seen is not None else None

    def at_deadline(self, watch: Watch) -> Verdict:
        return watch.verdict("FAILED", "no echo")

    def expected(self, watch: Watch) -> str:
        return "an echo"


@pytest.fixture
def echo() -> Iterator[Kind]:
    kind = register(Echo())
    try:
        yield kind
    finally:
        unregister("echo")


def test_a_new_kind_is_one_class_registered_and_a_watch_judges_with_it(echo: Kind) -> None:
    watch = Watch(execution_id="e", correlation_id="c", name="hear-it", kind="echo", injected_at=100.0,
                  deadline=110.0, event_type="shout", service="valley", attribution="window")
    assert not watch.observe(AuditObservation("valley", "shout", 101.0, metadata={"echo": "no"}), 1.0)
    assert watch.decide(now=102.0, watermark=101.0, grace=1.0) is None
    assert watch.observe(AuditObservation("valley", "shout", 103.0, metadata={"echo": "yes"}), 1.0)
    verdict = watch.decide(now=104.0, watermark=103.0, grace=1.0)
    assert verdict is not None and (verdict.status, verdict.reason, verdict.expected) == (PASSED, "heard the echo",
                                                                                          "an echo")
    late = Watch(execution_id="e", correlation_id="c", name="hear-it", kind="echo", injected_at=100.0, deadline=110.0,
                 event_type="shout", attribution="window")
    verdict = late.decide(now=112.0, watermark=111.0, grace=1.0)
    assert verdict is not None and (verdict.status, verdict.reason) == ("FAILED", "no echo")


def test_a_watch_of_an_unknown_kind_says_which_kinds_there_are() -> None:
    watch = Watch(execution_id="e", correlation_id="c", name="x", kind="nonsense", injected_at=0.0, deadline=1.0)
    with pytest.raises(ValueError, match=r"unknown expectation kind 'nonsense'; known: absent, appears"):
        watch.decide(now=5.0, watermark=5.0, grace=0.0)


def test_a_watch_is_stored_compact_and_versioned_and_the_full_form_of_older_workers_still_reads() -> None:
    import json
    from dataclasses import asdict

    watch = Watch(execution_id="e", correlation_id="c", name="ready", kind="appears", injected_at=100.0,
                  deadline=130.0, event_type="service_ready", service="risk-monitor", attribution="target-window")
    watch.observe(AuditObservation("risk-monitor", "service_ready", 101.0, event_id="s#1"), 1.0)
    stored = watch.to_dict()
    assert stored["v"] == 2 and "gate_match" not in stored and stored["counted_ids"] == ["s#1"]
    assert len(json.dumps(stored)) * 2 < len(json.dumps(asdict(watch))), "at most half the full form"
    assert Watch.from_dict(json.loads(json.dumps(stored))) == watch
    assert Watch.from_dict(asdict(watch)) == watch, "a changelog written before versions"
    assert Watch.from_dict({**stored, "v": 1}) == watch, "the compact form before trace ids"
    with pytest.raises(ValueError, match="watch state version 3 is newer than this worker's"):
        Watch.from_dict({**stored, "v": 3})


SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: shout-in-the-valley}
spec:
  targets:
    valley: {driver: toxiproxy, service: valley, selector: {proxy: valley}}
  steps:
    - {name: cut, fault: latency, target: valley, duration: 1s, parameters: {latency: 100ms}}
  expectations:
    - name: hear-it
      after: cut
      event: {service: valley, type: shout}
      echo: {within: 5s, word: hello}
"""


def test_a_new_kind_is_written_in_scenarios_carried_by_the_chaos_event_and_judged(echo: Kind) -> None:
    import json

    from google.protobuf import json_format

    from agent._proto.coordinator.v1 import events_pb2 as S
    from agent.engine.faults import expectation_message
    from agent.scenario import load_scenario
    from agent.scenario.schema import scenario_schema
    from agent.worker.judge import watches_from

    expectation = load_scenario(SCENARIO, "valley.yaml").spec.expectations[0]
    assert (expectation.kind, expectation.deadline, expectation.rule.word) == ("echo", 5.0, "hello")
    assert "echo" in json.dumps(scenario_schema())

    message = expectation_message(expectation)
    assert (message.kind, message.kind_name) == (S.EXPECTATION_KIND_UNSPECIFIED, "echo")
    assert json_format.MessageToDict(message.rule) == {"word": "hello"}
    event = S.ChaosEvent(correlation_id="c", execution_id="e", service="valley", expectations=[message])
    event.injected_at.FromSeconds(100)
    watch = next(w for w in watches_from(S.ChaosEvent.FromString(event.SerializeToString())) if w.kind == "echo")
    assert (watch.params, watch.deadline, watch.event_type) == ({"word": "hello"}, 105.0, "shout")
    assert Watch.from_dict(json.loads(json.dumps(watch.to_dict()))) == watch

    assert not watch.observe(AuditObservation("valley", "shout", 101.0, metadata={"echo": "yes"}), 1.0)
    assert watch.observe(AuditObservation("valley", "shout", 102.0, metadata={"echo": "hello"}), 1.0)
    verdict = watch.decide(now=103.0, watermark=102.0, grace=1.0)
    assert verdict is not None and (verdict.status, verdict.reason) == (PASSED, "heard the echo")


def test_a_kind_that_is_not_registered_is_not_part_of_the_language() -> None:
    from agent.errors import ScenarioError
    from agent.scenario import load_scenario

    with pytest.raises(ScenarioError) as caught:
        load_scenario(SCENARIO, "valley.yaml")
    assert any(i.path == "spec.expectations[0].echo" and i.line == 13 for i in caught.value.issues), \
        caught.value.issues
