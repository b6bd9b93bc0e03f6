"""Request -> restart call: how long after a scenario request is produced the agent calls the
backend to restart the target, for a container (docker driver, the stack's Docker-API engine) and for
a supervisord program (supervisor driver), alternating in one run so both see the same machine.

The restart call's time is the INJECTED chaos event's ``injected_at``: the agent stamps it just
before it calls the driver's inject (after the docker driver chose its container), on the same
clock as the request's send time here. Also reported: the run's whole duration (the restart itself
included) per driver. Prints JSON.

    .venv/bin/python bench/restart_call.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiodocker  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from agent import codec, topics  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402
from agent.devstack.engine import BASE_IMAGE, STACK_LABEL  # noqa: E402
from agent.kafkaio import topic_partitions  # noqa: E402
from bench._stack import local_stack  # noqa: E402
from bench.engine_latency import summary  # noqa: E402
from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.engine import engine_env, settings_from  # noqa: E402
from tests.helpers.supervisor import supervisord  # noqa: E402

SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: bench-restart-{driver}}}
spec:
  targets:
    victim: {{driver: {driver}, selector: {selector}}}
  steps:
    - {{name: restart-it, fault: restart, target: victim{parameters}}}
"""
TARGETS = {
    "docker": ("{name: bench-victim}", ", parameters: {timeout: 1s}"),
    "supervisor": ("{program: victim}", ""),
}


async def _run(settings, runs: int) -> dict:  # noqa: ANN001
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    try:
        tps = [tp for t in (settings.topics.chaos_events, settings.topics.scenario_results)
               for tp in await topic_partitions(consumer, t)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        calls: dict[str, list[float]] = {"docker": [], "supervisor": []}
        runs_s: dict[str, list[float]] = {"docker": [], "supervisor": []}
        statuses: dict[str, int] = {}
        for i in range(runs * 2 + 2):  # two warm-up runs, then alternating drivers
            driver = ("docker", "supervisor")[i % 2]
            selector, parameters = TARGETS[driver]
            request = events_pb2.ScenarioRequest(
                request_id=str(uuid.uuid4()), requester="bench",
                scenario_yaml=SCENARIO.format(driver=driver, selector=selector, parameters=parameters))
            event = codec.encode_event(request, key=request.request_id, source="/bench")
            sent = time.time()
            await producer.send_and_wait(settings.topics.scenario_requests, event.value, key=event.key,
                                         headers=event.headers)
            injected, result = await _follow(consumer, request.request_id)
            name = events_pb2.ExecutionStatus.Name(result.status)
            statuses[name] = statuses.get(name, 0) + 1
            if i >= 2 and injected is not None:
                calls[driver].append((injected - sent) * 1000)
                runs_s[driver].append((result.ended_at.ToNanoseconds() / 1e9 - sent) * 1000)
        return {"benchmark": "restart_call", "runs_per_driver": runs, "statuses": statuses,
                "request_to_restart_call_ms": {d: summary(v) for d, v in calls.items()},
                "request_to_result_ms": {d: summary(v) for d, v in runs_s.items()},
                "ratio_p50_docker_to_supervisor": round(
                    summary(calls["docker"])["p50"] / max(summary(calls["supervisor"])["p50"], 0.01), 2)}
    finally:
        await producer.stop()
        await consumer.stop()


async def _follow(consumer: AIOKafkaConsumer, request_id: str) -> tuple[float | None, events_pb2.ScenarioResult]:
    """The INJECTED event's injected_at and the result of one request."""
    execution = ""
    injected: float | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            for record in records:
                kind = codec.headers_to_dict(record.headers).get("ce_type")
                if (kind or "").startswith("coordinator.v1.ChaosEvent"):
                    chaos = codec.decode_event(record.value, record.headers, events_pb2.ChaosEvent)
                    if chaos.type == events_pb2.CHAOS_EVENT_TYPE_INJECTED and chaos.execution_id == execution:
                        injected = chaos.injected_at.ToNanoseconds() / 1e9
                elif kind == "coordinator.v1.ExecutionProgress" and not execution:
                    progress = codec.decode_event(record.value, record.headers, events_pb2.ExecutionProgress)
                    if progress.request_id == request_id:
                        execution = progress.execution_id
                elif kind == "coordinator.v1.ScenarioResult":
                    result = codec.decode_event(record.value, record.headers, events_pb2.ScenarioResult)
                    if result.request_id == request_id:
                        return injected, result
    raise SystemExit(f"no result for {request_id} within 120s")


async def _victim(url: str) -> aiodocker.containers.DockerContainer:
    async with aiodocker.Docker(url=url) as docker:
        container = await docker.containers.create_or_replace(name="bench-victim", config={
            "Image": BASE_IMAGE, "Cmd": ["/bin/sleep", "3600"], "StopSignal": "SIGKILL",
            "Labels": {STACK_LABEL: "bench"}, "HostConfig": {"NetworkMode": "host"}})
        await container.start()
        return container


async def _remove(url: str) -> None:
    async with aiodocker.Docker(url=url) as docker:
        await (await docker.containers.get("bench-victim")).delete(force=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    opts = parser.parse_args()
    with local_stack() as (stack, scratch), tempfile.TemporaryDirectory(prefix="bench-sup-") as sup_dir, \
            supervisord(Path(sup_dir)) as supervised:
        sfx = uuid.uuid4().hex[:8]
        env = {**engine_env(stack.env(), supervisor_url=supervised.url, suffix=f"bench-{sfx}"),
               "COORDINATOR_LOG_LEVEL": "warning", "COORDINATOR_LEASE_TTL": "15",
               "COORDINATOR_RECONCILE_INTERVAL": "5", "COORDINATOR_CONTENT_TYPE": "application/protobuf",
               "COORDINATOR_PLATFORM_EVENTS": "false"}
        url = env["COORDINATOR_DOCKER_URL"]
        asyncio.run(topics.apply(settings_from(env)))
        asyncio.run(_victim(url))
        agent = AgentProcess(env, Path(os.environ.get("BENCH_AGENT_LOG", scratch / "agent.log"))).start()
        try:
            report = asyncio.run(_run(settings_from(env), opts.runs))
        finally:
            agent.stop()
            asyncio.run(_remove(url))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
