"""Engine latency: request event -> first chaos event, and engine overhead, one at a time and in bursts
of simultaneous requests (50 and 200).

Brings up a devstack in a temporary directory (or uses $COORDINATOR_DEVSTACK_DIR when it runs),
starts `coordinator serve` as a subprocess, and sends inline scenarios holding one Toxiproxy
latency toxic for --hold seconds. Prints JSON.

- latency_ms: from just before the request is produced to the receipt of its INJECTED chaos
  event by a separate consumer (end to end, through the broker both ways)
- overhead_ms: a run's duration (result ended_at - started_at) minus the scenario's own hold time

- the same against bench/_raw_engine.py, the ceiling: per request one Redis claim, one Toxiproxy
  call and one produced event, without the engine; ``engine_to_raw_p50`` per burst

    .venv/bin/python bench/engine_latency.py [--sequential 30] [--bursts 50,200] [--hold 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from agent import codec, topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.children import terminate  # noqa: E402
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


#: the listeners' fetch wait at the broker: short, so that the figures are the agent's and not the time a
#: listener's fetch in flight holds back a partition it has just read (aiokafka: one fetch per broker)
LISTEN_FETCH_WAIT_MS = 20


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
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                    fetch_max_wait_ms=LISTEN_FETCH_WAIT_MS)
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
        statuses: dict[str, int] = {}
        bursts = {}
        every = list(sequential)
        for size in opts.bursts:
            await asyncio.sleep(opts.hold + 1)  # the previous burst's faults are reverted
            t0 = time.perf_counter()
            burst = await bench.send(producer, size)
            await bench.wait_results(burst, 300)
            every += burst
            bursts[size] = {"wall_s": round(time.perf_counter() - t0, 2),
                            "request_to_first_chaos_event_ms": summary(bench.latencies(burst)),
                            "overhead_ms": summary(bench.overheads(burst))}
        for rid in every:
            name = events_pb2.ExecutionStatus.Name(bench.results[rid].status)
            statuses[name] = statuses.get(name, 0) + 1
    finally:
        await producer.stop()
        listener.cancel()
    raw = await raw_bursts(settings, env, opts.bursts, opts.hold)
    out = {
        "benchmark": "engine_latency", "hold_s": opts.hold, "statuses": statuses,
        "sequential": {"request_to_first_chaos_event_ms": summary(bench.latencies(sequential)),
                       "overhead_ms": summary(bench.overheads(sequential))},
        "raw_sequential_request_to_event_ms": raw.pop("sequential"),
    }
    for size, figures in bursts.items():
        ceiling = raw[size]
        out[f"burst_{size}"] = {
            **figures, "raw_request_to_event_ms": ceiling,
            "engine_to_raw_p50": round(figures["request_to_first_chaos_event_ms"]["p50"] / ceiling["p50"], 2),
        }
    out["goal"] = "p50 request -> first chaos event under 100 ms for 50 simultaneous requests"
    out["raw"] = ("bench/_raw_engine.py: consume -> decode -> one Redis SET NX -> one Toxiproxy toxic -> "
                  "produce, per request, each fetch concurrently (the work before a first chaos event)")
    return out


async def raw_bursts(settings, env: dict[str, str], sizes: list[int], hold: float) -> dict:  # noqa: ANN001
    """The same requests through bench/_raw_engine.py: request -> its event, sequentially (10)
    and in bursts."""
    in_topic, out_topic = f"{settings.topics.scenario_requests}.raw", f"{settings.topics.chaos_events}.raw"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(in_topic, 6, 1), NewTopic(out_topic, 6, 1)])
    finally:
        await admin.close()
    log = open(os.environ.get("BENCH_RAW_LOG", os.devnull), "ab")  # noqa: ASYNC230, SIM115
    raw = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, str(Path(__file__).with_name("_raw_engine.py")), settings.kafka_bootstrap_servers,
         env["COORDINATOR_REDIS_URL"], env["COORDINATOR_TOXIPROXY_URL"], in_topic, out_topic,
         f"{env['COORDINATOR_REDIS_KEY_PREFIX']}-raw", "bench-raw", f"127.0.0.1:{free_port()}",
         f"127.0.0.1:{free_port()}"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                fetch_max_wait_ms=LISTEN_FETCH_WAIT_MS)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        tps = await topic_partitions(consumer, out_topic)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)

        async def listen() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        got.setdefault(record.key.decode(), now)

        listener = asyncio.create_task(listen())

        async def burst(size: int) -> list[float]:
            ids = []
            for _ in range(size):
                yaml = SCENARIO.format(proxy="x", listen=1, up=2, hold=hold)
                request = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), requester="b", scenario_yaml=yaml)
                event = codec.encode_event(request, key=request.request_id, source="/bench")
                sent[request.request_id] = time.perf_counter()
                await producer.send(in_topic, event.value, key=event.key, headers=event.headers)
                ids.append(request.request_id)
            await producer.flush()
            deadline = time.monotonic() + 120
            while not all(i in got for i in ids):
                if time.monotonic() > deadline or raw.poll() is not None:
                    raise SystemExit(f"the raw pipeline answered {sum(i in got for i in ids)} of {len(ids)}")
                await asyncio.sleep(0.02)
            return [(got[i] - sent[i]) * 1000 for i in ids]

        await burst(3)  # warm: the raw consumer joins its group, connections are made
        out: dict = {"sequential": summary([v for _ in range(10) for v in await burst(1)])}
        for size in sizes:
            out[size] = summary(await burst(size))
        listener.cancel()
        return out
    finally:
        terminate(raw)
        log.close()
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--bursts", type=lambda v: [int(x) for x in v.split(",")], default=[50, 200],
                        help="sizes of the bursts of simultaneous requests (comma-separated)")
    parser.add_argument("--hold", type=float, default=1.0)
    opts = parser.parse_args()
    with local_stack() as (stack, scratch):
        sfx = uuid.uuid4().hex[:8]
        env = {**engine_env(stack.env(), supervisor_url="http://127.0.0.1:1/RPC2", suffix=f"bench-{sfx}"),
               "COORDINATOR_MAX_CONCURRENT_EXECUTIONS": str(max(opts.bursts) + 50), "COORDINATOR_LOG_LEVEL": "warning",
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
