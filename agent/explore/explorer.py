"""The exploration loop: search schedules, confirm a failure, shrink it, say what ran.

The explorer is a requester like any other: each schedule is rendered as a scenario and run through a
``Runner`` (``agent.explore.kafka.KafkaRunner`` publishes an ordinary scenario request and follows its
result), so agents, leases, the allow-list, the kill switch and the worker's verdicts all apply.

- **Search**: draw schedules from the seed (``schedule.generate``) until one fails or the budget
  (runs, time) is spent. A schedule already tried is drawn again, not run again.
- **Confirm**: a failure counts when the schedule fails ``failures`` of ``tries`` runs (the first
  failing run is one of them); one that does not is reported as flaky and the search goes on.
- **Shrink**: greedily, try the candidates one step smaller (``schedule.candidates``), in order; the
  first that still fails (k of n again, stopping as soon as the answer is known) becomes the current
  schedule; stop when none does, or the shrink budget is spent (the smallest confirmed failure so
  far is then the answer, and the report says the budget ended it).
- **Halt**: a run ABORTED or REJECTED (the agents halted, the kill switch on, the request refused)
  or an interruption ends the exploration after the run in flight has ended; the agent that ran
  it has reverted its faults by then (it always does before its result), and the report lists what
  ran.

Why not Hypothesis: its search and shrinker are built for tests that run in microseconds and give
the same answer every time. A run here takes 10-40 s of a live system and may answer differently;
Hypothesis re-runs a test hundreds of times while shrinking, has no notion of k-of-n, and raises
``Flaky`` when an answer changes. Its database replays a failure only by re-running the test under
the same strategy and library version. Here a seed reproduces the schedules through ``random.Random``
(documented stable), a greedy shrinker spends at most the budget it is given and accepts only
candidates that fail k of n times, and the replay is the minimal scenario itself, a YAML file any
``coordinator run`` takes. Hypothesis stays a test dependency: it checks these rules in the unit tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.explore import schedule as sched
from agent.explore.schedule import Schedule
from agent.explore.space import Space, render_yaml

PASSED, FAILED, INCONCLUSIVE = "PASSED", "FAILED", "INCONCLUSIVE"
#: a run that ends so says the agents will not run more: the exploration stops
HALTING = {"ABORTED", "REJECTED"}
#: outcomes of the exploration (the ExplorationOutcome names)
FAILURE_FOUND, NO_FAILURE, HALTED, ERROR = "FAILURE_FOUND", "NO_FAILURE", "HALTED", "ERROR"
#: runs that say nothing (ERROR, INCONCLUSIVE) one after another before the exploration gives up
MAX_ERRORS_IN_A_ROW = 3


@dataclass(frozen=True)
class Outcome:
    """What one run ended with: a ScenarioResult's status (PASSED, FAILED, ERROR, ...), or NO_RESULT."""

    status: str
    reason: str = ""
    execution_id: str = ""
    verdicts: tuple[tuple[str, str, str], ...] = ()


NO_RESULT = "NO_RESULT"


class Runner(Protocol):
    async def run(self, scenario_yaml: str, labels: dict[str, str]) -> Outcome:
        """Run one scenario to its result."""


