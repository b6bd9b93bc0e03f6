"""Run history: every result kept per scenario, for trends, regression gates and resilience scores.

**Where.** In Redis, beside everything else the agents share: any agent (and the CLI) reads the
same history, so a gate decided on one agent sees the runs the others made. SQLite would tie the
history to one agent's disk. Kafka stays the source of truth: ``coordinator history --rebuild``
reads the results topic from its start and records every result again (a record is idempotent:
keyed by execution id), so a lost or trimmed history comes back as far as the topic retains.

=====================================  ==============================================================
key                                    what
=====================================  ==============================================================
``{p}:history:{scenario}``             sorted set: execution ids by end time
``{p}:history:{scenario}:runs``        hash: execution id -> the run's summary (JSON, ``RunSummary``)
``{p}:history``                        sorted set: scenario names by their last run's end time
=====================================  ==============================================================

**Retention.** Each scenario keeps its last ``keep`` runs and none older than ``days``; the trim
happens in the same script as the write.

What a run keeps: status, reason, times, requester, labels, and per expectation its verdict, time
to recover and target (the target of the fault its verdict followed). Dry runs and rejected
requests are not runs and are left out.

**Gates.** ``gate`` compares a run's times to recover with the median of the last ``runs`` PASSED
runs of the same scenario (the control): worse by more than ``max_ratio`` fails the run, even
within the expectation's own absolute bound. Fewer than ``MIN_BASELINE`` such runs: no gate yet,
and the run says so.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from redis import asyncio as aioredis

from agent._proto.coordinator.v1 import events_pb2
from agent.constants import redis_key
from agent.errors import Rejected
from agent.vocabulary import status_name

#: a gate needs at least this many PASSED runs (or ``runs``, when fewer) before it judges
MIN_BASELINE = 3
PASSED = "PASSED"


def _seconds(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9 if ts.seconds or ts.nanos else 0.0


@dataclass
class ExpectationOutcome:
    status: str
    #: seconds from the injection to the recovery the expectation saw; None when it measured none
    ttr: float | None = None
    target: str = ""


@dataclass
class RunSummary:
    execution_id: str
    scenario: str
    status: str
    ended_at: float
    started_at: float = 0.0
    reason: str = ""
    requester: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    expectations: dict[str, ExpectationOutcome] = field(default_factory=dict)

    @classmethod
    def of(cls, result: events_pb2.ScenarioResult, *, ended_at: float | None = None) -> RunSummary | None:
        """The summary of a result; None for what is not a run (a dry run, a rejected request)."""
        if result.dry_run or result.status in (events_pb2.EXECUTION_STATUS_REJECTED,
                                               events_pb2.EXECUTION_STATUS_UNSPECIFIED):
            return None
        targets = {i.correlation_id: i.target for i in result.injections}
        outcomes: dict[str, ExpectationOutcome] = {}
        for verdict in result.verdicts:
            ttr = (verdict.time_to_recover.seconds + verdict.time_to_recover.nanos / 1e9
                   if verdict.HasField("time_to_recover") else None)
            name = events_pb2.VerdictStatus.Name(verdict.status).removeprefix("VERDICT_STATUS_")
            outcomes[verdict.expectation_name] = ExpectationOutcome(name, ttr, targets.get(verdict.correlation_id, ""))
        return cls(execution_id=result.execution_id, scenario=result.scenario_name,
                   status=status_name(result.status), ended_at=ended_at or _seconds(result.ended_at) or time.time(),
                   started_at=_seconds(result.started_at), reason=result.reason, requester=result.requester,
                   labels=dict(result.labels), expectations=outcomes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RunSummary:
        raw = json.loads(text)
        raw["expectations"] = {k: ExpectationOutcome(**v) for k, v in raw.get("expectations", {}).items()}
        return cls(**raw)


# -- figures ----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` percentile (0..100) of ``values``, nearest rank; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class ExpectationFigures:
    runs: int
    passed: int
    ttr_p50: float | None
    ttr_p95: float | None
    ttr_last: float | None


@dataclass
class Figures:
    scenario: str
    runs: int
    passed: int
    pass_rate: float | None
    #: share of expectation verdicts PASSED over these runs (0..1)
    score: float | None
    expectations: dict[str, ExpectationFigures]
    #: the same share per target (the target of the fault each verdict followed)
    targets: dict[str, float]
    first_at: float | None
    last_at: float | None


def figures(scenario: str, runs: Iterable[RunSummary]) -> Figures:
    """Pass rate, resilience score, and time to recover p50/p95 per expectation over ``runs``
    (newest first, as ``History.recent`` gives them)."""
    runs = list(runs)
    per: dict[str, list[ExpectationOutcome]] = {}
    by_target: dict[str, list[bool]] = {}
    for run in runs:
        for name, outcome in run.expectations.items():
            per.setdefault(name, []).append(outcome)
            if outcome.target:
                by_target.setdefault(outcome.target, []).append(outcome.status == PASSED)
    judged = [o.status == PASSED for outcomes in per.values() for o in outcomes]
    passed = sum(run.status == PASSED for run in runs)
    exp: dict[str, ExpectationFigures] = {}
    for name, outcomes in per.items():
        times = [o.ttr for o in outcomes if o.ttr is not None]
        exp[name] = ExpectationFigures(len(outcomes), sum(o.status == PASSED for o in outcomes),
                                       percentile(times, 50), percentile(times, 95), times[0] if times else None)
    return Figures(scenario, len(runs), passed, passed / len(runs) if runs else None,
                   sum(judged) / len(judged) if judged else None, exp,
                   {t: sum(v) / len(v) for t, v in sorted(by_target.items())},
                   runs[-1].ended_at if runs else None, runs[0].ended_at if runs else None)


# -- the regression gate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """``baseline: {runs: 10, timeToRecover: {maxRatio: 1.5}}`` of a scenario, or of a request."""

    runs: int
    max_ratio: float


@dataclass
class GateCheck:
    expectation: str
    ttr: float
    baseline_p50: float
    ratio: float
    over: bool

    def sentence(self, baseline: Baseline, runs: int) -> str:
        return (f"{self.expectation} recovered in {self.ttr:.3f}s, {self.ratio:.1f}x the baseline's "
                f"p50 of {self.baseline_p50:.3f}s over the last {runs} passed run(s) "
                f"(at most {baseline.max_ratio:g}x allowed)")


@dataclass
class GateOutcome:
    checks: list[GateCheck]
    #: the passed runs the baseline was taken from
    runs: int
    #: set when there was not enough history to judge
    note: str = ""

    def failures(self, baseline: Baseline) -> list[str]:
        return [c.sentence(baseline, self.runs) for c in self.checks if c.over]


def baseline_of(request: events_pb2.ScenarioRequest, spec_baseline: Any) -> Baseline | None:
    """The gate a run is held to: the request's when it sets one, else the scenario's
    (``spec.baseline``), else none. ``Rejected`` names a request's bad values."""
    if request.HasField("baseline"):
        wanted = request.baseline
        problems = []
        if not 1 <= wanted.runs <= 1000:
            problems.append(f"baseline.runs must be 1..1000, got {wanted.runs}")
        if not 1 < wanted.max_ratio <= 1000:
            problems.append(f"baseline.max_ratio must be above 1 (and at most 1000), got {wanted.max_ratio:g}")
        if problems:
            raise Rejected("invalid-baseline", "; ".join(problems))
        return Baseline(wanted.runs, wanted.max_ratio)
    if spec_baseline is None:
        return None
    return Baseline(spec_baseline.runs, spec_baseline.time_to_recover.max_ratio)


