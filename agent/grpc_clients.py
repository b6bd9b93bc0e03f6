"""gRPC clients to the services under test: one pooled channel per address, a deadline on every
call, retries with exponential backoff and jitter on transient codes, and a circuit breaker per
address so a dead service costs nothing after it has failed enough.

Circuit breaker (per address): CLOSED counts failures in a sliding window; ``failure_threshold``
failures within ``window`` seconds OPEN it: calls fail at once with :class:`CircuitOpen` for
``reset_timeout`` seconds; then HALF_OPEN lets one trial call through: success closes it, failure
opens it again. (The seed ecosystem's client used 5 failures in 60 s.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from agent.logs import get_logger

log = get_logger("agent.grpc_clients")
T = TypeVar("T")
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(Exception):
    """The address failed too often recently; the call was not attempted."""


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 5, window: float = 60.0, reset_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.window = window
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.state = CLOSED
        self.failures: deque[float] = deque()
        self.opened_at = 0.0
        self._trial = False

    def allow(self) -> bool:
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.reset_timeout:
                return False
            self.state, self._trial = HALF_OPEN, False
        if self.state == HALF_OPEN:
            if self._trial:
                return False  # one trial at a time
            self._trial = True
        return True

    def record_success(self) -> None:
        self.state, self._trial = CLOSED, False
        self.failures.clear()

    def record_failure(self) -> None:
        now = self.clock()
        if self.state == HALF_OPEN:
            self._open(now)
            return
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.window:
            self.failures.popleft()
        if len(self.failures) >= self.failure_threshold:
            self._open(now)

    def retry_in(self) -> float:
        return max(0.0, self.reset_timeout - (self.clock() - self.opened_at)) if self.state == OPEN else 0.0

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self._trial = OPEN, now, False
        self.failures.clear()


class ChannelPool:
    def __init__(self, *, retries: int = 2, backoff: float = 0.1, failure_threshold: int = 5, window: float = 60.0,
                 reset_timeout: float = 30.0) -> None:
        self.retries = retries
        self.backoff = backoff
        self._breaker_args = (failure_threshold, window, reset_timeout)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._random = random.Random()  # noqa: S311 - jitter, not security

    def channel(self, address: str) -> grpc.aio.Channel:
        found = self._channels.get(address)
        if found is None:
            # a local subchannel pool: gRPC shares subchannels (and their reconnect backoff) across
            # channels by default, which would make a fresh channel as slow to reconnect as the old
            found = self._channels[address] = grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)])
        return found

    def breaker(self, address: str) -> CircuitBreaker:
        found = self.breakers.get(address)
        if found is None:
            found = self.breakers[address] = CircuitBreaker(*self._breaker_args)
        return found

    async def call(self, address: str, fn: Callable[[grpc.aio.Channel, float], Awaitable[T]], *,
                   timeout: float) -> T:
        """``fn(channel, seconds_left)`` within ``timeout`` seconds in all, retried on transient codes."""
        breaker = self.breaker(address)
        if not breaker.allow():
            raise CircuitOpen(f"circuit open for {address}: it failed {breaker.failure_threshold} times within "
                              f"{breaker.window:g}s; next try in {breaker.retry_in():.1f}s")
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            try:
                result = await fn(self.channel(address), max(0.05, left))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    # a channel that failed to connect backs off on its own (seconds); a fresh one
                    # tries at once, so a service that is back is seen by the next call
                    await self._drop(address)
                pause = self.backoff * (2 ** attempt) * (0.5 + self._random.random())
                if exc.code() in RETRYABLE and attempt < self.retries and time.monotonic() + pause < deadline:
                    attempt += 1
                    await asyncio.sleep(pause)
                    continue
                breaker.record_failure()
                raise
            except Exception:
                breaker.record_failure()
                raise
            breaker.record_success()
            return result

    async def _drop(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
