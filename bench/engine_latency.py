"""Engine latency: request event -> first chaos event, and engine overhead under 50 concurrent runs.

Brings up a devstack in a temporary directory (or uses $COORDINATOR_DEVSTACK_DIR when it runs),
starts `coordinator serve` as a subprocess, and sends inline scenarios holding one Toxiproxy
latency toxic for --hold seconds. Prints JSON.

- latency_ms: from just before the request is produced to the receipt of its INJECTED chaos
  event by a separate consumer (end to end, through the broker both ways)
- overhead_ms: a run's duration (result ended_at - started_at) minus the scenario's own hold time

    .venv/bin/python bench/engine_latency.py [--sequential 30] [--concurrent 50] [--hold 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from agent import codec, topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.devstack.procs import free_port  # noqa: E402
from agent.kafkaio import topic_partitions  # noqa: E402
from bench._stack import local_stack  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import engine_env, settings_from  # noqa: E402

SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: bench-latency}}
spec:
  targets:
    link: {{driver: toxiproxy, selector: {{proxy: {proxy}, listen: "127.0.0.1:{listen}", upstream: "127.0.0.1:{up}"}}}}
  steps:
    - {{name: slow, fault: latency, target: link, duration: {hold}s, parameters: {{latency: 10ms}}}}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 0.5), "p90": pct(values, 0.9), "p99": pct(values, 0.99),
            "max": round(max(values), 2), "mean": round(statistics.mean(values), 2)}


class Bench:
    def __init__(self, settings, hold: float) -> None:  # noqa: ANN001
        self.settings = settings
        self.hold = hold
        self.sent: dict[str, float] = {}
        self.first_fault: dict[str, float] = {}
        self.results: dict[str, events_pb2.ScenarioResult] = {}
        self.executions: dict[str, str] = {}  # execution id -> request id

    async def listen(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = []
            for topic in (self.settings.topics.chaos_events, self.settings.topics.scenario_results):
                tps += await topic_partitions(consumer, topic)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self.listening.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        kind = codec.headers_to_dict(record.headers).get("ce_type")
                        if kind == "coordinator.v1.ScenarioResult":
                            result = codec.decode_event(record.value, record.headers, events_pb2.ScenarioResult)
                            self.results[result.request_id] = result
                        elif kind == "coordinator.v1.ExecutionProgress":
                            p = codec.decode_event(record.value, record.headers, events_pb2.ExecutionProgress)
                            self.executions[p.execution_id] = p.request_id
                        elif (kind or "").startswith("coordinator.v1.ChaosEvent"):
                            event = codec.decode_event(record.value, record.headers, events_pb2.ChaosEvent)
                            rid = self.executions.get(event.execution_id)
                            if event.type == events_pb2.CHAOS_EVENT_TYPE_INJECTED:
                                self.first_fault.setdefault(event.execution_id, now)
                                if rid:
                                    self.first_fault.setdefault(rid, now)
        finally:
            await consumer.stop()

    async def send(self, producer: AIOKafkaProducer, count: int) -> list[str]:
        ids = []
        sends = []
        for _ in range(count):
            request = events_pb2.ScenarioRequest(
                request_id=str(uuid.uuid4()), requester="bench",
                scenario_yaml=SCENARIO.format(proxy="bench", listen=self.listen_port, up=self.up_port, hold=self.hold))
            event = codec.encode_event(request, key=request.request_id, source="/bench")
            self.sent[request.request_id] = time.perf_counter()
            sends.append(await producer.send(self.settings.topics.scenario_requests, event.value, key=event.key,
                                             headers=event.headers))
            ids.append(request.request_id)
        await asyncio.gather(*sends)
        return ids

    async def wait_results(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(i in self.results for i in ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {sum(i in self.results for i in ids)} of {len(ids)} results")
            await asyncio.sleep(0.05)

    def latencies(self, ids: list[str]) -> list[float]:
        out = []
        for rid in ids:
            result = self.results[rid]
            fault_at = self.first_fault.get(result.execution_id) or self.first_fault.get(rid)
            if fault_at is not None:
                out.append((fault_at - self.sent[rid]) * 1000)
        return out

    def overheads(self, ids: list[str]) -> list[float]:
        return [((self.results[r].ended_at.ToNanoseconds() - self.results[r].started_at.ToNanoseconds()) / 1e6)
                - self.hold * 1000 for r in ids]


async def run(opts: argparse.Namespace, env: dict[str, str]) -> dict:
    settings = settings_from(env)
    await topics.apply(settings)
    bench = Bench(settings, opts.hold)
    bench.listen_port, bench.up_port = free_port(), free_port()
    bench.listening = asyncio.Event()
    listener = asyncio.create_task(bench.listen())
    await asyncio.wait([listener, asyncio.create_task(bench.listening.wait())], return_when=asyncio.FIRST_COMPLETED)
    if listener.done():
        listener.result()  # raises what killed it
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    try:
        warm = await bench.send(producer, 3)
        await bench.wait_results(warm, 60)
        sequential = []
        for _ in range(opts.sequential):
            ids = await bench.send(producer, 1)
            await bench.wait_results(ids, 60)
            sequential += ids
        statuses = {}
        t0 = time.perf_counter()
        concurrent = await bench.send(producer, opts.concurrent)
        await bench.wait_results(concurrent, 300)
        wall = time.perf_counter() - t0
        for rid in sequential + concurrent:
            name = events_pb2.ExecutionStatus.Name(bench.results[rid].status)
            statuses[name] = statuses.get(name, 0) + 1
    finally:
        await producer.stop()
        listener.cancel()
    return {
        "benchmark": "engine_latency", "hold_s": opts.hold, "statuses": statuses,
        "sequential": {"request_to_first_chaos_event_ms": summary(bench.latencies(sequential)),
                       "overhead_ms": summary(bench.overheads(sequential))},
        "concurrent": {"runs": opts.concurrent, "wall_s": round(wall, 2),
                       "request_to_first_chaos_event_ms": summary(bench.latencies(concurrent)),
                       "overhead_ms": summary(bench.overheads(concurrent))},
        "goal": "p50 request -> first chaos event under 100 ms",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--hold", type=float, default=1.0)
    opts = parser.parse_args()
    with local_stack() as (stack, scratch):
        sfx = uuid.uuid4().hex[:8]
        env = {**engine_env(stack.env(), supervisor_url="http://127.0.0.1:1/RPC2", suffix=f"bench-{sfx}"),
               "COORDINATOR_MAX_CONCURRENT_EXECUTIONS": "100", "COORDINATOR_LOG_LEVEL": "warning",
               "COORDINATOR_LEASE_TTL": "15", "COORDINATOR_RECONCILE_INTERVAL": "5",
               "COORDINATOR_CONTENT_TYPE": "application/protobuf"}
        asyncio.run(topics.apply(settings_from(env)))
        agent = AgentProcess(env, Path(os.environ.get("BENCH_AGENT_LOG", scratch / "agent.log"))).start()
        try:
            report = asyncio.run(run(opts, env))
        finally:
            agent.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