def gate(baseline: Baseline, ttrs: dict[str, float], past: Iterable[RunSummary], *,
         exclude: str = "") -> GateOutcome:
    """Judge this run's times to recover (``ttrs``, by expectation) against the median of the
    last ``baseline.runs`` PASSED runs in ``past`` (newest first; ``exclude``: this run's id)."""
    control = [r for r in past if r.status == PASSED and r.execution_id != exclude][:baseline.runs]
    needed = min(MIN_BASELINE, baseline.runs)
    if len(control) < needed:
        return GateOutcome([], len(control), f"baseline: {len(control)} passed run(s) of {needed} needed so far; "
                                             "not gated")
    checks = []
    for name, ttr in sorted(ttrs.items()):
        times = [r.expectations[name].ttr for r in control
                 if name in r.expectations and r.expectations[name].ttr is not None]
        p50 = percentile([t for t in times if t is not None], 50)
        if p50 is None or p50 <= 0:
            continue
        ratio = ttr / p50
        checks.append(GateCheck(name, ttr, p50, ratio, ratio > baseline.max_ratio))
    return GateOutcome(checks, len(control))


# -- the stores -----------------------------------------------------------------------------------------
class History(Protocol):
    async def record(self, run: RunSummary) -> None: ...
    async def recent(self, scenario: str, limit: int = 100) -> list[RunSummary]: ...
    async def scenarios(self) -> list[str]: ...


