"""``coordinator explore`` without a stack: the document's errors, seeded schedules within their bounds,
shrinking to the faults that matter, k-of-n against a flaky system, halting, the budget, the reports.

The system under test here is a fake of the runner (our own interface): it reads the scenario each
run sends, as the agent would, and fails it the way the sim's latent bug does (orders forgotten when
the exchange link is down while the risk monitor restarts, within 5 s of each other)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ScenarioError
from agent.explore import Explorer, Outcome, load_exploration
from agent.explore import schedule as sched
from agent.explore.explorer import FAILURE_FOUND, HALTED, NO_FAILURE
from agent.explore.report import to_html, to_json
from agent.scenario import FaultStep, load_scenario

SPACE = """\
apiVersion: coordinator/v1
kind: Exploration
metadata: {name: trading-pairs}
spec:
  targets:
    risk-monitor: {driver: supervisor, selector: {program: risk-monitor}}
    exchange: {driver: supervisor, selector: {program: exchange}}
    engine-exchange-link: {driver: toxiproxy, service: exchange, selector: {proxy: engine-to-exchange}}
  expectations:
    - name: no-order-lost
      attribution: window
      event: {type: order_lost}
      absent: {within: 12s}
    - name: exchange-ready-again
      after: restart-exchange
      event: {type: service_ready, service: exchange}
      appears: {within: 20s}
  faults:
    - {name: link-down, fault: down, target: engine-exchange-link, hold: {min: 0.5s, max: 3s}}
    - {name: restart-risk, fault: restart, target: risk-monitor}
    - {name: slow-exchange, fault: latency, target: engine-exchange-link, parameters: {latency: 50ms}, hold: 1s}
    - {name: restart-exchange, fault: restart, target: exchange}
  schedule: {faults: {min: 1, max: 4}, start: {max: 4s}, settle: 3s, maxConcurrentFaults: 3}
  budget: {runs: 30}
  shrink: {tries: 3, failures: 2, runs: 60}
  seed: 11
