"""A nemesis of our own, in the spirit of Jepsen: requests through two or more agents and a stream
worker while a seeded nemesis SIGKILLs and replaces agents, pauses them (SIGSTOP/SIGCONT), restarts
Redis (for less and for more than the lease TTL) and the broker, and SIGKILLs and replaces the
worker. The whole history is read back from the topics and the agents' logs, then checked:

- one_result_per_request: every request has exactly one result;
- no_fault_left: no toxic on any proxy of the run and no lease in Redis, once leases had time to expire;
- nothing_injected_after_result: no INJECTED chaos event of a run after its result was decided;
- faults_listed_in_results: every fault a run's chaos events tell of is in its result and in the
  result's correlation-ids header;
- no_takeover_of_a_live_agent: every "reverting orphaned fault" / "finishing an execution whose agent
  stopped" names an owner that had been SIGKILLed, or paused within a lease TTL before;
- agents_ready_at_the_end: every agent still running answers /api/v1/ready with 200, the worker runs.

The schedule (which action, when, on which agent, for how long) is drawn from the seed alone, so a
failing seed runs the same schedule again. Prints the seed, each action as it happens (stderr) and
the figures and checks as JSON (stdout); exits 1 when a check fails.

    .venv/bin/python bench/nemesis.py [--seed N] [--requests 60] [--agents 2] [--lease-ttl 15]
                                      [--gap 8 25] [--kinds kill,pause,redis,kafka,worker]

``tests/integration/test_nemesis.py`` runs a short version of it (about 3 minutes) on the test stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402

from agent import client, topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.constants import CORRELATION_IDS_HEADER  # noqa: E402
from agent.devstack import Stack  # noqa: E402
from agent.devstack.procs import free_port  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.store import RedisStore  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import chaos, engine_env, header, read_all, results, settings_from, status  # noqa: E402

KINDS = ("kill", "pause", "redis", "kafka", "worker")
TAKEOVER_LINES = ("reverting orphaned fault", "finishing an execution whose agent stopped")


@dataclass
class Knobs:
    """The size of a run: what the short (test) and the long (benchmark) versions choose."""

    seed: int
    requests: int = 60
    agents: int = 2
    lease_ttl: float = 15.0
    reconcile_interval: float = 5.0
    #: seconds between two nemesis actions (drawn uniformly)
    gap: tuple[float, float] = (8.0, 25.0)
    #: how long a pause lasts, how long Redis and Kafka stay down
    pause: tuple[float, float] = (5.0, 25.0)
    redis_down: tuple[float, float] = (2.0, 25.0)
    kafka_down: tuple[float, float] = (2.0, 10.0)
    #: how long each request holds its fault, and the time between two requests
    hold: tuple[float, float] = (1.0, 10.0)
    spacing: float = 3.0
    kinds: tuple[str, ...] = KINDS


@dataclass
class Action:
    at: float  # seconds after the start
    kind: str
    agent: int = 0  # which live agent (index modulo how many there are)
    seconds: float = 0.0  # pause / outage length
    #: wall-clock times, filled in as it happens
    began: float = 0.0
    ended: float = 0.0
    instance: str = ""


def schedule(knobs: Knobs) -> list[Action]:
    """The nemesis's actions, from the seed alone: every kind at least once, in a seeded order, then
    a seeded choice; Redis outages alternate shorter and longer than the lease TTL."""
    rng = random.Random(knobs.seed)
    span = knobs.requests * knobs.spacing
    kinds = list(knobs.kinds)
    rng.shuffle(kinds)
    actions: list[Action] = []
    at = rng.uniform(*knobs.gap) / 2
    redis_outages = 0
    while at < span or len(actions) < len(kinds):
        kind = kinds[len(actions)] if len(actions) < len(kinds) else rng.choice(knobs.kinds)
        seconds = 0.0
        if kind == "pause":
            seconds = rng.uniform(*knobs.pause)
        elif kind == "redis":  # shorter, then longer, than the lease TTL, by turns
            low, high = knobs.redis_down
            shorter = redis_outages % 2 == 0
            seconds = rng.uniform(low, min(high, knobs.lease_ttl * 0.6)) if shorter else \
                rng.uniform(knobs.lease_ttl * 1.2, max(high, knobs.lease_ttl * 1.5))
            redis_outages += 1
        elif kind == "kafka":
            seconds = rng.uniform(*knobs.kafka_down)
        actions.append(Action(at=round(at, 2), kind=kind, agent=rng.randrange(1 << 16), seconds=round(seconds, 2)))
        at += rng.uniform(*knobs.gap) + seconds
    return actions


def requests_for(knobs: Knobs) -> list[events_pb2.ScenarioRequest]:
    rng = random.Random(knobs.seed ^ 0x5EED)
    out = []
    for i in range(knobs.requests):
        hold = f"{rng.uniform(*knobs.hold):.1f}s"
        proxy = f"nemesis-{knobs.seed}-{i}-{uuid.uuid4().hex[:6]}"
        request = client.build_request("slow-link", {"proxy": proxy, "listen": f"127.0.0.1:{free_port()}",
                                                     "upstream": f"127.0.0.1:{free_port()}", "hold": hold})
        request.request_id = f"nemesis-{knobs.seed}-{i}-{uuid.uuid4().hex[:6]}"
        request.labels["proxy"] = proxy
        out.append(request)
    return out


@dataclass
class Cast:
    """The processes under the nemesis, and what happened to each."""

    env: dict[str, str]
    logs: Path
    agents: list[AgentProcess] = field(default_factory=list)
    every_agent: list[AgentProcess] = field(default_factory=list)
    worker: AgentProcess | None = None
    killed: dict[str, float] = field(default_factory=dict)  # instance -> when
    paused: list[tuple[str, float, float]] = field(default_factory=list)  # instance, from, until
    started: int = 0

    def start_agent(self) -> AgentProcess:
        name = f"a{self.started}"
        self.started += 1
        agent = AgentProcess({**self.env, "COORDINATOR_INSTANCE_ID": name}, self.logs / f"{name}.log")
        agent.start(timeout=120)
        self.agents.append(agent)
        self.every_agent.append(agent)
        return agent

    def start_worker(self) -> AgentProcess:
        self.worker = AgentProcess(self.env, self.logs / "worker.log", ("worker", "--loglevel", "info"), r"Ready")
        self.worker.start(timeout=180)
        return self.worker

    def stop(self) -> None:
        for agent in self.every_agent:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.signal(signal.SIGCONT)
                agent.stop()
        if self.worker is not None:
            self.worker.stop()


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} nemesis: {message}", file=sys.stderr, flush=True)


async def act(action: Action, cast: Cast, stack: Stack) -> None:
    action.began = time.time()
    if action.kind in ("kill", "pause"):
        agent = cast.agents[action.agent % len(cast.agents)]
        action.instance = agent.env["COORDINATOR_INSTANCE_ID"]
        if action.kind == "kill":
            say(f"SIGKILL agent {action.instance}, starting a replacement")
            agent.signal(signal.SIGKILL)
            await asyncio.to_thread(agent.wait, 30)
            cast.killed[action.instance] = time.time()
            cast.agents.remove(agent)
            await asyncio.to_thread(cast.start_agent)
        else:
            say(f"SIGSTOP agent {action.instance} for {action.seconds:.1f}s")
            agent.signal(signal.SIGSTOP)
            await asyncio.sleep(action.seconds)
            agent.signal(signal.SIGCONT)
            cast.paused.append((action.instance, action.began, time.time()))
    elif action.kind in ("redis", "kafka"):
        say(f"{action.kind} down for {action.seconds:.1f}s")
        await asyncio.to_thread(stack.stop, action.kind)
        await asyncio.sleep(action.seconds)
        await asyncio.to_thread(stack.start, action.kind)
    elif action.kind == "worker":
        say("SIGKILL the worker, starting a replacement")
        assert cast.worker is not None
        cast.worker.signal(signal.SIGKILL)
        await asyncio.to_thread(cast.worker.wait, 30)
        await asyncio.to_thread(cast.start_worker)
    action.ended = time.time()


async def submit_all(settings: Settings, requests: list[events_pb2.ScenarioRequest], spacing: float) -> None:
    """One request every ``spacing`` seconds; each retried until Kafka has it (the broker may be down)."""
    from agent.engine.publisher import Publisher

    publisher = Publisher(settings)
    await publisher.start()
    try:
        for request in requests:
            request.requested_at.GetCurrentTime()
            while True:
                try:  # a copy that went through before the error is a duplicate: it runs once
                    await asyncio.wait_for(publisher.request(request), 30)
                    break
                except (KafkaError, TimeoutError) as exc:
                    say(f"request {request.request_id} not sent yet ({type(exc).__name__}); retrying")
                    await asyncio.sleep(1)
            await asyncio.sleep(spacing)
    finally:
        await publisher.aclose()


async def nemesis(actions: list[Action], cast: Cast, stack: Stack, t0: float) -> None:
    for action in actions:
        await asyncio.sleep(max(0.0, t0 + action.at - time.time()))
        await act(action, cast, stack)


async def settle(settings: Settings, ids: set[str], timeout: float) -> None:
    """Until every request has a result (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {r.request_id for r in results(await read_all(settings.kafka_bootstrap_servers,
                                                               settings.topics.scenario_results))}
        if ids <= found:
            return
        await asyncio.sleep(2)


def _log_lines(agent: AgentProcess) -> list[dict[str, Any]]:
    out = []
    for line in agent.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _toxics(url: str, proxy: str) -> list[Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/proxies/{proxy}/toxics") as response:
        return await response.json() if response.status == 200 else []  # type: ignore[no-any-return]


async def _ready(agent: AgentProcess) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{agent.url}/api/v1/ready") as response:
            return response.status
    except aiohttp.ClientError:
        return 0


async def check(settings: Settings, knobs: Knobs, cast: Cast, requests: list[events_pb2.ScenarioRequest]
                ) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Read the history back and check it; (failures by check, figures)."""
    bootstrap = settings.kafka_bootstrap_servers
    result_records = await read_all(bootstrap, settings.topics.scenario_results)
    by_request: dict[str, list[events_pb2.ScenarioResult]] = {}
    headers: dict[str, str] = {}
    for record in result_records:
        for result in results([record]):
            by_request.setdefault(result.request_id, []).append(result)
            headers[result.execution_id] = header(record, CORRELATION_IDS_HEADER) or ""
    events = chaos(await read_all(bootstrap, settings.topics.chaos_events))
    failures: dict[str, list[str]] = {name: [] for name in (
        "one_result_per_request", "no_fault_left", "nothing_injected_after_result", "faults_listed_in_results",
        "no_takeover_of_a_live_agent", "agents_ready_at_the_end")}

    statuses: Counter[str] = Counter()
    for request in requests:
        found = by_request.get(request.request_id, [])
        if len(found) != 1:
            failures["one_result_per_request"].append(
                f"{request.request_id}: {len(found)} results {[(status(r), r.reason) for r in found]}")
        for result in found[:1]:
            statuses[status(result)] += 1
            mine = [e for e in events if e.execution_id == result.execution_id]
            told = {e.correlation_id for e in mine}
            listed = {i.correlation_id for i in result.injections}
            in_header = set(filter(None, headers.get(result.execution_id, "").split(",")))
            if not told <= listed or not told <= in_header:
                failures["faults_listed_in_results"].append(
                    f"{result.execution_id} ({status(result)}): chaos events tell of {sorted(told)}, the result "
                    f"lists {sorted(listed)}, its header {sorted(in_header)}")
            ended = result.ended_at.ToNanoseconds() / 1e9
            late = [e for e in mine if e.type == events_pb2.CHAOS_EVENT_TYPE_INJECTED
                    and e.injected_at.ToNanoseconds() / 1e9 > ended]
            if late:
                failures["nothing_injected_after_result"].append(
                    f"{result.execution_id}: {len(late)} injection(s) after its result")

    for request in requests:
        if left := await _toxics(settings.toxiproxy_url, request.labels["proxy"]):
            failures["no_fault_left"].append(f"proxy {request.labels['proxy']}: {left}")
    store = RedisStore(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
    try:
        if leases := await store.leases():
            failures["no_fault_left"].extend(f"lease {lease.correlation_id} of {lease.owner}" for lease in leases)
    finally:
        await store.aclose()

    takeovers = 0
    for agent in cast.every_agent:
        for line in _log_lines(agent):
            if line.get("event") not in TAKEOVER_LINES or line.get("halt"):
                continue
            takeovers += 1
            owner = str(line.get("owner", "")).split("/")[0]
            at = _when(line["timestamp"])
            killed = cast.killed.get(owner)
            paused = any(who == owner and start <= at and until >= at - knobs.lease_ttl - 2
                         for who, start, until in cast.paused)
            if not (killed is not None and killed <= at) and not paused:
                failures["no_takeover_of_a_live_agent"].append(
                    f"{agent.env['COORDINATOR_INSTANCE_ID']} at {line['timestamp']}: {line['event']} of {owner}")

    for agent in cast.agents:
        deadline = time.monotonic() + 60
        while (code := await _ready(agent)) != 200:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if code != 200:
            name = agent.env["COORDINATOR_INSTANCE_ID"]
            failures["agents_ready_at_the_end"].append(f"{name}: ready {code}")
    if cast.worker is None or cast.worker.proc is None or cast.worker.proc.poll() is not None:
        failures["agents_ready_at_the_end"].append("the worker is not running")

    figures = {"requests": len(requests), "results": sum(len(v) for v in by_request.values()),
               "statuses": dict(statuses), "takeovers": takeovers,
               "injections": sum(1 for e in events if e.type == events_pb2.CHAOS_EVENT_TYPE_INJECTED),
               "orphans_reverted": sum(1 for a in cast.every_agent for line in _log_lines(a)
                                       if line.get("event") == TAKEOVER_LINES[0])}
    return failures, figures


async def run(stack: Stack, knobs: Knobs, scratch: Path) -> dict[str, Any]:
    """One nemesis run on ``stack`` (fresh topics and key prefix); the report."""
    env = {**engine_env(stack.env(), "http://127.0.0.1:9/RPC2"),
           "COORDINATOR_LEASE_TTL": str(knobs.lease_ttl),
           "COORDINATOR_RECONCILE_INTERVAL": str(knobs.reconcile_interval)}
    settings = settings_from(env)
    await topics.apply(settings)
    actions = schedule(knobs)
    requests = requests_for(knobs)
    say(f"seed {knobs.seed}: {len(requests)} requests, {len(actions)} actions "
        f"({dict(Counter(a.kind for a in actions))})")
    cast = Cast(env, scratch)
    t0 = time.time()
    try:
        await asyncio.to_thread(cast.start_worker)
        for _ in range(knobs.agents):
            await asyncio.to_thread(cast.start_agent)
        t0 = time.time()
        await asyncio.gather(submit_all(settings, requests, knobs.spacing), nemesis(actions, cast, stack, t0))
        await settle(settings, {r.request_id for r in requests}, timeout=180 + 2 * knobs.lease_ttl)
        # a second result, or a late takeover, would come within a lease TTL and a few reconcile rounds
        await asyncio.sleep(knobs.lease_ttl + 3 * knobs.reconcile_interval)
        failures, figures = await check(settings, knobs, cast, requests)
    finally:
        await asyncio.to_thread(cast.stop)
    return {
        "seed": knobs.seed, "knobs": {k: v for k, v in asdict(knobs).items() if k != "seed"},
        "seconds": round(time.time() - t0, 1),
        "actions": [{"at": a.at, "kind": a.kind, "instance": a.instance, "seconds": a.seconds,
                     "took_s": round(a.ended - a.began, 1)} for a in actions],
        "actions_by_kind": dict(Counter(a.kind for a in actions)),
        **figures,
        "checks": {name: "ok" if not found else found for name, found in failures.items()},
        "passed": not any(failures.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--reconcile-interval", type=float, default=5.0)
    parser.add_argument("--gap", type=float, nargs=2, default=(8.0, 25.0))
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    from bench._stack import local_stack

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    knobs = Knobs(seed=seed, requests=args.requests, agents=args.agents, lease_ttl=args.lease_ttl,
                  reconcile_interval=args.reconcile_interval, gap=tuple(args.gap),  # type: ignore[arg-type]
                  kinds=tuple(k for k in args.kinds.split(",") if k))
    with local_stack() as (stack, scratch):
        report = asyncio.run(run(stack, knobs, scratch))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