class RedisHistory:
    """``History`` in Redis (see the module's table)."""

    #: KEYS: runs zset, runs hash, scenarios zset; ARGV: id, end time, summary, scenario, keep, oldest
    _RECORD = """
    redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
    redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
    local newest = redis.call('zrevrange', KEYS[1], 0, 0, 'withscores')
    redis.call('zadd', KEYS[3], newest[2], ARGV[4])
    local gone = redis.call('zrange', KEYS[1], 0, -(tonumber(ARGV[5]) + 1))
    local old = redis.call('zrangebyscore', KEYS[1], '-inf', '(' .. ARGV[6])
    for _, id in ipairs(old) do table.insert(gone, id) end
    if #gone > 0 then
      redis.call('zrem', KEYS[1], unpack(gone))
      redis.call('hdel', KEYS[2], unpack(gone))
    end
    return #gone
    """

    def __init__(self, redis: aioredis.Redis, prefix: str = "coordinator", *, keep: int = 10_000,
                 days: float = 90.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keep = keep
        self.days = days
        self._record = redis.register_script(self._RECORD)

    def _keys(self, scenario: str) -> tuple[str, str]:
        runs = redis_key(self.prefix, "history", scenario)
        return runs, runs + ":runs"

    async def record(self, run: RunSummary) -> None:
        runs, summaries = self._keys(run.scenario)
        oldest = time.time() - self.days * 86400
        await self._record(keys=[runs, summaries, redis_key(self.prefix, "history")],
                           args=[run.execution_id, repr(run.ended_at), run.to_json(), run.scenario,
                                 self.keep, repr(oldest)])

    async def recent(self, scenario: str, limit: int = 100) -> list[RunSummary]:
        runs, summaries = self._keys(scenario)
        ids = await self.redis.zrevrange(runs, 0, max(limit, 1) - 1)
        if not ids:
            return []
        texts: list[Any] = await self.redis.hmget(summaries, ids)  # type: ignore[misc]
        return [RunSummary.from_json(t) for t in texts if t]

    async def scenarios(self) -> list[str]:
        return [s if isinstance(s, str) else s.decode() for s in
                await self.redis.zrevrange(redis_key(self.prefix, "history"), 0, -1)]


class MemoryHistory:
    """``History`` in a dict, for unit tests and for engines without Redis."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self.runs: dict[str, dict[str, RunSummary]] = {}

    async def record(self, run: RunSummary) -> None:
        mine = self.runs.setdefault(run.scenario, {})
        mine[run.execution_id] = run
        for old in sorted(mine.values(), key=lambda r: r.ended_at)[:-self.keep]:
            del mine[old.execution_id]

    async def recent(self, scenario: str, limit: int = 100) -> list[RunSummary]:
        return sorted(self.runs.get(scenario, {}).values(), key=lambda r: r.ended_at, reverse=True)[:limit]

    async def scenarios(self) -> list[str]:
        return sorted(self.runs, key=lambda s: -max(r.ended_at for r in self.runs[s].values()))


def as_dict(figures_: Figures, runs: list[RunSummary] | None = None) -> dict[str, Any]:
    """What ``coordinator history --output json`` prints and ``GET /api/v1/history/{scenario}``
    answers: the figures, and the runs (``recent``, newest first) when given."""
    out = asdict(figures_)
    if runs is not None:
        out["recent"] = [asdict(r) for r in runs]
    return out


async def overview(history: History, scenario: str, last: int, *, with_runs: bool = True) -> dict[str, Any]:
    recent = await history.recent(scenario, last)
    return as_dict(figures(scenario, recent), recent if with_runs else None)
