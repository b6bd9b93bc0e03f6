"""``coordinator explore`` against plain random search, on the real stack, over several seeds.

The sim runs with its latent two-fault bug on (knob forget_when_both_down: the trading engine forgets
orders when calls to the exchange and to the risk monitor both fail within 5 s). The space
(bench/explore_space.yaml) holds four faults: the exchange link down, the risk monitor restarted, the
exchange restarted (with the risk monitor's restart, a second way to the bug) and a harmless latency.

For each seed:

- **explore**: search, confirm (k of n) and shrink, as ``coordinator explore`` does: the run of the
  first failure, the runs to the minimal schedule, its faults, the wall time;
- **random**: the same number of runs of plain random search from the same seed (no confirmation,
  no shrinking): the run of its first failure, how many runs failed, and the smallest failing
  schedule it met (by faults, then faults at once, then hold and start).

Prints JSON (and writes bench/results/explore.json with --write):

    .venv/bin/python bench/explore.py [--seeds 1 2 3 4 5] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
import xmlrpc.client
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.explore import Explorer, KafkaRunner, load_exploration_file  # noqa: E402
from agent.explore import schedule as sched  # noqa: E402
from agent.explore.explorer import FAILED  # noqa: E402
from sim.launch import Sim, SimInfo, SimOptions  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import applied_settings, engine_env, until_verdicts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "bench" / "explore_space.yaml"
RESULTS = ROOT / "bench" / "results" / "explore.json"


def _buggy(sim: Sim, info: SimInfo) -> None:
    sim.knobs_file.write_text(json.dumps({"trading-engine": {"forget_when_both_down": True}}))
    with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
        proxy.supervisor.stopProcess("trading-engine")
        proxy.supervisor.startProcess("trading-engine")
    deadline = time.monotonic() + 60
    while sim.status()["processes"]["trading-engine"]["ready"] is not True:
        if time.monotonic() > deadline:
            raise SystemExit("the trading engine is not ready again")
        time.sleep(0.2)


async def _explore(space: Any, runner: KafkaRunner, seed: int) -> dict[str, Any]:
    began = time.monotonic()
    report = await Explorer(space, runner, seed=seed,
                            on_progress=lambda text: print(f"  [explore {seed}] {text}", file=sys.stderr)).explore()
    to_minimal = len(report.runs) if report.minimal else None
    return {"outcome": report.outcome, "first_failure_run": report.first_failure_run or None,
            "runs_to_minimal": to_minimal, "runs": len(report.runs),
            "found": sched.describe(report.found) if report.found else None,
            "minimal": sched.describe(report.minimal) if report.minimal else None,
            "minimal_faults": len(report.minimal) if report.minimal else None,
            "wall_s": round(time.monotonic() - began, 1), "reason": report.reason}


async def _random(space: Any, runner: KafkaRunner, seed: int, runs: int) -> dict[str, Any]:
    """Plain random search: ``runs`` schedules from the seed, each run once, nothing shrunk."""
    began = time.monotonic()
    explorer = Explorer(space, runner, seed=seed)  # for its rendering only
    first, failing = None, []
    for number, schedule in zip(range(1, runs + 1), sched.draws(seed, space.spec), strict=False):
        outcome = await runner.run(explorer.scenario_yaml(schedule), {"exploration": space.name,
                                                                       "exploration-phase": "random"})
        print(f"  [random {seed}] run {number} {sched.describe(schedule)} -> {outcome.status}", file=sys.stderr)
        if outcome.status == FAILED:
            first = first or number
            failing.append(schedule)
    smallest = min(failing, key=sched.size) if failing else None
    return {"runs": runs, "first_failure_run": first, "failing_runs": len(failing),
            "smallest_failing": sched.describe(smallest) if smallest else None,
            "smallest_failing_faults": len(smallest) if smallest else None,
            "wall_s": round(time.monotonic() - began, 1)}


async def run(stack_env: dict[str, str], scratch: Path, seeds: list[int], write: bool = False) -> dict[str, Any]:
    space = load_exploration_file(SPACE)
    sim = Sim(scratch / "sim")
    sfx = uuid.uuid4().hex[:8]
    info = await asyncio.to_thread(sim.up, SimOptions(kafka=stack_env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
                             redis_url=stack_env["COORDINATOR_REDIS_URL"],
                             toxiproxy_url=stack_env["COORDINATOR_TOXIPROXY_URL"], rate=20, order_timeout=4,
                             loss_timeout=5, audit_topic=f"bench.{sfx}.audit", orders_topic=f"bench.{sfx}.orders"))
    worker = agent = None
    try:
        base = engine_env(stack_env, info.supervisor_url)
        env = {**base, **info.agent_env(), "COORDINATOR_WORKER_APP_ID": f"{base['COORDINATOR_REDIS_KEY_PREFIX']}-w",
               "COORDINATOR_WORKER_TICK_INTERVAL": "0.2", "COORDINATOR_VERDICT_GRACE": "8",
               "COORDINATOR_LATE_EVIDENCE": "30", "COORDINATOR_LOG_LEVEL": "warning"}
        settings = await applied_settings(env)
        worker = AgentProcess(env, scratch / "worker.log", ("worker", "--loglevel", "warning"), r"").start(timeout=90)
        agent = AgentProcess(env, scratch / "agent.log").start()
        await until_verdicts(settings, scratch)  # the worker joins its group and reads the sim's backlog
        await asyncio.to_thread(_buggy, sim, info)
        runner = KafkaRunner(settings, requester="bench:explore", run_timeout=300)
        per_seed = []
        for seed in seeds:
            explored = await _explore(space, runner, seed)
            plain = await _random(space, runner, seed, explored["runs"])
            per_seed.append({"seed": seed, "explore": explored, "random": plain})
            print(json.dumps(per_seed[-1]), file=sys.stderr)
            if write:  # each seed as it ends: a long run stopped half way keeps what it measured
                RESULTS.write_text(json.dumps(_report(per_seed, complete=len(per_seed) == len(seeds)), indent=2) + "\n")
    finally:
        for process in (agent, worker):
            if process is not None:
                process.stop()
        await asyncio.to_thread(sim.down)
    return _report(per_seed, complete=True)


def _report(per_seed: list[dict[str, Any]], *, complete: bool) -> dict[str, Any]:
    return {"benchmark": "explore", "space": str(SPACE.relative_to(ROOT)), "complete": complete,
            "seeds": per_seed, "summary": _summary(per_seed)}


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    def values(side: str, key: str) -> list[Any]:
        return [s[side][key] for s in per_seed if s[side][key] is not None]

    return {
        "explore_found": sum(s["explore"]["outcome"] == "FAILURE_FOUND" for s in per_seed),
        "explore_minimal_two_faults": sum(s["explore"]["minimal_faults"] == 2 for s in per_seed),
        "explore_first_failure_runs": values("explore", "first_failure_run"),
        "explore_runs_to_minimal": values("explore", "runs_to_minimal"),
        "explore_wall_s": values("explore", "wall_s"),
        "random_found": sum(s["random"]["first_failure_run"] is not None for s in per_seed),
        "random_smallest_two_faults": sum(s["random"]["smallest_failing_faults"] == 2 for s in per_seed),
        "random_first_failure_runs": values("random", "first_failure_run"),
        "random_smallest_faults": values("random", "smallest_failing_faults"),
        "random_wall_s": values("random", "wall_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    from bench._stack import local_stack

    def stop(*_: object) -> None:  # SIGTERM as Ctrl-C: the sim, the agents and the stack go down too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with local_stack() as (stack, scratch):
        report = asyncio.run(run(stack.env(), scratch, args.seeds, args.write))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
