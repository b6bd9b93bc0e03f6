"""Kubernetes: request -> pod deleted through the agent, beside one raw DELETE call, alone and 50 at
once; and choosing 1,000 pods by a selector (time and API calls), then deleting them all.

Brings up Kafka, Redis and the kubernetes part of a stack in a temporary directory (the control
plane built first when the cache lacks it), starts `coordinator serve`, and prints JSON.

- request_to_pod_deleted_ms: from just before a request (an inline scenario killing one pod, grace
  0) is produced to the pod's DELETED event on a watch of the namespace
- raw_delete_to_pod_deleted_ms: from just before one DELETE call (lightkube) to the same event: the
  ceiling (the API server, etcd and the watch, without Kafka or the agent)
- choose_1000: the driver's resolve over a label selector matching 1,000 Running pods (KWOK), its
  wall time and API calls; then its inject deleting all of them (at most 32 calls at once)

    .venv/bin/python bench/kubernetes.py [--sequential 20] [--burst 50] [--pods 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer  # noqa: E402
from lightkube import AsyncClient, KubeConfig  # noqa: E402
from lightkube.models.core_v1 import Container, PodSpec  # noqa: E402
from lightkube.models.meta_v1 import ObjectMeta  # noqa: E402
from lightkube.resources.core_v1 import Namespace, Pod  # noqa: E402

from agent import codec, topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.devstack import Stack, kube, kubebuild  # noqa: E402
from agent.drivers.base import FaultRequest  # noqa: E402
from agent.drivers.kubernetes import KubernetesDriver, KubernetesSettings  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import engine_env, settings_from  # noqa: E402

NAMESPACE = "bench"
SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: bench-pod-kill}}
spec:
  targets:
    web: {{driver: kubernetes, service: web, selector: {{namespace: {namespace}, labels: {{slot: "{slot}"}}}}}}
  steps:
    - {{name: kill, fault: pod-kill, target: web}}
"""


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)

    return {"n": len(values), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": round(max(values), 1),
            "mean": round(statistics.mean(values), 1)}


def bare_pod(name: str, labels: dict[str, str]) -> Pod:
    return Pod(metadata=ObjectMeta(name=name, namespace=NAMESPACE, labels=labels),
               spec=PodSpec(nodeSelector={"type": "kwok"}, terminationGracePeriodSeconds=0,
                            containers=[Container(name="c", image="bench:1")]))


class Pods:
    """Bare pods in the bench namespace, and a watch that notes when each is DELETED."""

    def __init__(self, api: AsyncClient) -> None:
        self.api = api
        self.deleted: dict[str, float] = {}
        self.watching = asyncio.Event()

    async def watch(self) -> None:
        listing = self.api.list(Pod, namespace=NAMESPACE)
        async for _ in listing:
            pass
        version = listing.resourceVersion
        self.watching.set()
        async for kind, pod in self.api.watch(Pod, namespace=NAMESPACE, resource_version=version):
            if kind == "DELETED":
                self.deleted[pod.metadata.name] = time.perf_counter()

    async def make(self, names: list[str], labels: Any, concurrency: int = 32) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with gate:
                await self.api.create(bare_pod(name, labels(name)))

        await asyncio.gather(*(one(n) for n in names))
        deadline = time.monotonic() + 300
        wanted = set(names)
        while True:
            running = {p.metadata.name async for p in self.api.list(Pod, namespace=NAMESPACE, chunk_size=500)
                       if p.status and p.status.phase == "Running"}
            if wanted <= running:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(wanted & running)} of {len(wanted)} pods Running")
            await asyncio.sleep(0.5)

    async def gone(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(n in self.deleted for n in names):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {sum(n in self.deleted for n in names)} of {len(names)} pods deleted")
            await asyncio.sleep(0.02)


async def through_agent(pods: Pods, producer: AIOKafkaProducer, settings: Any, count: int, tag: str) -> list[float]:
    """``count`` requests at once, each killing its own pod: request -> DELETED, in ms."""
    names = [f"{tag}-{i}" for i in range(count)]
    await pods.make(names, lambda name: {"slot": name})
    sent: dict[str, float] = {}
    sends = []
    for name in names:
        request = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), requester="bench",
                                             scenario_yaml=SCENARIO.format(namespace=NAMESPACE, slot=name))
        event = codec.encode_event(request, key=request.request_id, source="/bench")
        sent[name] = time.perf_counter()
        sends.append(await producer.send(settings.topics.scenario_requests, event.value, key=event.key,
                                         headers=event.headers))
    await asyncio.gather(*sends)
    await pods.gone(names)
    return [(pods.deleted[n] - sent[n]) * 1000 for n in names]


async def raw(pods: Pods, count: int, tag: str) -> list[float]:
    """``count`` DELETE calls at once, one per pod: call -> DELETED, in ms."""
    names = [f"{tag}-{i}" for i in range(count)]
    await pods.make(names, lambda name: {"slot": name})
    sent: dict[str, float] = {}

    async def delete(name: str) -> None:
        sent[name] = time.perf_counter()
        await pods.api.delete(Pod, name, namespace=NAMESPACE, grace_period=0)

    await asyncio.gather(*(delete(n) for n in names))
    await pods.gone(names)
    return [(pods.deleted[n] - sent[n]) * 1000 for n in names]


