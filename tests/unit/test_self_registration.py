"""The agent's own registry entry: a refresh in flight when the agent stops lands before the entry is
removed, never after it (which would leave a stopped agent registered until the TTL)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from agent.registry import SelfRegistration


class _SlowRedis:
    """Records the order of writes and deletes; each write takes ``delay`` seconds to be answered."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[str] = []
        self.writing = asyncio.Event()
        self.fail_deletes = 0

    def pipeline(self, transaction: bool = True) -> _SlowRedis._Pipe:
        return _SlowRedis._Pipe(self)

    async def delete(self, key: str) -> int:
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise aioredis.ConnectionError("connection reset")
        self.calls.append(f"delete {key}")
        return 1

    class _Pipe:
        def __init__(self, redis: _SlowRedis) -> None:
            self.redis = redis

        async def __aenter__(self) -> _SlowRedis._Pipe:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        def hset(self, key: str, mapping: dict[str, Any]) -> None:
            self.status = mapping["status"]

        def expire(self, key: str, ttl: int) -> None:
            return None

        async def execute(self) -> None:
            self.redis.writing.set()
            await asyncio.sleep(self.redis.delay)
            self.redis.calls.append(f"write {self.status}")


async def test_a_refresh_in_flight_at_stop_is_written_before_the_entry_is_removed() -> None:
    redis = _SlowRedis(delay=0.3)
    registration = SelfRegistration(redis, "coordinator", "127.0.0.1", ttl=15)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(registration.keep_alive(stop))
    await redis.writing.wait()  # the first refresh is on its way
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await registration.remove()
    assert redis.calls == ["write starting", "delete registry:services:coordinator"]


async def test_removal_is_retried_and_a_failure_is_reported() -> None:
    redis = _SlowRedis(delay=0)
    registration = SelfRegistration(redis, "coordinator", "127.0.0.1", ttl=15)  # type: ignore[arg-type]
    redis.fail_deletes = 1
    assert await registration.remove(), "a second try deletes it"
    assert redis.calls == ["delete registry:services:coordinator"]
    redis.fail_deletes = 3
    assert not await registration.remove(attempts=3)
