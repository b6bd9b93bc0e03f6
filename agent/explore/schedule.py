"""Schedules: which faults of a space, when, for how long; drawn from a seed, and made smaller.

A schedule is a tuple of placed faults, each a fault of the space (at most once), its start (seconds
after the schedule's first fault, which starts at 0) and its hold (lasting faults only). Times are
tenths of a second, so that a schedule prints, compares and renders exactly.

``generate`` draws schedules from a ``random.Random`` seeded with the exploration's seed: the same
seed and space give the same schedules, on any machine and Python version that keeps
``random.Random``'s documented reproducibility (its generator and ``randint``/``sample``/``uniform``).

``size`` orders schedules from simple to complex: fewer faults, fewer faults at the same time,
shorter holds, earlier starts. ``candidates`` lists the schedules one step smaller than a given one
(each strictly smaller by ``size``), in the order a shrinker tries them: a fault dropped, two
concurrent faults put one after the other, a hold cut to its minimum or halved, a start moved to 0
or halved. Because every candidate is smaller, greedy shrinking always ends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from agent.explore.space import ExplorationSpec, Template
from agent.fields import format_duration


def tenth(seconds: float) -> float:
    return round(seconds * 10) / 10


def tenth_up(seconds: float) -> float:
    """The first tenth of a second at or after ``seconds`` (sums of tenths stay exact)."""
    return math.ceil(round(seconds * 10, 6)) / 10


@dataclass(frozen=True, order=True)
class Placed:
    start: float
    name: str
    hold: float | None = None

    @property
    def end(self) -> float:
        return tenth(self.start + (self.hold or 0.0))

    @property
    def busy_until(self) -> float:
        """When it stops counting against maxConcurrentFaults: its end; an instantaneous fault a tenth after."""
        return tenth(self.start + (self.hold or 0.1))

    def describe(self) -> str:
        """``link-down at 0.4s for 1.5s``, ``restart-risk at 0s``."""
        text = f"{self.name} at {format_duration(self.start)}"
        return text + (f" for {format_duration(self.hold)}" if self.hold is not None else "")

    def as_dict(self) -> dict[str, object]:
        return {"fault": self.name, "start": self.start, "hold": self.hold}


Schedule = tuple[Placed, ...]


def make(faults: list[Placed] | tuple[Placed, ...]) -> Schedule:
    """A schedule in its one form: sorted by start, moved so that the first fault starts at 0."""
    if not faults:
        return ()
    first = min(f.start for f in faults)
    return tuple(sorted(Placed(tenth(f.start - first), f.name, f.hold) for f in faults))


def describe(schedule: Schedule) -> str:
    return ", ".join(p.describe() for p in schedule) or "(no fault)"


def concurrent(a: Placed, b: Placed) -> bool:
    """Whether two faults are active at the same time (an instant inside a held fault counts)."""
    first, second = (a, b) if (a.start, a.name) <= (b.start, b.name) else (b, a)
    if first.hold is None:
        return second.start == first.start
    return second.start < first.end


def concurrent_pairs(schedule: Schedule) -> int:
    return sum(concurrent(a, b) for i, a in enumerate(schedule) for b in schedule[i + 1:])


def size(schedule: Schedule) -> tuple[int, int, float, float]:
    return (len(schedule), concurrent_pairs(schedule), round(sum(p.hold or 0.0 for p in schedule), 1),
            round(sum(p.start for p in schedule), 1))


def generate(rng: random.Random, spec: ExplorationSpec) -> Schedule:
    """One schedule drawn from ``rng`` within the space's bounds."""
    bounds = spec.schedule
    templates = spec.faults
    count = rng.randint(min(bounds.faults.min, len(templates)), min(bounds.faults.max, len(templates)))
    chosen = rng.sample(templates, count)
    placed: list[Placed] = []
    for index, template in enumerate(chosen):
        start = 0.0 if index == 0 else tenth(rng.uniform(bounds.start.min, bounds.start.max))
        placed.append(Placed(start, template.name, _hold(rng, template)))
    if not bounds.overlap:
        placed = _one_after_another(placed)
    return make(_within_concurrency(placed, bounds.max_concurrent_faults))


def draws(seed: int, spec: ExplorationSpec, *, redraws: int = 200) -> Iterator[Schedule]:
    """The schedules a seed gives, in order, each once: a schedule drawn again is drawn past; the
    draws end when ``redraws`` draws in a row gave nothing new (a small space, all tried)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible schedules, not secrets
    tried: set[Schedule] = set()
    misses = 0
    while misses < redraws:
        schedule = generate(rng, spec)
        if schedule in tried:
            misses += 1
            continue
        misses = 0
        tried.add(schedule)
        yield schedule


def _hold(rng: random.Random, template: Template) -> float | None:
    if template.hold is None:
        return None
    return max(tenth(rng.uniform(template.hold.min, template.hold.max)), tenth(template.hold.min), 0.1)


def _one_after_another(placed: list[Placed]) -> list[Placed]:
    out: list[Placed] = []
    at = 0.0
    for fault in sorted(placed):
        start = fault.start + at if out else 0.0
        out.append(Placed(tenth_up(start), fault.name, fault.hold))
        at = out[-1].end + 0.1
    return out


def _within_concurrency(placed: list[Placed], limit: int) -> list[Placed]:
    """Delay faults that would make more than ``limit`` active at once until one has ended."""
    out: list[Placed] = []
    for fault in sorted(placed):
        start = fault.start
        while True:
            active = [f for f in out if f.start <= start < f.busy_until]
            if len(active) < limit:
                break
            start = min(f.busy_until for f in active)
        out.append(Placed(start, fault.name, fault.hold))
    return out


def candidates(schedule: Schedule, spec: ExplorationSpec) -> Iterator[Schedule]:
    """The schedules one step smaller than ``schedule``, simplest change first; each strictly
    smaller by ``size``, none repeated."""
    seen: set[Schedule] = {schedule}
    current = size(schedule)
    holds = {t.name: t.hold for t in spec.faults}

    def fresh(faults: list[Placed]) -> Iterator[Schedule]:
        candidate = make(_within_concurrency(faults, spec.schedule.max_concurrent_faults))
        if candidate and candidate not in seen and size(candidate) < current:
            seen.add(candidate)
            yield candidate

    for index in range(len(schedule)):  # a fault fewer
        if len(schedule) > 1:
            yield from fresh([p for i, p in enumerate(schedule) if i != index])
    for i, a in enumerate(schedule):  # one after the other instead of at once
        for j, b in enumerate(schedule):
            if i != j and (a.start, a.name) <= (b.start, b.name) and concurrent(a, b):
                moved = Placed(tenth_up(a.end + (0.1 if a.hold is None else 0.0)), b.name, b.hold)
                yield from fresh([moved if k == j else p for k, p in enumerate(schedule)])
    for index, fault in enumerate(schedule):  # shorter holds
        span = holds.get(fault.name)
        if fault.hold is None or span is None:
            continue
        for hold in (tenth(span.min), tenth(fault.hold / 2)):
            hold = max(hold, tenth(span.min), 0.1)
            if hold < fault.hold:
                yield from fresh([Placed(p.start, p.name, hold) if k == index else p for k, p in enumerate(schedule)])
    for index, fault in enumerate(schedule):  # earlier starts
        for start in (0.0, tenth(fault.start / 2)):
            if start < fault.start:
                yield from fresh([Placed(start, p.name, p.hold) if k == index else p for k, p in enumerate(schedule)])
