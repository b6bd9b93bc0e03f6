"""One vocabulary on both sides of Kafka: every wire enum has its short name and back."""

from __future__ import annotations

from agent import vocabulary
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.scenario.models import EXPECTATION_KINDS


def test_every_execution_status_round_trips_and_exactly_the_ending_ones_are_terminal() -> None:
    names = [vocabulary.status_name(v) for v in S.ExecutionStatus.values() if v]
    assert all(vocabulary.status_value(n) == v for n, v in zip(names, [v for v in S.ExecutionStatus.values() if v],
                                                                strict=True))
    assert {n for n in names if vocabulary.is_terminal(n)} == {
        "PASSED", "FAILED", "ERROR", "ABORTED", "TIMED_OUT", "REJECTED"}
    assert vocabulary.is_terminal(S.EXECUTION_STATUS_TIMED_OUT) and not vocabulary.is_terminal(
        S.EXECUTION_STATUS_RUNNING)
    assert vocabulary.status_name(999) == "UNKNOWN(999)"


def test_expectation_kinds_and_attributions_map_both_ways_and_cover_the_scenario_language() -> None:
    # the kinds with a wire enum value; newer ones (metric) travel by name, their rule as written
    assert set(EXPECTATION_KINDS) - {"metric"} == set(vocabulary.EXPECTATION_KINDS)
    wire_kinds = {v for v in S.ExpectationKind.values() if v}
    assert set(vocabulary.EXPECTATION_KINDS.values()) == wire_kinds
    for name, value in vocabulary.ATTRIBUTIONS.items():
        assert vocabulary.ATTRIBUTION_NAMES[value] == name
    assert vocabulary.ATTRIBUTION_NAMES[S.ATTRIBUTION_UNSPECIFIED] == "any"
    assert vocabulary.verdict_value(vocabulary.verdict_name(S.VERDICT_STATUS_INCONCLUSIVE)) == \
        S.VERDICT_STATUS_INCONCLUSIVE
    assert vocabulary.chaos_type_name(S.CHAOS_EVENT_TYPE_REVERT_FAILED) == "REVERT_FAILED"


def test_a_bad_parameter_is_one_invalid_parameters_error_and_the_cli_exit_code_comes_from_the_type() -> None:
    from click.testing import CliRunner

    from agent.cli import cli
    from agent.errors import InvalidParameters, ScenarioError
    from agent.scenario import load_scenario_file
    from tests.unit.scenario.test_catalog_and_docs import ROOT

    path = ROOT / "scenarios" / "kill-trading-engine.yaml"
    try:
        load_scenario_file(path, overrides={"restartBound": "banana"}, overrides_from_text=True)
    except InvalidParameters as exc:
        assert [i.path for i in exc.issues] == ["parameters.restartBound"], exc.issues
    else:
        raise AssertionError("a bad parameter value was accepted")
    assert issubclass(InvalidParameters, ScenarioError)

    shown = CliRunner().invoke(cli, ["scenarios", "show", "kill-trading-engine", "--param", "restartBound=banana"])
    assert shown.exit_code == 1, shown.output  # invalid input, not an internal error (3)
    assert "got 'banana'" in shown.output and "${restartBound}" not in shown.output
