"""The run history's figures and the regression gate, without Redis (the Redis store is exercised in
tests/integration/test_history.py)."""

from __future__ import annotations

import pytest
import yaml

from agent import history
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.cli_history import render, sparkline
from agent.errors import Rejected, ScenarioError
from agent.history import Baseline, ExpectationOutcome, MemoryHistory, RunSummary
from agent.scenario import load_scenario
from tests.unit.scenario.test_errors import ROOT


def result(execution_id: str, ttr: float | None, *, status: int = S.EXECUTION_STATUS_PASSED, ended: int = 1000,
           verdict: int = S.VERDICT_STATUS_PASSED) -> S.ScenarioResult:
    out = S.ScenarioResult(execution_id=execution_id, scenario_name="flagship", status=status, reason="why")
    out.ended_at.FromSeconds(ended)
    out.injections.add(correlation_id="c-1", target="risk-monitor", fault="restart")
    ready = out.verdicts.add(correlation_id="c-1", expectation_name="ready-again", status=verdict)
    if ttr is not None:
        ready.time_to_recover.FromNanoseconds(int(ttr * 1e9))
    out.verdicts.add(correlation_id="c-1", expectation_name="no-order-lost", status=S.VERDICT_STATUS_PASSED)
    return out


def run(execution_id: str, ttr: float | None, status: str = "PASSED", ended: float = 1000.0) -> RunSummary:
    return RunSummary(execution_id, "flagship", status, ended,
                      expectations={"ready-again": ExpectationOutcome("PASSED", ttr, "risk-monitor")})


def test_a_summary_keeps_each_verdict_with_its_time_to_recover_and_the_target_of_its_fault() -> None:
    summary = RunSummary.of(result("e-1", 1.5, ended=1234))
    assert summary is not None
    assert (summary.execution_id, summary.scenario, summary.status, summary.ended_at) == ("e-1", "flagship",
                                                                                         "PASSED", 1234.0)
    assert summary.expectations == {"ready-again": ExpectationOutcome("PASSED", 1.5, "risk-monitor"),
                                    "no-order-lost": ExpectationOutcome("PASSED", None, "risk-monitor")}
    assert RunSummary.from_json(summary.to_json()) == summary


def test_dry_runs_and_rejected_requests_are_not_runs() -> None:
    dry = result("e-1", 1.0)
    dry.dry_run = True
    assert RunSummary.of(dry) is None
    assert RunSummary.of(result("e-2", None, status=S.EXECUTION_STATUS_REJECTED)) is None


def test_figures_give_the_pass_rate_the_resilience_score_and_percentiles_per_expectation() -> None:
    runs = [run(f"e-{i}", float(i), "PASSED" if i % 4 else "FAILED", 1000.0 + i) for i in range(1, 21)][::-1]
    runs[0].expectations["ready-again"].status = "FAILED"
    got = history.figures("flagship", runs)
    assert (got.runs, got.passed, got.pass_rate) == (20, 15, 0.75)
    assert got.score == 19 / 20 and got.targets == {"risk-monitor": 19 / 20}
    ready = got.expectations["ready-again"]
    assert (ready.runs, ready.passed, ready.ttr_p50, ready.ttr_p95, ready.ttr_last) == (20, 19, 10.0, 19.0, 20.0)
    assert (got.first_at, got.last_at) == (1001.0, 1020.0)
    empty = history.figures("none", [])
    assert (empty.runs, empty.pass_rate, empty.score) == (0, None, None)


def test_the_gate_fails_a_time_to_recover_worse_than_the_ratio_and_names_both_figures() -> None:
    past = [run("slow-but-failed", 9.0, "FAILED")] + [run(f"e-{i}", t) for i, t in enumerate((1.4, 1.5, 1.6, 1.5))]
    outcome = history.gate(Baseline(runs=3, max_ratio=1.5), {"ready-again": 4.5}, past)
    assert outcome.runs == 3 and not outcome.note
    [check] = outcome.checks
    assert check.over and check.baseline_p50 == 1.5 and check.ratio == pytest.approx(3.0)
    assert outcome.failures(Baseline(3, 1.5)) == [
        "ready-again recovered in 4.500s, 3.0x the baseline's p50 of 1.500s over the last 3 passed run(s) "
        "(at most 1.5x allowed)"]
    within = history.gate(Baseline(runs=3, max_ratio=1.5), {"ready-again": 2.2}, past)
    assert within.checks[0].over is False and within.failures(Baseline(3, 1.5)) == []


