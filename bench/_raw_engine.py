"""The engine's ceiling: the work a request needs before its first chaos event, without the engine.
One aiokafka consumer -> decode ScenarioRequest -> one Redis claim (SET NX) -> one Toxiproxy call
(a latency toxic on one proxy) -> one produced event per request; each fetch's records concurrently,
as the agent takes them. Toxics are removed when stopped.

Run by bench/engine_latency.py as a child process, like the agent, so both are timed alike:
    python bench/_raw_engine.py BOOTSTRAP REDIS_URL TOXIPROXY_URL IN_TOPIC OUT_TOPIC GROUP PROXY LISTEN UPSTREAM
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from agent import codec  # noqa: E402
from agent._proto.coordinator.v1 import events_pb2  # noqa: E402


async def run(bootstrap: str, redis_url: str, toxiproxy: str, in_topic: str, out_topic: str, group: str,
              proxy: str, listen: str, upstream: str) -> None:
    consumer = AIOKafkaConsumer(in_topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2)
    store = aioredis.from_url(redis_url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    toxics: list[str] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with http.post(f"{toxiproxy}/proxies", json={"name": proxy, "listen": listen, "upstream": upstream}) as r:
        if r.status not in (201, 409):
            raise SystemExit(f"proxy not made: {r.status} {await r.text()}")
    await consumer.start()
    await producer.start()

    async def one(record) -> None:  # noqa: ANN001
        request = codec.decode_event(record.value, record.headers, events_pb2.ScenarioRequest)
        if not await store.set(f"bench-raw:request:{request.request_id}", "1", nx=True, ex=600):
            return
        name = f"raw-{request.request_id}"
        async with http.post(f"{toxiproxy}/proxies/{proxy}/toxics",
                             json={"name": name, "type": "latency", "attributes": {"latency": 10}}) as r:
            r.raise_for_status()
        toxics.append(name)
        event = events_pb2.ChaosEvent(correlation_id=request.request_id, execution_id=request.request_id,
                                      type=events_pb2.CHAOS_EVENT_TYPE_INJECTED)
        event.injected_at.GetCurrentTime()
        out = codec.encode_event(event, key=request.request_id, source="/bench-raw")
        await (await producer.send(out_topic, out.value, key=out.key, headers=out.headers))

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=100)
            await asyncio.gather(*(one(record) for records in batch.values() for record in records))
            if batch:
                await consumer.commit()
    finally:
        for name in toxics:
            async with http.delete(f"{toxiproxy}/proxies/{proxy}/toxics/{name}"):
                pass
        async with http.delete(f"{toxiproxy}/proxies/{proxy}"):
            pass
        await http.close()
        await store.aclose()
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:10]))
