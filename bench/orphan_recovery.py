"""How long a killed agent's fault outlives it: SIGKILL -> fault reverted -> the run's one result.

Brings up a devstack in a temporary directory (or uses $COORDINATOR_DEVSTACK_DIR when it runs) and
two agents sharing Redis and the result topics: a *victim* that takes the requests, and a
*survivor* that reads no requests (its own requests topic) but reconciles. Each round the victim
applies a Toxiproxy latency toxic, is SIGKILLed, and is started again for the next round; the
survivor's reconciler finds the orphan. Prints JSON:

- kill_to_toxic_gone_s: SIGKILL -> the toxic is no longer listed by Toxiproxy (polled every 20 ms)
- kill_to_reverted_event_s: SIGKILL -> the survivor's REVERTED chaos event is read back
- kill_to_result_s: SIGKILL -> the run's ABORTED result is read back
- bound_s: the configured worst case, lease TTL + reconcile interval (the figures' ceiling: the
  owner's heartbeat key must expire, then a reconcile round must run); the measured figures are
  comparable across machines as a share of it

    .venv/bin/python bench/orphan_recovery.py [--rounds 5] [--lease-ttl 15] [--reconcile-interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from agent import client, topics  # noqa: E402
from agent.devstack.procs import free_port  # noqa: E402
from bench._stack import local_stack  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import chaos, engine_env, read_all, results, settings_from  # noqa: E402


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "min": round(ordered[0], 3), "p50": round(statistics.median(ordered), 3),
            "max": round(ordered[-1], 3)}


async def _toxics(url: str, proxy: str) -> list:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/proxies/{proxy}/toxics") as response:
        return await response.json() if response.status == 200 else []


async def _until(url: str, proxy: str, *, present: bool) -> None:
    while True:
        if bool(await _toxics(url, proxy)) == present:
            return
        await asyncio.sleep(0.02)


def _serving(agent: AgentProcess) -> None:
    deadline = time.monotonic() + 90
    while '"agent serving"' not in agent.output():
        if time.monotonic() > deadline:
            raise SystemExit("agent not serving:\n" + agent.output()[-2000:])
        time.sleep(0.05)


async def main(rounds: int, lease_ttl: float, reconcile: float) -> dict:
    with local_stack() as (stack, scratch):
        env = {**engine_env(stack.env(), "http://127.0.0.1:9/RPC2"),
               "COORDINATOR_LEASE_TTL": str(lease_ttl), "COORDINATOR_RECONCILE_INTERVAL": str(reconcile)}
        settings = settings_from(env)
        await topics.apply(settings)
        survivor_env = {**env, "COORDINATOR_INSTANCE_ID": "survivor",
                        "COORDINATOR_TOPICS__SCENARIO_REQUESTS": settings.topics.scenario_requests + ".unused",
                        "COORDINATOR_CREATE_TOPICS": "true"}
        survivor = AgentProcess(survivor_env, scratch / "survivor.log").start(timeout=90)
        _serving(survivor)
        gone, reverted, finished = [], [], []
        try:
            for n in range(rounds):
                victim = AgentProcess({**env, "COORDINATOR_INSTANCE_ID": f"victim-{n}"},
                                      scratch / f"victim-{n}.log").start(timeout=90)
                _serving(victim)
                proxy = f"bench-{uuid.uuid4().hex[:8]}"
                request = client.build_request("slow-link", {"proxy": proxy, "listen": f"127.0.0.1:{free_port()}",
                                                             "upstream": f"127.0.0.1:{free_port()}", "hold": "10m"})
                await client.submit(settings, request)
                await _until(settings.toxiproxy_url, proxy, present=True)
                await asyncio.sleep(1.0)  # the victim's heartbeat has run since the injection
                victim.signal(signal.SIGKILL)
                killed = time.time()
                victim.wait(10)
                await _until(settings.toxiproxy_url, proxy, present=False)
                gone.append(time.time() - killed)
                seen_revert = False
                while True:
                    events = chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
                    mine = {e.execution_id for e in events if e.type == 1 and e.owner.startswith(f"victim-{n}/")}
                    if not seen_revert and any(e.type == 2 and e.execution_id in mine for e in events):
                        reverted.append(time.time() - killed)
                        seen_revert = True
                    found = [r for r in results(await read_all(settings.kafka_bootstrap_servers,
                                                               settings.topics.scenario_results))
                             if r.request_id == request.request_id]
                    if found:
                        finished.append(time.time() - killed)
                        if not seen_revert:
                            reverted.append(time.time() - killed)
                        break
                    await asyncio.sleep(0.1)
        finally:
            survivor.stop()
    return {
        "rounds": rounds, "lease_ttl_s": lease_ttl, "reconcile_interval_s": reconcile,
        "bound_s": lease_ttl + reconcile,
        "kill_to_toxic_gone_s": summary(gone),
        "kill_to_reverted_event_s": summary(reverted),
        "kill_to_result_s": summary(finished),
        "toxic_gone_share_of_bound": round(statistics.median(gone) / (lease_ttl + reconcile), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--reconcile-interval", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds, args.lease_ttl, args.reconcile_interval)), indent=2))
