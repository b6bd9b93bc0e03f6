"""The run history in a real Redis, at 10,000 runs of one scenario (its whole retention by default).

Writes 10,000 run summaries shaped like the flagship's (four expectations, one with a time to
recover), then times, each the median of several tries:

- ``figures_10000``: ``coordinator history`` over every run (read, parse, pass rate, score, p50/p95);
- ``figures_50``: the default view (the last 50 runs, listed);
- ``gate``: what a gated run reads before its verdict (``baseline.runs`` 10: the last 60 runs) and judges;
- ``record``: one result written (with its retention trim), as the agent does per result;

beside two ceilings measured in the same run: ``raw_read_10000``, the same Redis reads (ZREVRANGE and
HMGET of 10,000 entries) without parsing or figures, and ``ping``, one Redis round trip.

    .venv/bin/python bench/history.py [--runs 10000] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import history  # noqa: E402
from agent.devstack import Stack  # noqa: E402
from agent.history import Baseline, ExpectationOutcome, RedisHistory, RunSummary  # noqa: E402
from agent.store import connect  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "history.json"
NAME = "restart-risk-monitor-during-trading"


def _summary(number: int, rng: random.Random) -> RunSummary:
    passed = rng.random() > 0.05
    ttr = rng.lognormvariate(0.4, 0.3)
    return RunSummary(
        execution_id=f"{number:08d}-0000-4000-8000-000000000000", scenario=NAME,
        status="PASSED" if passed else "FAILED", ended_at=1_760_000_000.0 + number * 60, started_at=0.0,
        reason="all 4 expectation(s) passed and the steady state held" if passed else "expectation(s) failed: ...",
        requester="ci", labels={"schedule": "nightly"},
        expectations={"risk-monitor-ready-again": ExpectationOutcome("PASSED", ttr, "risk-monitor"),
                      "risk-monitor-time-to-recover": ExpectationOutcome("PASSED", ttr, "risk-monitor"),
                      "risk-reports-resume": ExpectationOutcome("PASSED", ttr + 1.0, "risk-monitor"),
                      "no-order-lost": ExpectationOutcome("PASSED" if passed else "FAILED", None, "risk-monitor")})


async def _median_ms(call: Callable[[], Awaitable[Any]], tries: int) -> float:
    took = []
    for _ in range(tries):
        began = time.perf_counter()
        await call()
        took.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(took), 2)


async def measure(url: str, runs: int) -> dict[str, Any]:
    redis = connect(url, decode_responses=True)
    store = RedisHistory(redis, "bench-history", keep=runs, days=36500)
    rng = random.Random(7)
    try:
        await redis.delete("bench-history:history", f"bench-history:history:{NAME}",
                           f"bench-history:history:{NAME}:runs")
        began = time.perf_counter()
        for number in range(runs):
            await store.record(_summary(number, rng))
        filled_s = time.perf_counter() - began
        runs_key = f"bench-history:history:{NAME}"

        async def raw() -> None:
            ids = await redis.zrevrange(runs_key, 0, runs - 1)
            await redis.hmget(runs_key + ":runs", ids)  # type: ignore[misc]

        async def gated() -> None:
            past = await store.recent(NAME, 10 * 4 + 20)
            history.gate(Baseline(10, 1.5), {"risk-monitor-time-to-recover": 4.5}, past)

        extra = iter(range(runs, runs + 1000))
        figures = await history.overview(store, NAME, runs, with_runs=False)
        out = {
            "runs": runs,
            "summary_bytes": len(_summary(0, rng).to_json()),
            "redis_memory_mb": round(int((await redis.info("memory"))["used_memory"]) / 2**20, 1),
            "figures_10000_ms": await _median_ms(lambda: history.overview(store, NAME, runs, with_runs=False), 5),
            "figures_50_ms": await _median_ms(lambda: history.overview(store, NAME, 50), 21),
            "gate_ms": await _median_ms(gated, 21),
            "record_ms": await _median_ms(lambda: store.record(_summary(next(extra), rng)), 51),
            "ceiling": {"raw_read_10000_ms": await _median_ms(raw, 5),
                        "ping_ms": await _median_ms(redis.ping, 51)},
            "fill_records_per_s": round(runs / filled_s),
            "kept_after_more_writes": await redis.zcard(runs_key),
            "check": {"pass_rate": round(figures["pass_rate"], 3),
                      "ttr_p50_s": round(figures["expectations"]["risk-monitor-time-to-recover"]["ttr_p50"], 3)},
        }
        await redis.delete("bench-history:history", runs_key, runs_key + ":runs")
        return out
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(Path.cwd())}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        stack = Stack(Path(tmp) / "stack")
        stack.up(("redis",))
        try:
            figures = asyncio.run(measure(stack.env()["COORDINATOR_REDIS_URL"], args.runs))
        finally:
            stack.down()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
