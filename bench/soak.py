"""Memory over long runs: the stream worker over millions of audit events and thousands of
injections, the agent over thousands of executions, each one's RSS sampled every --sample seconds.

- worker: `coordinator worker`; audit events in chunks of --chunk, each produced once the worker's
  intake has caught up with the one before (so it works through them, however fast the machine);
  with each chunk, --injections / chunks injections whose watches wait 5 s for an event of their
  own, which half of them get (PASSED) and half do not (FAILED at the deadline): watches come and go
  all run long.
- agent: `coordinator serve`; --executions scenario runs (a Toxiproxy latency toxic held --hold s), in
  waves of --wave simultaneous requests, each wave once the one before has all its results.

Growth: the median RSS of the last 10% of samples against the median of the samples just after
warm-up (20-30% of the run), as a fraction; the goal is under 0.10. A plot of both curves is
written to bench/results/soak.png (matplotlib, a dev dependency).

    .venv/bin/python bench/soak.py [--audit-events 5000000] [--injections 10000] [--executions 5000]
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from agent import topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.devstack.procs import free_port  # noqa: E402
from agent.kafkaio import topic_partitions  # noqa: E402
from agent.worker.app import intake_group  # noqa: E402
from bench._stack import local_stack  # noqa: E402
from bench.engine_latency import Bench  # noqa: E402
from bench.worker_throughput import SERVICES, all_done, audit_event, injection, produce_events  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import engine_env, settings_from  # noqa: E402

S = events_pb2
RESULTS = Path(__file__).with_name("results")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Sampler:
    """RSS of one process every ``every`` seconds, with how far the run had got."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.t0 = time.monotonic()
        self.samples: list[dict[str, float]] = []
        self.progress = 0

    async def run(self) -> None:
        while True:
            self.samples.append({"s": round(time.monotonic() - self.t0, 1), "rss_mb": round(rss_mb(self.pid), 1),
                                 "done": self.progress})
            await asyncio.sleep(self.every)

    def growth(self) -> dict[str, float]:
        values = [s["rss_mb"] for s in self.samples]
        n = len(values)
        after_warm = values[int(n * 0.2):max(int(n * 0.3), int(n * 0.2) + 1)]
        tail = values[-max(1, n // 10):]
        base, last = statistics.median(after_warm), statistics.median(tail)
        return {"samples": n, "after_warm_up_mb": base, "end_mb": last, "peak_mb": max(values),
                "growth": round(last / base - 1, 3)}


async def inject(producer: AIOKafkaProducer, settings, first: int, count: int, within: float) -> None:  # noqa: ANN001
    for j in range(first, first + count):
        _, _, out = injection(j, within)
        await producer.send(settings.topics.chaos_events, out.value, key=out.key, headers=out.headers)
    await producer.flush()


async def answers(producer: AIOKafkaProducer, settings, first: int, count: int) -> None:  # noqa: ANN001
    """The awaited event of every other injection of a chunk."""
    for j in range(first, first + count, 2):
        value, headers = audit_event(j, event_type=f"ready-{j}", service=f"svc-{j % SERVICES}")
        await producer.send(settings.topics.audit_events, value, key=f"svc-{j % SERVICES}".encode(), headers=headers)
    await producer.flush()


async def verdict_count(settings) -> int:  # noqa: ANN001
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await topic_partitions(consumer, settings.topics.verdicts))
        return sum(ends.values())
    finally:
        await consumer.stop()


async def soak_worker(opts, env: dict[str, str], logs: Path) -> dict:  # noqa: ANN001
    settings = settings_from(env)
    await topics.apply(settings)
    worker = AgentProcess(env, logs / "worker.log", ("worker",), r"").start()
    chunks = max(1, opts.audit_events // opts.chunk)
    per_chunk = max(1, opts.injections // chunks)
    sampler = Sampler(worker.proc.pid, opts.sample)
    sampling = asyncio.create_task(sampler.run())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    t0 = time.monotonic()
    try:
        intake = [(intake_group(settings), [settings.topics.audit_events])]
        for chunk in range(chunks):
            await inject(producer, settings, chunk * per_chunk, per_chunk, within=5)
            await produce_events(settings, opts.chunk)
            await answers(producer, settings, chunk * per_chunk, per_chunk)
            while not await all_done(settings, intake):
                if worker.proc.poll() is not None:
                    raise SystemExit(f"the worker exited ({worker.proc.returncode})")
                await asyncio.sleep(0.5)
            sampler.progress = (chunk + 1) * opts.chunk
        wall = time.monotonic() - t0
        await asyncio.sleep(opts.sample + 6)  # the last watches' deadlines, and one more sample
    finally:
        sampling.cancel()
        await producer.stop()
        worker.stop()
    return {"audit_events": chunks * opts.chunk, "injections": chunks * per_chunk, "wall_s": round(wall, 1),
            "audit_events_per_s": round(chunks * opts.chunk / wall), "verdicts": await verdict_count(settings),
            "rss": sampler.growth(), "curve": sampler.samples}


async def soak_agent(opts, env: dict[str, str], logs: Path) -> dict:  # noqa: ANN001
    settings = settings_from(env)
    await topics.apply(settings)
    agent = AgentProcess(env, logs / "agent.log").start()
    bench = Bench(settings, hold=opts.hold)
    bench.listen_port, bench.up_port = free_port(), free_port()
    bench.listening = asyncio.Event()
    listener = asyncio.create_task(bench.listen())
    await bench.listening.wait()
    sampler = Sampler(agent.proc.pid, opts.sample)
    sampling = asyncio.create_task(sampler.run())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    statuses: dict[str, int] = {}
    reasons: set[str] = set()
    t0 = time.monotonic()
    try:
        done = 0
        while done < opts.executions:
            ids = await bench.send(producer, min(opts.wave, opts.executions - done))
            await bench.wait_results(ids, 300)
            for rid in ids:
                result = bench.results.pop(rid)
                name = S.ExecutionStatus.Name(result.status)
                statuses[name] = statuses.get(name, 0) + 1
                if result.status != S.EXECUTION_STATUS_PASSED and len(reasons) < 5:
                    reasons.add(result.reason)
            done += len(ids)
            sampler.progress = done
            bench.sent.clear()
            bench.first_fault.clear()
            bench.executions.clear()
        wall = time.monotonic() - t0
        await asyncio.sleep(opts.sample + 1)
    finally:
        sampling.cancel()
        listener.cancel()
        await producer.stop()
        agent.stop()
    return {"executions": done, "statuses": statuses, "not_passed": sorted(reasons), "wall_s": round(wall, 1),
            "executions_per_s": round(done / wall, 1), "rss": sampler.growth(), "curve": sampler.samples}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("worker", "agent") if p in report]
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.2), squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        curve = report[part]["curve"]
        ax.plot([s["s"] for s in curve], [s["rss_mb"] for s in curve], marker=".", linewidth=1)
        done = report[part].get("audit_events") or report[part].get("executions")
        unit = "audit events" if part == "worker" else "executions"
        ax.set_title(f"{part}: {done:,} {unit}, growth {report[part]['rss']['growth']:+.1%}", fontsize=9)
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--audit-events", type=int, default=5_000_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--injections", type=int, default=10_000)
    parser.add_argument("--executions", type=int, default=5_000)
    parser.add_argument("--wave", type=int, default=50)
    # long enough that the agent's run spans many samples (5,000 executions at 0.1 s took 26 s)
    parser.add_argument("--hold", type=float, default=2.0, help="how long each execution holds its fault")
    parser.add_argument("--sample", type=float, default=10.0)
    parser.add_argument("--only", choices=["worker", "agent"],
                        help="run one part; the other's last figures and curve are kept from the JSON beside the plot")
    parser.add_argument("--plot", type=Path, default=RESULTS / "soak.png")
    opts = parser.parse_args()
    report: dict = {"benchmark": "soak", "sample_s": opts.sample}
    earlier = opts.plot.with_suffix(".json")
    if opts.only and earlier.exists():
        kept = "agent" if opts.only == "worker" else "worker"
        report.update({k: v for k, v in json.loads(earlier.read_text()).items() if k == kept})
    with local_stack() as (stack, scratch):
        if opts.only != "agent":
            env = engine_env(stack.env(), "http://127.0.0.1:1/RPC2", suffix=f"sw-{uuid.uuid4().hex[:6]}")
            env.update({"COORDINATOR_WORKER_APP_ID": f"{env['COORDINATOR_REDIS_KEY_PREFIX']}-worker",
                        "COORDINATOR_CONTENT_TYPE": "application/protobuf", "COORDINATOR_WORKER_GRACE": "1",
                        "COORDINATOR_LOG_LEVEL": "warning"})
            report["worker"] = asyncio.run(soak_worker(opts, env, scratch))
        if opts.only != "worker":
            env = {**engine_env(stack.env(), "http://127.0.0.1:1/RPC2", suffix=f"sa-{uuid.uuid4().hex[:6]}"),
                   "COORDINATOR_MAX_CONCURRENT_EXECUTIONS": str(opts.wave * 2), "COORDINATOR_LOG_LEVEL": "warning",
                   "COORDINATOR_LEASE_TTL": "15", "COORDINATOR_RECONCILE_INTERVAL": "5",
                   "COORDINATOR_CONTENT_TYPE": "application/protobuf"}
            report["agent"] = asyncio.run(soak_agent(opts, env, scratch))
    report["goal"] = "RSS growth under 0.10 after warm-up"
    plot(report, opts.plot)
    report["plot"] = str(opts.plot)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "curve"} if isinstance(v, dict) else v)
                      for k, v in report.items()}, indent=2))
    (opts.plot.with_suffix(".json")).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
