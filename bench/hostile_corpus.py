"""How fast, and with how much memory, each hostile scenario is refused. Prints JSON.

    .venv/bin/python bench/hostile_corpus.py [--repeat 20]

The goal (issue 3): every case refused within 100 ms, without large memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.errors import ScenarioError  # noqa: E402
from agent.scenario import load_scenario  # noqa: E402
from tests.unit.scenario.hostile import all_cases  # noqa: E402

GOAL_MS = 100.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    opts = parser.parse_args()
    results = {}
    for name, (document, _) in sorted(all_cases().items()):
        times = []
        for _ in range(opts.repeat):
            t0 = time.perf_counter()
            try:
                load_scenario(document, name)
            except ScenarioError:
                pass
            else:
                raise SystemExit(f"{name} was accepted")
            times.append((time.perf_counter() - t0) * 1000)
        tracemalloc.start()
        try:
            load_scenario(document, name)
        except ScenarioError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[name] = {"median_ms": round(statistics.median(times), 3), "max_ms": round(max(times), 3),
                         "peak_kib": round(peak / 1024, 1), "input_kib": round(len(document) / 1024, 1)}
    worst = max(r["max_ms"] for r in results.values())
    print(json.dumps({"benchmark": "hostile_corpus", "repeat": opts.repeat, "goal_ms": GOAL_MS,
                      "worst_max_ms": worst, "all_within_goal": worst < GOAL_MS, "cases": results}, indent=2))


if __name__ == "__main__":
    main()
