"""Devstack start-up times, printed as JSON.

- cold: a fresh stack directory (Kafka's log directory is formatted first); jars already cached
- warm: the same directory again after `down` (already formatted)
Each figure is the wall time of `Stack.up()` until every part answers (Kafka: admin metadata,
Redis: PING, Toxiproxy: GET /version), over --runs runs.

    .venv/bin/python bench/devstack_start.py [--runs 3] [--secure] [--brokers 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from agent.devstack import Stack, ensure_all


def _timed_up(stack: Stack, secure: bool | None = None, brokers: int | None = None) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    parts = stack.up(secure=secure, brokers=brokers)
    return time.perf_counter() - t0, parts


def _summary(values: list[float]) -> dict[str, float]:
    return {"min_s": round(min(values), 3), "median_s": round(statistics.median(values), 3),
            "max_s": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--secure", action="store_true", help="TLS, SCRAM and mTLS on Kafka, TLS and ACL on Redis")
    parser.add_argument("--brokers", type=int, default=1, choices=(1, 3))
    opts = parser.parse_args()
    t0 = time.perf_counter()
    ensure_all()
    install_s = time.perf_counter() - t0
    cold, warm, parts_cold, parts_warm = [], [], [], []
    for _ in range(opts.runs):
        with tempfile.TemporaryDirectory(prefix="bench-devstack-") as tmp:
            stack = Stack(Path(tmp))
            try:
                took, parts = _timed_up(stack, opts.secure, opts.brokers)
                cold.append(took)
                parts_cold.append(parts)
                stack.down()
                took, parts = _timed_up(stack)
                warm.append(took)
                parts_warm.append(parts)
            finally:
                stack.down()
    print(json.dumps({
        "benchmark": "devstack_start",
        "runs": opts.runs, "secure": opts.secure, "brokers": opts.brokers,
        "install_check_s": round(install_s, 3),
        "cold": _summary(cold),
        "warm": _summary(warm),
        "cold_by_part_median_s": {p: statistics.median(r[p] for r in parts_cold) for p in parts_cold[0]},
        "warm_by_part_median_s": {p: statistics.median(r[p] for r in parts_warm) for p in parts_warm[0]},
    }, indent=2))


if __name__ == "__main__":
    main()
