"""Pooled gRPC channels: retries, deadlines and the circuit breaker, against a real local gRPC server."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.devstack.procs import free_port
from agent.grpc_clients import CLOSED, HALF_OPEN, OPEN, ChannelPool, CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_enough_failures_in_the_window_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, window=10, reset_timeout=5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    clock.now += 11  # the first failures leave the window
    breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == OPEN and not breaker.allow() and breaker.retry_in() == 5
    clock.now += 5
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow(), "one trial at a time"
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()


async def _check(channel: grpc.aio.Channel, left: float) -> health_pb2.HealthCheckResponse:
    return await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=left)


async def test_a_dead_address_is_retried_then_cut_off_and_tried_again_once_it_is_back() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    pool = ChannelPool(retries=2, backoff=0.01, failure_threshold=2, window=30, reset_timeout=0.5)
    try:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pool.call(address, _check, timeout=2)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        started = time.monotonic()
        with pytest.raises(CircuitOpen, match=f"circuit open for {address}"):
            await pool.call(address, _check, timeout=2)
        assert time.monotonic() - started < 0.05, "an open circuit fails at once"

        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(address)
        await server.start()
        try:
            time.sleep(0.5)  # noqa: ASYNC251 - let the reset timeout pass
            reply = await pool.call(address, _check, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert pool.breaker(address).state == CLOSED
            assert pool.channel(address) is pool.channel(address), "one pooled channel per address"
        finally:
            await server.stop(None)
    finally:
        await pool.close()
