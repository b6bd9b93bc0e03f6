"""The short nemesis (bench/nemesis.py): two agents and a worker under every kind of nemesis action
for about three minutes, the history read back from the topics and checked. The schedule comes from
the seed alone: NEMESIS_SEED=N runs a failing seed again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.devstack import Stack
from bench.nemesis import KINDS, Knobs, run, schedule

pytestmark = pytest.mark.timeout(900)

SHORT = {"requests": 14, "agents": 2, "lease_ttl": 6.0, "reconcile_interval": 1.0, "gap": (5.0, 9.0),
         "pause": (3.0, 9.0), "redis_down": (1.5, 9.0), "kafka_down": (2.0, 5.0), "hold": (1.0, 4.0),
         "spacing": 4.0}


def test_the_schedule_comes_from_the_seed_alone_and_has_every_kind() -> None:
    one, again, other = (schedule(Knobs(seed=s, **SHORT)) for s in (11, 11, 12))  # type: ignore[arg-type]
    assert one == again and one != other
    assert {a.kind for a in one} == set(KINDS)
    outages = [a.seconds for a in one if a.kind == "redis"]
    assert outages[0] < SHORT["lease_ttl"], "the first Redis outage is shorter than the lease TTL"
    assert all(o > SHORT["lease_ttl"] for o in outages[1::2]), "every second one is longer"


async def test_under_the_nemesis_every_request_has_one_result_and_no_fault_is_left_cut_short_or_hidden(
    stack: Stack, tmp_path: Path
) -> None:
    seed = int(os.environ.get("NEMESIS_SEED", "20261204"))
    report = await run(stack, Knobs(seed=seed, **SHORT), tmp_path)  # type: ignore[arg-type]
    summary = json.dumps(report, indent=1)
    assert report["passed"], f"seed {seed} (NEMESIS_SEED={seed} runs it again):\n{summary}"
    assert report["results"] == report["requests"] == SHORT["requests"], summary
    assert set(report["actions_by_kind"]) == set(KINDS), summary