"""


def space(text: str = SPACE, **replace: str):  # type: ignore[no-untyped-def]
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return load_exploration(text, "space.yaml")


class BuggySystem:
    """Runs a scenario the way the sim with forget_when_both_down does: it fails when the exchange
    link is down while the risk monitor restarts within 5 s; ``noise`` fails any run at random."""

    def __init__(self, *, bug: bool = True, noise: float = 0.0, seed: int = 0, halt_at: int = 0) -> None:
        self.bug, self.noise, self.rng, self.halt_at = bug, noise, random.Random(seed), halt_at
        self.scenarios: list[str] = []

    async def run(self, scenario_yaml: str, labels: dict[str, str]) -> Outcome:
        self.scenarios.append(scenario_yaml)
        number = len(self.scenarios)
        assert labels["exploration"] == "trading-pairs" and labels["exploration-run"] == str(number)
        if number == self.halt_at:
            return Outcome("ABORTED", "the agent was halted: maintenance", f"e{number}")
        if self.noise and self.rng.random() < self.noise:
            return Outcome("FAILED", "no-order-lost: 'order_lost' appeared (noise)", f"e{number}")
        return self.judge(load_scenario(scenario_yaml, "run.yaml"), number)

    def judge(self, scenario, number: int) -> Outcome:  # type: ignore[no-untyped-def]
        steps = {s.name: s for s in scenario.fault_steps()}
        link, risk = steps.get("link-down"), steps.get("restart-risk")
        if self.bug and link and risk and _near(link, risk):
            return Outcome("FAILED", "no-order-lost: 'order_lost' appeared", f"e{number}",
                           (("no-order-lost", "FAILED", "'order_lost' appeared"),))
        return Outcome("PASSED", "all expectations passed", f"e{number}")


def _near(link: FaultStep, risk: FaultStep) -> bool:
    assert link.duration is not None
    return link.delay - 5 <= risk.delay <= link.delay + link.duration + 5


def test_every_problem_of_the_document_is_named_at_once_with_line_and_field_path() -> None:
    bad = SPACE.replace("program: risk-monitor}", "programme: risk-monitor}").replace(
        "fault: down,", "fault: dwn,").replace("after: restart-exchange", "after: restart-exchang").replace(
        "target: risk-monitor}", "target: risk-monitr, hold: 1s}").replace("settle: 3s", "settl: 3s")
    with pytest.raises(ScenarioError) as raised:
        load_exploration(bad, "space.yaml")
    said = [str(i) for i in raised.value.issues]
    for expected in (
        "space.yaml:6:51: spec.targets.risk-monitor.selector.programme: unknown field 'programme'; did you mean",
        "space.yaml:15:7: spec.expectations[1].after: 'restart-exchang' is not a fault of this exploration",
        "space.yaml:19:25: spec.faults[0].fault: unknown fault 'dwn'; did you mean 'down'?",
        "space.yaml:20:7: spec.faults[1]: fault 'restart' is instantaneous: remove its hold",
        "space.yaml:20:44: spec.faults[1].target: unknown target 'risk-monitr'; did you mean 'risk-monitor'?",
        "space.yaml:23:58: spec.schedule.settl: unknown field 'settl'; did you mean 'settle'?",
    ):
        assert any(line.startswith(expected) for line in said), (expected, said)
    assert len(said) == len(set(said)), "each problem once"


def test_the_same_seed_draws_the_same_schedules_and_another_seed_others() -> None:
    spec = space().spec
    first = [s for _, s in zip(range(25), sched.draws(11, spec), strict=False)]
    assert first == [s for _, s in zip(range(25), sched.draws(11, space().spec), strict=False)]
    assert first != [s for _, s in zip(range(25), sched.draws(12, spec), strict=False)]
    assert len(set(first)) == 25, "a schedule is drawn once"


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31), overlap=st.booleans(), limit=st.integers(1, 3))
def test_drawn_schedules_keep_the_bounds(seed: int, overlap: bool, limit: int) -> None:
    spec = space(**{"maxConcurrentFaults: 3": f"maxConcurrentFaults: {limit}, overlap: {str(overlap).lower()}"}).spec
    holds = {t.name: t.hold for t in spec.faults}
    for drawn in (sched.generate(random.Random(seed), spec) for _ in range(3)):
        names = [p.name for p in drawn]
        assert 1 <= len(drawn) <= 4 and len(set(names)) == len(names)
        assert drawn[0].start == 0 and list(drawn) == sorted(drawn)
        for placed in drawn:
            span = holds[placed.name]
            assert (placed.hold is None) == (span is None)
            if span is not None:
                assert placed.hold is not None and span.min <= placed.hold <= span.max
        for moment in {p.start for p in drawn}:
            active = [p for p in drawn if p.start <= moment < p.busy_until]
            assert len(active) <= limit, drawn
        if not overlap:
            assert sched.concurrent_pairs(drawn) == 0, drawn


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_every_candidate_is_smaller_so_shrinking_ends(seed: int) -> None:
    spec = space().spec
    drawn = sched.generate(random.Random(seed), spec)
    steps = 0
    while True:  # accept every candidate: the longest shrink there is
        following = next(sched.candidates(drawn, spec), None)
        if following is None:
            break
        assert sched.size(following) < sched.size(drawn)
        drawn, steps = following, steps + 1
        assert steps < 200
    assert len(drawn) == 1 and drawn[0].start == 0


async def test_a_failure_is_found_and_shrunk_to_exactly_the_two_faults_that_cause_it() -> None:
    system = BuggySystem()
    seen: list[str] = []
    report = await Explorer(space(), system, seed=11, on_progress=seen.append).explore()
    assert report.outcome == FAILURE_FOUND, report.reason
    assert {p.name for p in report.minimal} == {"link-down", "restart-risk"}, report.minimal
    [link] = [p for p in report.minimal if p.name == "link-down"]
    assert link.hold == 0.5, "the hold shrinks to its minimum"
    # the bug reaches 5 s past the link's outage: the faults need not even overlap, so the shrinker
    # puts the restart just after the link is back (fewer faults at once is simpler than an earlier start)
    assert sched.concurrent_pairs(report.minimal) == 0
    assert sched.describe(report.minimal) == "link-down at 0s for 0.5s, restart-risk at 0.5s"
    assert len(report.found) >= len(report.minimal)
    # the minimal scenario: valid, named, and it still fails the system
    minimal = load_scenario(report.minimal_yaml, "minimal.yaml")
    assert minimal.name == "trading-pairs-minimal"
    assert [e.name for e in minimal.spec.expectations] == ["no-order-lost"], "exchange-ready-again has no fault here"
    assert minimal.spec.expectations[0].after == report.minimal[0].name
    assert system.judge(minimal, 0).status == "FAILED"
    # each accepted step failed 2 of its runs; every shrink trial is recorded with its verdicts
    assert all(t.statuses.count("FAILED") >= 2 for t in report.trials if t.fails)
    assert any(not t.fails for t in report.trials), "some candidates passed"
    assert report.first_failure_run >= 1 and report.count("search") == report.first_failure_run
    assert "no smaller schedule fails" in report.reason
    assert any(line.startswith("smaller and still failing") for line in seen)


async def test_with_the_bug_off_the_same_budget_reports_no_failure() -> None:
    system = BuggySystem(bug=False)
    report = await Explorer(space(), system, seed=11).explore()
    assert report.outcome == NO_FAILURE and report.minimal == () and report.minimal_yaml == ""
    assert len(report.runs) == 30 and report.reason == "no schedule failed in 30 runs"


def test_a_flaky_system_does_not_shrink_to_noise() -> None:
    """Every run also fails 15% of the time whatever it holds. Taking a candidate on one failing run
    shrinks to noise (a schedule without the bug's pair); asking 3 of 3 does not."""
    def minimal(tries: int, failures: int) -> list[set[str]]:
        found = []
        for seed in range(6):
            changed = space(**{"shrink: {tries: 3, failures: 2, runs: 60}":
                               f"shrink: {{tries: {tries}, failures: {failures}, runs: 60}}"})
            report = asyncio.run(Explorer(changed, BuggySystem(noise=0.15, seed=seed), seed=11).explore())
            found.append({p.name for p in report.minimal})
        return found

    once = minimal(1, 1)
    assert any(not {"link-down", "restart-risk"} <= names for names in once), once
    strict = minimal(3, 3)
    assert all({"link-down", "restart-risk"} <= names for names in strict), strict


async def test_without_shrinking_the_failure_is_reported_as_found() -> None:
    report = await Explorer(space(), BuggySystem(), seed=11, shrink=False).explore()
    assert report.outcome == FAILURE_FOUND and report.minimal == report.found
    assert report.count("shrink") == 0 and "not shrunk" in report.reason


async def test_halted_agents_stop_the_exploration_with_a_report_of_what_ran() -> None:
    report = await Explorer(space(), BuggySystem(halt_at=3), seed=11).explore()
    assert report.outcome == HALTED
    assert report.reason == "run 3 ended ABORTED: the agent was halted: maintenance"
    assert [r.number for r in report.runs] == [1, 2, 3] and report.runs[-1].status == "ABORTED"
    shown = json.loads(to_json(report))
    assert shown["outcome"] == "HALTED" and len(shown["history"]) == 3


async def test_an_interruption_stops_after_the_run_in_flight() -> None:
    interrupted = asyncio.Event()
    system = BuggySystem(bug=False)

    async def run(scenario_yaml: str, labels: dict[str, str]) -> Outcome:
        if labels["exploration-run"] == "2":
            interrupted.set()  # Ctrl-C while run 2 is going
        return await BuggySystem.run(system, scenario_yaml, labels)

    system.run = run  # type: ignore[method-assign]
    report = await Explorer(space(), system, seed=11, interrupted=interrupted).explore()
    assert report.outcome == HALTED and report.reason == "interrupted after run 2"
    assert len(report.runs) == 2 and report.runs[-1].status == "PASSED"


async def test_the_time_budget_ends_the_search() -> None:
    now = [0.0]

    class Slow(BuggySystem):
        async def run(self, scenario_yaml: str, labels: dict[str, str]) -> Outcome:
            now[0] += 30
            return await super().run(scenario_yaml, labels)

    report = await Explorer(space(**{"budget: {runs: 30}": "budget: {runs: 30, time: 100s}"}), Slow(bug=False),
                            seed=11, clock=lambda: now[0]).explore()
    assert report.outcome == NO_FAILURE and len(report.runs) == 4
    assert report.reason == "the time budget (100s) ended the search"


async def test_no_agent_is_an_error_named_after_the_first_run() -> None:
    class Nobody:
        async def run(self, scenario_yaml: str, labels: dict[str, str]) -> Outcome:
            return Outcome("NO_RESULT", "no result within 600s (is an agent running?)")

    report = await Explorer(space(), Nobody(), seed=11).explore()
    assert report.outcome == "ERROR" and report.reason == "run 1: no result within 600s (is an agent running?)"


async def test_the_html_report_draws_both_schedules_and_lists_every_step(tmp_path: Path) -> None:
    report = await Explorer(space(), BuggySystem(), seed=11).explore()
    page = to_html(report)
    assert page.count("<svg") == 2, "as found and as shrunk"
    assert 'aria-label="link-down at 0s for 0.5s, restart-risk at 0.5s"' in page
    assert "FAILURE FOUND" in page and "apiVersion: coordinator/v1" in page
    assert page.count("<tr>") == 1 + len(report.trials) + 1 + len(report.runs)
    shown = json.loads(to_json(report))
    assert shown["minimal"]["faults"] == "link-down at 0s for 0.5s, restart-risk at 0.5s"
    assert shown["runs"] == len(report.runs) == shown["searchRuns"] + shown["shrinkRuns"]
