"""One submit path: the rules every requester's request goes through (agent.submission)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import submission
from agent._proto.coordinator.v1 import events_pb2
from agent.cli import cli
from agent.errors import Rejected, ScenarioError
from agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
WRONG = ROOT / "tests" / "fixtures" / "hostile" / "wrong-types.yaml"
#: what `coordinator validate` says of that file: the same five problems, with line and column
WRONG_AT = ["wrong-types.yaml:5:12: metadata.labels.team", "wrong-types.yaml:8:41: spec.targets.rm.selector.program",
            "wrong-types.yaml:11:42: spec.steps[0].background", "wrong-types.yaml:12:76: spec.steps[1].parameters.rate",
            "wrong-types.yaml:14:5: spec.limits.maxConcurrentFaults"]
#: a broker nobody serves: nothing may try to reach it
NOWHERE = {"COORDINATOR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "COORDINATOR_REDIS_URL": "redis://127.0.0.1:9/0"}


@pytest.mark.parametrize("command", ["run", "submit"])
def test_an_invalid_inline_scenario_is_refused_before_anything_is_sent(command: str) -> None:
    started = time.monotonic()
    done = CliRunner().invoke(cli, [command, str(WRONG)], env=NOWHERE)
    assert done.exit_code == 4, done.output
    lines = done.stderr.splitlines()
    for where in WRONG_AT:
        assert any(where in line for line in lines), (where, lines)
    assert lines[-1] == f"{WRONG}: 5 problem(s); the request was not sent", lines
    assert time.monotonic() - started < 10  # no broker was waited for


def test_the_refusal_as_json_lists_every_problem() -> None:
    done = CliRunner().invoke(cli, ["run", str(WRONG), "--output", "json"], env=NOWHERE)
    assert done.exit_code == 4, done.output
    body = json.loads(done.stdout)
    assert body["status"] == "REJECTED" and body["sent"] is False
    assert [(e["line"], e["path"]) for e in body["errors"]] == [
        (5, "metadata.labels.team"), (8, "spec.targets.rm.selector.program"), (11, "spec.steps[0].background"),
        (12, "spec.steps[1].parameters.rate"), (14, "spec.limits.maxConcurrentFaults")]


def test_parameters_given_with_the_request_are_checked_too(tmp_path: Path) -> None:
    scenario = ROOT / "scenarios" / "kill-trading-engine.yaml"
    request = submission.build(str(scenario), {"restartBound": "banana"}, requester="cli:test")
    with pytest.raises(ScenarioError) as caught:
        submission.check(request, str(scenario))
    assert [i.path for i in caught.value.issues] == ["parameters.restartBound"]
    assert submission.check(submission.build(str(scenario), {}, requester="cli:test"), str(scenario)) is not None


def test_a_catalog_name_is_left_to_the_agent_and_a_request_without_scenario_is_rejected() -> None:
    assert submission.check(submission.build("kill-trading-engine", {}, requester="cli:test"), "x") is None
    with pytest.raises(Rejected, match="names no scenario"):
        submission.check(events_pb2.ScenarioRequest(), "x")


def test_every_path_fills_in_the_same_defaults_and_keeps_what_was_given() -> None:
    bare = submission.complete(events_pb2.ScenarioRequest(scenario_name="s"), requester="grpc")
    assert len(bare.request_id) == 36 and bare.requester == "grpc" and bare.HasField("requested_at")
    given = events_pb2.ScenarioRequest(scenario_name="s", request_id="k-1", requester="ci")
    given.requested_at.FromSeconds(1)
    submission.complete(given, requester="grpc")
    assert (given.request_id, given.requester, given.requested_at.seconds) == ("k-1", "ci", 1)
    built = submission.build("s", {"a": "1"}, requester="cli:me", labels={"team": "x"}, request_id="k-2")
    assert (built.request_id, built.requester, dict(built.labels)) == ("k-2", "cli:me", {"team": "x"})


def test_a_request_is_keyed_by_its_id_on_the_requests_topic() -> None:
    settings = Settings()
    request = submission.build("s", {}, requester="cli:me", request_id="k-3")
    topic, event = submission.encode(request, settings, source="/cli/me")
    assert topic == settings.topics.scenario_requests and event.key == b"k-3"