@dataclass
class Run:
    number: int
    phase: str  # search, confirm, shrink
    schedule: Schedule
    status: str
    reason: str
    execution_id: str
    seconds: float
    verdicts: tuple[tuple[str, str, str], ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def as_dict(self) -> dict[str, object]:
        return {"run": self.number, "phase": self.phase, "schedule": [p.as_dict() for p in self.schedule],
                "faults": sched.describe(self.schedule), "status": self.status, "reason": self.reason,
                "executionId": self.execution_id, "seconds": round(self.seconds, 2),
                "verdicts": [{"expectation": n, "status": s, "reason": r} for n, s, r in self.verdicts]}


@dataclass
class Trial:
    """One schedule judged k of n: the runs it took and whether it still fails."""

    phase: str
    schedule: Schedule
    runs: list[int]
    statuses: list[str]
    fails: bool

    def as_dict(self) -> dict[str, object]:
        return {"phase": self.phase, "faults": sched.describe(self.schedule),
                "schedule": [p.as_dict() for p in self.schedule], "runs": self.runs, "statuses": self.statuses,
                "stillFails": self.fails}


@dataclass
class Report:
    name: str
    seed: int
    outcome: str = NO_FAILURE
    reason: str = ""
    runs: list[Run] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    flaky: list[Schedule] = field(default_factory=list)
    first_failure_run: int = 0
    found: Schedule = ()
    minimal: Schedule = ()
    minimal_yaml: str = ""
    wall_seconds: float = 0.0

    def count(self, *phases: str) -> int:
        return sum(1 for r in self.runs if r.phase in phases)

    def as_dict(self) -> dict[str, object]:
        return {
            "exploration": self.name, "seed": self.seed, "outcome": self.outcome, "reason": self.reason,
            "runs": len(self.runs), "searchRuns": self.count("search"), "shrinkRuns": self.count("confirm", "shrink"),
            "firstFailureRun": self.first_failure_run, "wallSeconds": round(self.wall_seconds, 1),
            "found": {"faults": sched.describe(self.found), "schedule": [p.as_dict() for p in self.found]}
            if self.found else None,
            "minimal": {"faults": sched.describe(self.minimal), "schedule": [p.as_dict() for p in self.minimal],
                        "scenario": self.minimal_yaml} if self.minimal else None,
            "flaky": [sched.describe(s) for s in self.flaky],
            "trials": [t.as_dict() for t in self.trials],
            "history": [r.as_dict() for r in self.runs],
        }


class Stop(Exception):
    """The exploration cannot go on: halted (``outcome`` HALTED) or unable to run (ERROR)."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class Explorer:
    def __init__(self, space: Space, runner: Runner, *, seed: int, shrink: bool = True,
                 on_progress: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 interrupted: asyncio.Event | None = None, exploration_id: str = "") -> None:
        self.space = space
        self.runner = runner
        self.seed = seed
        self.shrinking = shrink
        self.say = on_progress or (lambda text: None)
        self.clock = clock
        self.interrupted = interrupted or asyncio.Event()
        self.exploration_id = exploration_id
        self.report = Report(space.name, seed)
        self._started = 0.0
        self._errors_in_a_row = 0

    # -- the loop -------------------------------------------------------------------------------------------
    async def explore(self) -> Report:
        self._started = self.clock()
        try:
            await self._search()
        except Stop as stop:
            self.report.outcome, self.report.reason = stop.outcome, stop.reason
        self.report.wall_seconds = self.clock() - self._started
        if self.report.minimal:
            self.report.minimal_yaml = self.scenario_yaml(self.report.minimal, minimal=True)
        return self.report

    async def _search(self) -> None:
        spec = self.space.spec
        drawn = sched.draws(self.seed, spec)
        for _ in range(spec.budget.runs):
            schedule = next(drawn, None)
            if schedule is None:
                self.report.reason = f"every schedule of the space was tried ({len(self.report.runs)} runs)"
                break
            if self._out_of_time():
                self.report.reason = f"the time budget ({spec.budget.time:g}s) ended the search"
                break
            run = await self._run(schedule, "search")
            if not run.failed:
                continue
            if not self.report.first_failure_run:
                self.report.first_failure_run = run.number
            self.say(f"failure found at run {run.number}: {sched.describe(schedule)}; confirming "
                     f"({spec.shrink.failures} of {spec.shrink.tries})")
            if not await self._trial(schedule, "confirm", first=run):
                self.report.flaky.append(schedule)
                self.say("not confirmed: flaky; searching on")
                continue
            self.report.found = schedule
            self.report.outcome = FAILURE_FOUND
            self.report.minimal = schedule
            if self.shrinking:
                await self._shrink(schedule)
            else:
                self.report.reason = f"failing schedule found at run {run.number} (not shrunk)"
            return
        else:
            self.report.reason = f"no schedule failed in {spec.budget.runs} runs"
        self.report.outcome = NO_FAILURE
        if self.report.flaky:
            self.report.reason += f"; {len(self.report.flaky)} failed once and did not fail again"

    async def _shrink(self, schedule: Schedule) -> None:
        spec = self.space.spec
        current = schedule
        steps = 0
        ended = ""
        while not ended:
            for candidate in sched.candidates(current, spec):
                if self._shrink_runs() >= spec.shrink.runs:
                    ended = f"the shrink budget ({spec.shrink.runs} runs) ended it"
                    break
                if self._out_of_time():
                    ended = f"the time budget ({spec.budget.time:g}s) ended it"
                    break
                if await self._trial(candidate, "shrink"):
                    current = candidate
                    steps += 1
                    self.report.minimal = current
                    self.say(f"smaller and still failing: {sched.describe(current)}")
                    break
            else:
                ended = "no smaller schedule fails"
        self.report.reason = (f"failure found at run {self.report.first_failure_run} and shrunk in {steps} "
                              f"step(s) to {len(current)} fault(s): {sched.describe(current)}; {ended}")

    async def _trial(self, schedule: Schedule, phase: str, *, first: Run | None = None) -> bool:
        """Whether ``schedule`` fails k of n runs (``first``: a run of it already made)."""
        tries, needed = self.space.spec.shrink.tries, self.space.spec.shrink.failures
        runs = [first] if first is not None else []
        while True:
            failures = sum(r.failed for r in runs)
            if failures >= needed or failures + (tries - len(runs)) < needed:
                break
            runs.append(await self._run(schedule, phase))
        fails = sum(r.failed for r in runs) >= needed
        self.report.trials.append(Trial(phase, schedule, [r.number for r in runs], [r.status for r in runs], fails))
        return fails

    async def _run(self, schedule: Schedule, phase: str) -> Run:
        if self.interrupted.is_set():
            raise Stop(HALTED, "interrupted")
        number = len(self.report.runs) + 1
        labels = {"exploration": self.space.name, "exploration-run": str(number), "exploration-phase": phase}
        if self.exploration_id:
            labels["exploration-id"] = self.exploration_id
        began = self.clock()
        outcome = await self.runner.run(self.scenario_yaml(schedule), labels)
        run = Run(number, phase, schedule, outcome.status, outcome.reason, outcome.execution_id,
                  self.clock() - began, outcome.verdicts)
        self.report.runs.append(run)
        self.say(f"run {number} ({phase}) {sched.describe(schedule)} -> {run.status} in {run.seconds:.1f}s"
                 + (f": {run.reason}" if run.status != PASSED and run.reason else ""))
        if outcome.status in HALTING:
            raise Stop(HALTED, f"run {number} ended {outcome.status}: {outcome.reason}")
        if outcome.status == NO_RESULT:
            raise Stop(ERROR, f"run {number}: {outcome.reason}")
        self._errors_in_a_row = self._errors_in_a_row + 1 if outcome.status in {"ERROR", INCONCLUSIVE} else 0
        if self._errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
            raise Stop(ERROR, f"{MAX_ERRORS_IN_A_ROW} runs in a row ended in ERROR or INCONCLUSIVE; the last: "
                              f"{outcome.reason}")
        if self.interrupted.is_set():
            raise Stop(HALTED, f"interrupted after run {number}")
        return run

    def _shrink_runs(self) -> int:
        return self.report.count("confirm", "shrink")

    def _out_of_time(self) -> bool:
        limit = self.space.spec.budget.time
        return limit is not None and self.clock() - self._started >= limit

    # -- rendering ----------------------------------------------------------------------------------------
    def scenario_yaml(self, schedule: Schedule, *, minimal: bool = False) -> str:
        placed = [(p.name, p.start, p.hold) for p in schedule]
        description = f"explored (seed {self.seed}): {sched.describe(schedule)}"
        name = f"{self.space.name}-minimal"[:63].rstrip("-") if minimal else None
        header = ""
        if minimal:
            header = (f"# The smallest failing schedule `coordinator explore {self.space.source} --seed {self.seed}` "
                      f"found:\n# {sched.describe(schedule)}\n# Reproduce it with: coordinator run THIS_FILE\n")
        return render_yaml(self.space.scenario_data(placed, name=name, description=description), header)
