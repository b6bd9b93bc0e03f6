"""The ecosystem's service registry in Redis: ``registry:services:{name}``, a hash with ``name``,
``host``, ``grpc_port``, ``http_port``, ``type``, ``status`` and ``updated_at`` (RFC 3339).

- The agent registers itself (``COORDINATOR_REGISTRY_NAME``, default ``coordinator``) and refreshes
  the entry every third of ``COORDINATOR_REGISTRY_TTL``; the key expires after the TTL when the
  agent dies, and is deleted when it stops.
- Targets are resolved by service name: an entry is used only while it is alive, i.e. its key has
  not expired and its ``updated_at`` is no older than the TTL (entries written by registries that
  set no Redis expiry go stale that way), and its status is not ``stopping``/``down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis

from agent.constants import REGISTRY_SERVICE_KEY
from agent.logs import get_logger
from agent.store import answer

log = get_logger("agent.registry")
DEAD_STATUSES = {"stopping", "down", "stopped"}


class NotRegistered(LookupError):
    """No live registry entry gives this address; the message says why."""


@dataclass(frozen=True)
class Entry:
    name: str
    host: str
    grpc_port: int | None
    http_port: int | None
    status: str
    updated_at: float | None

    def address(self, kind: str) -> str:
        port = self.grpc_port if kind == "grpc" else self.http_port
        if not port:
            raise NotRegistered(f"service '{self.name}' is registered without a {kind} port")
        return f"http://{self.host}:{port}" if kind == "http" else f"{self.host}:{port}"


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Registry:
    def __init__(self, redis: aioredis.Redis, ttl: float = 15.0) -> None:
        self.redis = redis
        self.ttl = ttl

    async def lookup(self, name: str) -> Entry:
        raw = await answer(self.redis.hgetall(REGISTRY_SERVICE_KEY.format(name=name)))
        if not raw:
            raise NotRegistered(f"service '{name}' is not in the registry (never registered, or its entry expired)")
        updated = parse_time(raw.get("updated_at"))
        if updated is not None and time.time() - updated > self.ttl:
            raise NotRegistered(f"service '{name}': its registry entry is stale (updated {time.time() - updated:.0f}s "
                                f"ago, more than the {self.ttl:g}s TTL)")
        status = raw.get("status", "")
        if status in DEAD_STATUSES:
            raise NotRegistered(f"service '{name}' is registered as {status}")
        port = raw.get("port")
        return Entry(name=name, host=raw.get("host") or "127.0.0.1", status=status, updated_at=updated,
                     grpc_port=_int(raw.get("grpc_port")), http_port=_int(raw.get("http_port") or port))

    async def address(self, name: str, kind: str) -> str:
        return (await self.lookup(name)).address(kind)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


class SelfRegistration:
    """The agent's own registry entry, kept alive while it serves."""

    def __init__(self, redis: aioredis.Redis, name: str, host: str, ttl: float) -> None:
        self.redis = redis
        self.name = name
        self.host = host
        self.ttl = ttl
        self.ports: dict[str, int] = {}
        self.status = "starting"

    @property
    def key(self) -> str:
        return REGISTRY_SERVICE_KEY.format(name=self.name)

    async def write(self) -> None:
        entry = {"name": self.name, "host": self.host, "type": "coordinator", "status": self.status,
                 "pid": str(os.getpid()), "updated_at": now_rfc3339(),
                 **{f"{kind}_port": str(port) for kind, port in self.ports.items()}}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping=entry)
            pipe.expire(self.key, max(1, int(self.ttl)))
            await pipe.execute()

    async def keep_alive(self, stop: asyncio.Event) -> None:
        """Refresh the entry every third of the TTL until ``stop`` is set; while Redis fails, retried at
        the same pace, with one log line when it starts failing and one when it works again. Stopping
        lets a write in flight finish: a write cut short by cancellation could still reach Redis after
        the entry was removed, and leave a stopped agent registered until the TTL."""
        failing = False
        while not stop.is_set():
            try:
                await self.write()
            except (aioredis.RedisError, OSError) as exc:
                if not failing:
                    log.warning("registry heartbeat failing; retrying quietly", error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("registry heartbeat written again")
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.5, self.ttl / 3))

    async def remove(self, attempts: int = 3) -> bool:
        """Delete the entry (a few tries, a moment apart); False, with a warning, when Redis would not:
        the entry then expires after the TTL."""
        for attempt in range(attempts):
            try:
                await self.redis.delete(self.key)
                return True
            except (aioredis.RedisError, OSError) as exc:
                if attempt == attempts - 1:
                    log.warning("registry entry not removed; it expires after the ttl", key=self.key,
                                ttl=self.ttl, error=str(exc))
                    return False
                await asyncio.sleep(0.5)
        return False