def test_the_gate_waits_for_enough_passed_runs_and_never_counts_the_run_itself() -> None:
    past = [run("this", 4.5), run("e-1", 1.5), run("e-2", 1.5, "FAILED")]
    outcome = history.gate(Baseline(runs=10, max_ratio=1.5), {"ready-again": 4.5}, past, exclude="this")
    assert outcome.checks == [] and outcome.note == "baseline: 1 passed run(s) of 3 needed so far; not gated"
    one = history.gate(Baseline(runs=1, max_ratio=2), {"ready-again": 4.5}, past, exclude="this")
    assert one.runs == 1 and one.checks[0].over


def test_a_request_s_baseline_replaces_the_scenario_s_and_bad_values_are_all_named() -> None:
    spec = load_scenario(_flagship(baseline={"runs": 5, "timeToRecover": {"maxRatio": 2}})).spec.baseline
    assert history.baseline_of(S.ScenarioRequest(), spec) == Baseline(5, 2.0)
    assert history.baseline_of(S.ScenarioRequest(), None) is None
    asked = S.ScenarioRequest(baseline=S.BaselineGate(runs=10, max_ratio=1.5))
    assert history.baseline_of(asked, spec) == Baseline(10, 1.5)
    with pytest.raises(Rejected) as caught:
        history.baseline_of(S.ScenarioRequest(baseline=S.BaselineGate(runs=0, max_ratio=0.5)), spec)
    assert caught.value.code == "invalid-baseline"
    assert str(caught.value) == ("baseline.runs must be 1..1000, got 0; baseline.max_ratio must be above 1 "
                                 "(and at most 1000), got 0.5")


def test_a_scenario_s_baseline_is_validated_with_its_field_path() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(_flagship(baseline={"runs": 0, "timeToRecover": {"maxRatio": 1}}))
    said = {(i.path, i.message) for i in caught.value.issues}
    assert {p for p, _ in said} == {"spec.baseline.runs", "spec.baseline.timeToRecover.maxRatio"}, said


async def test_the_memory_history_keeps_the_newest_runs_newest_first() -> None:
    store = MemoryHistory(keep=3)
    for i in range(5):
        await store.record(run(f"e-{i}", 1.0, ended=1000.0 + i))
    await store.record(run("e-4", 2.0, ended=1004.0))  # the same run again replaces it
    assert [r.execution_id for r in await store.recent("flagship", 10)] == ["e-4", "e-3", "e-2"]
    assert (await store.recent("flagship", 1))[0].expectations["ready-again"].ttr == 2.0
    assert await store.scenarios() == ["flagship"]


async def test_the_text_shows_the_figures_a_trend_and_the_runs() -> None:
    store = MemoryHistory()
    for i, ttr in enumerate((1.0, 1.2, 4.0)):
        await store.record(run(f"e-{i}", ttr, ended=1_700_000_000.0 + i))
    lines = render(await history.overview(store, "flagship", 10))
    assert lines[0] == "flagship: 3 run(s), 2023-11-14 22:13:20 .. 2023-11-14 22:13:22 UTC"
    assert lines[1].startswith("  pass rate 100.0% (3 of 3)   resilience score 1.00")
    assert any(line.split()[:5] == ["ready-again", "3/3", "1.200s", "4.000s", "4.000s"] and line.endswith("▁▁█")
               for line in lines), lines
    assert lines[-1].split()[2:] == ["PASSED", "e-0", "ready-again=1.000s"]
    assert sparkline([None, 2.0, 2.0]) == " ▁▁" and sparkline([None]) == ""


def _flagship(**spec: object) -> str:
    data = yaml.safe_load((ROOT / "scenarios" / "restart-risk-monitor-during-trading.yaml").read_text())
    data["spec"].update(spec)
    return yaml.safe_dump(data)


def test_coordinator_run_takes_a_baseline_as_runs_and_ratio() -> None:
    import click

    from agent.cli_engine import parse_baseline

    assert parse_baseline("10:1.5") == S.BaselineGate(runs=10, max_ratio=1.5)
    for bad, said in (("ten", "expected RUNS:RATIO such as 10:1.5, got 'ten'"),
                      ("10:1", "RUNS must be 1..1000 and RATIO above 1, got '10:1'")):
        with pytest.raises(click.BadParameter, match=said):
            parse_baseline(bad)


def test_coordinator_history_says_when_redis_cannot_be_reached() -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "agent.cli", "history", "flagship"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "COORDINATOR_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: ConnectionError: Error 111 connecting to 127.0.0.1:1"), done.stderr