async def choose_many(pods: Pods, kubeconfig: Path, count: int) -> dict[str, Any]:
    names = [f"many-{i:04d}" for i in range(count)]
    began = time.perf_counter()
    await pods.make(names, lambda _: {"app": "many"})
    made_s = time.perf_counter() - began
    driver = KubernetesDriver(KubernetesSettings(kubeconfig=str(kubeconfig)))
    try:
        request = FaultRequest(str(uuid.uuid4()), "bench", "pod-kill", "many", "many",
                               {"namespace": NAMESPACE, "labels": {"app": "many"}, "mode": "all"}, {}, None)
        driver.client()
        calls, t0 = driver.calls, time.perf_counter()
        resolved = await driver.resolve(request)
        chosen = {"wall_ms": round((time.perf_counter() - t0) * 1000, 1), "api_calls": driver.calls - calls,
                  "pods": len(resolved.selector["chosen"])}
        calls, t0 = driver.calls, time.perf_counter()
        await driver.inject(resolved)
        acted = {"wall_ms": round((time.perf_counter() - t0) * 1000, 1), "api_calls": driver.calls - calls}
        await pods.gone(names, timeout=300)
        acted["all_deleted_ms"] = round((max(pods.deleted[n] for n in names) - t0) * 1000, 1)
    finally:
        await driver.aclose()
    return {"pods_made_s": round(made_s, 1), "resolve": chosen, "inject_delete_all": acted,
            "concurrency": driver.settings.concurrency, "page_size": driver.settings.page_size}


async def run(opts: argparse.Namespace, env: dict[str, str], kubeconfig: Path) -> dict[str, Any]:
    settings = settings_from(env)
    api = AsyncClient(KubeConfig.from_file(kubeconfig))
    await api.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
    pods = Pods(api)
    watcher = asyncio.create_task(pods.watch())
    await pods.watching.wait()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    try:
        await through_agent(pods, producer, settings, 3, "warm")
        alone = [x for i in range(opts.sequential) for x in await through_agent(pods, producer, settings, 1, f"a{i}")]
        raw_alone = [x for i in range(opts.sequential) for x in await raw(pods, 1, f"r{i}")]
        burst = await through_agent(pods, producer, settings, opts.burst, "burst")
        raw_burst = await raw(pods, opts.burst, "rawburst")
        many = await choose_many(pods, kubeconfig, opts.pods)
    finally:
        await producer.stop()
        watcher.cancel()
        await api.close()
    one, fifty = summary(alone), summary(burst)
    raw_one, raw_fifty = summary(raw_alone), summary(raw_burst)
    return {
        "benchmark": "kubernetes",
        "alone": {"request_to_pod_deleted_ms": one, "raw_delete_to_pod_deleted_ms": raw_one,
                  "agent_to_raw_p50": round(one["p50"] / raw_one["p50"], 2)},
        f"burst_{opts.burst}": {"request_to_pod_deleted_ms": fifty, "raw_delete_to_pod_deleted_ms": raw_fifty,
                                "agent_to_raw_p50": round(fifty["p50"] / raw_fifty["p50"], 2)},
        f"choose_{opts.pods}": many,
        "raw": "one DELETE call (lightkube, grace 0) per pod, timed to its DELETED event on the same watch",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--pods", type=int, default=1000)
    opts = parser.parse_args()
    build_began = time.monotonic()
    kubebuild.ensure_kubernetes(progress=False)
    build_s = round(time.monotonic() - build_began, 1)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        stack = Stack(Path(tmp) / "stack")
        timings = stack.up(("kafka", "redis", "kubernetes"), extras=("kubernetes",), timeout=240)
        try:
            kubeconfig = kube.kubeconfig(stack.dir / "kubernetes")
            env = {**engine_env(stack.env(), supervisor_url="http://127.0.0.1:1/RPC2", suffix=uuid.uuid4().hex[:8]),
                   "COORDINATOR_MAX_CONCURRENT_EXECUTIONS": str(opts.burst + 50), "COORDINATOR_LOG_LEVEL": "warning",
                   "COORDINATOR_LEASE_TTL": "15", "COORDINATOR_RECONCILE_INTERVAL": "5",
                   "COORDINATOR_CONTENT_TYPE": "application/protobuf",
                   "COORDINATOR_DRIVERS__KUBERNETES__KUBECONFIG": str(kubeconfig),
                   "COORDINATOR_DRIVERS__KUBERNETES__SETTLE_S": "1",  # bare pods: nothing replaces them
                   "COORDINATOR_ALLOWED_TARGETS": json.dumps(["web", f"kubernetes:{NAMESPACE}/*"])}
            asyncio.run(topics.apply(settings_from(env)))
            agent = AgentProcess(env, Path(tmp) / "agent.log").start()
            try:
                report = asyncio.run(run(opts, env, kubeconfig))
            finally:
                agent.stop()
        finally:
            stack.down()
    report["control_plane"] = {"build_s_this_run": build_s, "ready_s": timings.get("kubernetes")}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
