"""Reports of a result: JUnit XML read back by a real JUnit parser, JSON, single-file HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from agent import reports
from agent._proto.coordinator.v1 import events_pb2

S = events_pb2
T0 = 1_800_000_000


def _verdict(name: str, status: int, reason: str, ttr: float | None = None) -> events_pb2.ExpectationVerdict:
    verdict = events_pb2.ExpectationVerdict(expectation_name=name, status=status, reason=reason,  # type: ignore[arg-type]
                                            correlation_id="c-1", expected="service_ready within 8s",
                                            observed="nothing")
    verdict.deadline.FromSeconds(T0 + 10)
    if ttr is not None:
        verdict.time_to_recover.FromNanoseconds(int(ttr * 1e9))
        verdict.first_seen_at.FromNanoseconds(int((T0 + 2 + ttr) * 1e9))
    return verdict


def failed_result() -> events_pb2.ScenarioResult:
    result = events_pb2.ScenarioResult(
        execution_id="e-1", request_id="r-1", scenario_name="restart-risk-monitor-during-trading",
        status=S.EXECUTION_STATUS_FAILED, reason="expectation(s) failed: risk-monitor-ready-again",
        labels={"team": "risk"},
        verdicts=[_verdict("risk-monitor-ready-again", S.VERDICT_STATUS_FAILED,
                           "no 'service_ready from risk-monitor' by the deadline <soon>"),
                  _verdict("risk-reports-resume", S.VERDICT_STATUS_INCONCLUSIVE, "the audit trail was silent"),
                  _verdict("no-order-lost", S.VERDICT_STATUS_PASSED, "no 'order_lost' until the deadline", 0.5)],
        injections=[events_pb2.Injection(correlation_id="c-1", step_name="restart-risk-monitor",
                                         target="risk-monitor", fault="restart")],
        journal=[events_pb2.JournalEntry(phase="steady-state-before", name="risk-monitor-serving",
                                         status=S.JOURNAL_ENTRY_STATUS_SUCCEEDED, output="ok"),
                 events_pb2.JournalEntry(phase="steady-state-after", name="risk-monitor-serving",
                                         status=S.JOURNAL_ENTRY_STATUS_FAILED,
                                         error="observed 'NOT_SERVING', expected 'SERVING'"),
                 events_pb2.JournalEntry(phase="steps", name="restart-risk-monitor",
                                         status=S.JOURNAL_ENTRY_STATUS_SUCCEEDED)])
    result.started_at.FromSeconds(T0)
    result.ended_at.FromSeconds(T0 + 20)
    result.injections[0].injected_at.FromSeconds(T0 + 2)
    result.injections[0].reverted_at.FromSeconds(T0 + 3)
    return result


def test_junit_has_a_case_per_expectation_and_steady_state_check_with_the_failing_message(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.write_text(reports.render(failed_result(), "junit"))
    [suite] = list(JUnitXml.fromfile(str(path)))
    assert suite.name == "restart-risk-monitor-during-trading"
    assert (suite.tests, suite.failures, suite.errors) == (5, 2, 1)
    cases = {case.name: case for case in suite}
    assert set(cases) == {"risk-monitor-ready-again", "risk-reports-resume", "no-order-lost",
                          "steady-state-before: risk-monitor-serving", "steady-state-after: risk-monitor-serving"}
    [failure] = cases["risk-monitor-ready-again"].result
    assert isinstance(failure, Failure)
    assert failure.message == "no 'service_ready from risk-monitor' by the deadline <soon>"
    assert "expected: service_ready within 8s" in (failure.text or "")
    [error] = cases["risk-reports-resume"].result
    assert isinstance(error, Error) and error.type == "INCONCLUSIVE"
    assert cases["no-order-lost"].is_passed and cases["no-order-lost"].time == 0.5
    assert isinstance(cases["steady-state-after: risk-monitor-serving"].result[0], Failure)
    properties = {p.name: p.value for p in suite.properties()}
    assert properties["execution_id"] == "e-1" and properties["injection.restart-risk-monitor"] == "c-1"


@pytest.mark.parametrize("status", [S.EXECUTION_STATUS_REJECTED, S.EXECUTION_STATUS_ABORTED])
def test_an_execution_without_verdicts_is_never_a_silent_green(tmp_path: Path, status: int) -> None:
    result = events_pb2.ScenarioResult(execution_id="e-2", scenario_name="kill-trading-engine", status=status,  # type: ignore[arg-type]
                                       reason="invalid-parameters: parameter 'restartBound': too small")
    path = tmp_path / "report.xml"
    path.write_text(reports.junit(result))
    [suite] = list(JUnitXml.fromfile(str(path)))
    [case] = list(suite)
    assert case.name == "execution" and isinstance(case.result[0], Failure)
    assert case.result[0].message == "invalid-parameters: parameter 'restartBound': too small"
    skipped = events_pb2.ScenarioResult(scenario_name="s", status=S.EXECUTION_STATUS_PASSED, journal=[
        events_pb2.JournalEntry(phase="steady-state-after", name="p", status=S.JOURNAL_ENTRY_STATUS_SKIPPED)])
    path.write_text(reports.junit(skipped))
    [suite] = list(JUnitXml.fromfile(str(path)))
    assert isinstance(list(suite)[0].result[0], Skipped)


def test_json_and_html_reports() -> None:
    result = failed_result()
    data = json.loads(reports.render(result, "json"))
    assert data["status"] == "EXECUTION_STATUS_FAILED" and len(data["journal"]) == 3
    page = reports.render(result, "html")
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert "&lt;soon&gt;" in page, "text is escaped"
    assert "fault <b>restart</b> on risk-monitor" in page
    assert "time to recover 0.500s" in page and 'class="badge FAILED"' in page
    assert page.index("fault <b>restart</b>") < page.index("recovery seen"), "the timeline is in time order"
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        reports.render(result, "pdf")


def test_a_traced_execution_links_its_trace_in_the_reports() -> None:
    result = failed_result()
    assert "trace" not in reports.render(result, "html").split("<p>")[0], "no trace, no mention"
    result.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    page = reports.render(result, "html", "http://127.0.0.1:16686/trace/{trace_id}")
    assert ('<a class="trace" href="http://127.0.0.1:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736">'
            "<code>4bf92f3577b34da6a3ce929d0e0e4736</code></a>") in page
    assert "trace <code>4bf92f3577b34da6a3ce929d0e0e4736</code>" in reports.render(result, "html")
    [suite] = list(JUnitXml.fromstring(reports.render(result, "junit")))
    assert {p.name: p.value for p in suite.properties()}["trace_id"] == result.trace_id
