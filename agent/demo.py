"""The main job (``./dev demo``): bring up the local stack, the simulated trading ecosystem, the agent
and the stream worker; run the flagship scenario (restart the risk monitor during trading) while
showing faults, recovery and verdicts as they happen; print the verdict with the time to recover;
tear everything down.

Exit code: 0 when the scenario passed, 1 when it failed, 3 when the demo itself could not run.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from agent import client, follow, topics, vocabulary
from agent._proto.coordinator.v1 import events_pb2
from agent.children import Child, ChildFailed
from agent.devstack import Stack
from agent.follow import Follower, Update
from agent.settings import Settings
from agent.store import answer

S = events_pb2
FLAGSHIP = "restart-risk-monitor-during-trading"
#: the flagship's parameters for the demo: short windows, so the whole demo takes about a minute
DEMO_PARAMS = {"recoveryDeadline": "15s", "observation": "5s", "reportDeadline": "20s", "lossWindow": "20s"}
#: audit events worth showing live (the rest is summed up at the end)
SHOWN = {"service_stopping", "service_started", "service_ready", "order_lost", "risk_alert", "duplicate_fill",
         *vocabulary.PLATFORM_EVENT_TYPES}
#: shown once, then counted: a loss under a slow restart comes by the hundred
FOLDED = {"order_lost", "risk_alert", "duplicate_fill"}
#: the trading engine's audit events about orders, counted for the closing line
ORDER_FATES = ("order_accepted", "order_filled", "order_lost")


def run_demo(out: TextIO, *, keep: bool = False, stack_dir: Path | None = None,
             params: dict[str, str] | None = None) -> int:
    from sim.launch import Sim, SimOptions

    directory = (stack_dir or Path(tempfile.mkdtemp(prefix="coordinator-demo-"))).resolve()
    say = _Printer(out)
    stack, sim = Stack(directory), Sim(directory / "sim")
    children: list[Child] = []
    try:
        _machine(say)
        say(f"local stack in {directory}")
        timings = stack.up()
        for part in stack.status():
            say(f"  {part.name:<10} {part.address:<28} ready in {timings.get(part.name, 0):.1f}s")
        env = stack.env()
        settings = Settings.model_validate(_settings_from_env(env))
        asyncio.run(topics.apply(settings))

        t = time.monotonic()
        info = sim.up(SimOptions(kafka=settings.kafka_bootstrap_servers,
                                 redis_url=settings.redis_url.get_secret_value(),
                                 toxiproxy_url=settings.toxiproxy_url, rate=20))
        say(f"trading sim under supervisord, ready in {time.monotonic() - t:.1f}s "
            f"(orders at 20/s through the engine, risk checks, exchange via Toxiproxy):")
        for name, ports in info.ports.items():
            say(f"  {name:<15} grpc 127.0.0.1:{ports['grpc']:<6} http 127.0.0.1:{ports['http']}")

        t = time.monotonic()
        agent_env = {**env, **info.agent_env()}
        logs = directory / "logs"
        logs.mkdir(exist_ok=True)
        for command, ready in ((("worker", "--loglevel", "info"), r"Ready"),
                               (("serve", "--http-port", "0", "--grpc-port", "0"), r"agent serving")):
            child = Child(command, agent_env, logs / f"{command[0]}.log", ready)
            children.append(child)
            child.start(timeout=120)
        say(f"agent and stream worker running in {time.monotonic() - t:.1f}s (logs in {logs})")
        before = _loadgen_status(info.ports["load-generator"]["http"])
        status = asyncio.run(_run_flagship(settings, say, params or DEMO_PARAMS))
        say.summary(before, _loadgen_status(info.ports["load-generator"]["http"]))
        return status
    except (ChildFailed, TimeoutError, RuntimeError, OSError, LookupError) as exc:
        say(f"the demo could not run: {exc}")
        return 3
    finally:
        for child in reversed(children):
            child.stop(grace=30)
        sim.down()
        if keep:
            say(f"stack left running; stop it with: coordinator devstack down --dir {directory}")
        else:
            stack.down()
            say("everything stopped; nothing left running")


def attach_demo(out: TextIO, settings: Settings, params: dict[str, str] | None = None,
                scenario: str = FLAGSHIP) -> int:
    """The flagship (or ``scenario``, which takes the same parameters: the container flavour in
    docker compose) with the live display, against a system already running (docker compose: the
    agent, the worker and the sim are services there)."""
    say = _Printer(out)
    _machine(say)
    say(f"attached: Kafka {settings.kafka_bootstrap_servers}")
    try:
        before = asyncio.run(_registered_loadgen_status(settings))
        status = asyncio.run(_run_flagship(settings, say, params or DEMO_PARAMS, scenario))
    except (LookupError, OSError) as exc:
        say(f"the demo could not run: {exc}")
        return 3
    say.summary(before, asyncio.run(_registered_loadgen_status(settings)))
    return status


async def _registered_loadgen_status(settings: Settings) -> dict[str, Any] | None:
    import redis.asyncio as aioredis

    from agent.constants import REGISTRY_SERVICE_KEY

    registry = aioredis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
    try:
        entry = await answer(registry.hgetall(REGISTRY_SERVICE_KEY.format(name="load-generator")))
    finally:
        await registry.aclose()
    if not entry.get("http_port"):
        return None
    return await asyncio.to_thread(_loadgen_status, int(entry["http_port"]), entry.get("host", "127.0.0.1"))


async def _run_flagship(settings: Settings, say: _Printer, params: dict[str, str], scenario: str = FLAGSHIP) -> int:
    request = client.build_request(scenario, params, labels={"source": "demo"})
    watched = [settings.topics.scenario_results, settings.topics.chaos_events, settings.topics.verdicts,
               settings.topics.audit_events]
    async with Follower(settings, watched, purpose="demo") as follower:
        await follower.from_end()
        say(f"running '{scenario}' ({', '.join(f'{k}={v}' for k, v in params.items())})")
        say.start()
        await client.submit(settings, request)
        lines = _Commentary(request.request_id, say)
        deadline = time.monotonic() + 170
        while time.monotonic() < deadline:
            for update in await follower.poll(timeout_ms=200):
                result = lines.update(update)
                if result is not None:
                    return say.result(result)
        say("no result within 170s")
        return 1


class _Commentary:
    """Turns the topics' updates into lines, for one request."""

    def __init__(self, request_id: str, say: _Printer) -> None:
        self.request_id = request_id
        self.execution_id = ""
        self.injected_at = 0.0
        self.say = say
        self.early: list[events_pb2.AuditEvent] = []  # before the injection's event (a restart is slow to return)
        #: repeats of a folded line not shown yet: (service, type) -> [count, first, last] (seconds after the fault)
        self.folded: dict[tuple[str, str], list[float]] = {}
        self.shown_once: set[tuple[str, str]] = set()
        #: the trading engine's order events during the run, by type (the closing line shows them)
        self.fates = say.fates

    def update(self, update: Update) -> events_pb2.ScenarioResult | None:
        """Show what ``update`` says of this request; its result once it comes."""
        if update.kind == follow.PROGRESS:
            self._progress(update.message)
        elif update.kind == follow.RESULT and update.message.request_id == self.request_id:
            self.flush()
            return update.message  # type: ignore[no-any-return]
        elif update.kind == follow.CHAOS:
            self._chaos(update.message)
        elif update.kind == follow.VERDICT:
            self._verdict(update.message)
        elif update.kind == follow.AUDIT:
            self._audit(update.message)
        return None

    def _progress(self, progress: events_pb2.ExecutionProgress) -> None:
        if progress.request_id == self.request_id:
            self.execution_id = progress.execution_id
            if progress.phase not in ("expectations",):  # verdicts are shown as they come
                self.say(f"[{progress.phase}] {progress.message}")

    def flush(self) -> None:
        """The repeats held back, one line each."""
        for (service, event_type), (count, first, last) in self.folded.items():
            self.say(f"AUDIT    {service}: {event_type} x{int(count)} more ({first:+.1f}s .. {last:+.1f}s after "
                     f"the fault)")
        self.folded.clear()

    def _chaos(self, event: events_pb2.ChaosEvent) -> None:
        if event.execution_id != self.execution_id:
            return
        if event.type == S.CHAOS_EVENT_TYPE_INJECTED:
            self.injected_at = event.injected_at.ToNanoseconds() / 1e9
            self.say(f"FAULT    {event.fault} {event.target} (correlation id {event.correlation_id})")
            for early in self.early:
                self._show(early)
            self.early.clear()
        else:
            kind = vocabulary.chaos_type_name(event.type)
            self.say(f"FAULT    {event.fault} {event.target}: {kind.lower()}")

    def _verdict(self, verdict: events_pb2.ExpectationVerdict) -> None:
        if verdict.execution_id != self.execution_id:
            return
        if verdict.expectation_name == vocabulary.REACTION:  # not an expectation: did the target react at all
            self.say(f"REACTED  {verdict.reason}" if verdict.status == S.VERDICT_STATUS_PASSED
                     else f"SILENT   {verdict.reason}")
            return
        self.flush()
        status = vocabulary.verdict_name(verdict.status)
        late = " (late evidence)" if verdict.HasField("late_evidence_at") else ""
        self.say(f"VERDICT  {verdict.expectation_name}: {status}{late} - {verdict.reason}")

    def _audit(self, event: events_pb2.AuditEvent) -> None:
        if not self.execution_id:
            return
        if event.event_type in self.fates:
            self.fates[event.event_type] += 1
        if event.event_type not in SHOWN:
            return
        if not self.injected_at:
            self.early.append(event)
        else:
            self._show(event)

    def _show(self, event: events_pb2.AuditEvent) -> None:
        at = event.timestamp.ToNanoseconds() / 1e9
        if at < self.injected_at:
            return
        key = (event.service_name, event.event_type)
        if event.event_type in FOLDED and key in self.shown_once:
            held = self.folded.setdefault(key, [0, at - self.injected_at, at - self.injected_at])
            held[0] += 1
            held[1], held[2] = min(held[1], at - self.injected_at), max(held[2], at - self.injected_at)
            return
        self.shown_once.add(key)
        seen_by = f", seen by the agent on {event.metadata['platform']}" if event.metadata.get("platform") else ""
        self.say(f"AUDIT    {event.service_name}: {event.event_type} ({at - self.injected_at:+.3f}s after the fault"
                 f"{seen_by})")


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0: float | None = None
        #: the trading engine's order events seen during the run, by type
        self.fates: dict[str, int] = dict.fromkeys(ORDER_FATES, 0)

    def __call__(self, line: str) -> None:
        stamp = f"{time.monotonic() - self.t0:6.1f}s  " if self.t0 is not None else ""
        print(stamp + line, file=self.out, flush=True)

    def start(self) -> None:
        self.t0 = time.monotonic()

    def result(self, result: events_pb2.ScenarioResult) -> int:
        status = client.status_name(result.status)
        self.t0 = None
        self("")
        self(f"VERDICT: {status}" + (f" - {result.reason}" if result.status != S.EXECUTION_STATUS_PASSED else ""))
        for verdict in result.verdicts:
            mark = vocabulary.verdict_name(verdict.status)
            self(f"  {mark:<12} {verdict.expectation_name}: {verdict.reason}")
        recovered = [v.time_to_recover.ToNanoseconds() / 1e9 for v in result.verdicts if v.HasField("time_to_recover")
                     and v.status == S.VERDICT_STATUS_PASSED and v.expectation_name.endswith("time-to-recover")]
        if recovered:
            self(f"time to recover: {recovered[0]:.3f}s (restart of the risk monitor -> its service_ready)")
        return 0 if result.status == S.EXECUTION_STATUS_PASSED else 1

    def summary(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """Orders during the run: as the audit trail tells it (what the verdicts count), and the load
        generator's own count (its counters after minus before; it gives up on an order later)."""
        fates = self.fates
        self(f"orders during the run, from the audit trail: {fates['order_accepted']} accepted, "
             f"{fates['order_filled']} filled, {fates['order_lost']} reported lost by the trading engine "
             f"(what no-order-lost counts)")
        if before and after:
            def delta(name: str) -> int:
                return int(after.get("counters", {}).get(name, 0) - before.get("counters", {}).get(name, 0))

            self(f"the load generator's own count: {delta('orders_sent')} sent, {delta('orders_filled')} fills "
                 f"received (some for orders sent before), {delta('orders_lost')} given up on after its own timeout")


#: above this many runnable processes per core (1-minute load), the machine is called busy
BUSY_LOAD_PER_CORE = 1.5


def _machine(say: _Printer) -> None:
    """Say how loaded the machine is first: on a busy one a restart can take 10-25 s, and a verdict
    that fails may be the machine's doing rather than the system's."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CORE * cores:
        say(f"this machine is busy (load {load:.1f} on {cores} cores): restarts take longer here; the demo allows "
            f"{DEMO_PARAMS['recoveryDeadline']} for the risk monitor to be ready again, and a FAILED verdict may be "
            f"the machine's doing, not the system's")
    else:
        say(f"machine: load {load:.1f} on {cores} cores")


def _loadgen_status(port: int, host: str = "127.0.0.1") -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/v1/status", timeout=2) as response:  # noqa: S310
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _settings_from_env(env: dict[str, str]) -> dict[str, object]:
    return {
        "kafka_bootstrap_servers": env["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"],
        "redis_url": env["COORDINATOR_REDIS_URL"],
        "toxiproxy_url": env["COORDINATOR_TOXIPROXY_URL"],
        "topic_replication_factor": int(env["COORDINATOR_TOPIC_REPLICATION_FACTOR"]),
    }
