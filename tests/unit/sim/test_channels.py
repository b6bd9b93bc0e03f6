"""The sim's gRPC channels get back to a peer that was away for twenty seconds within about a second of
its return (real gRPC servers and channels on loopback; gRPC's default back-off took many seconds)."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.devstack.procs import free_port
from sim.runtime import Channels


async def serve(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def check(channel: grpc.aio.Channel) -> bool:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    except grpc.aio.AioRpcError:
        return False
    return True


async def test_a_channel_reaches_a_peer_back_from_a_twenty_second_absence_within_about_a_second() -> None:
    port = free_port()
    server = await serve(port)
    channels = Channels(redis=None)  # type: ignore[arg-type] - the address is given, not looked up
    channel = channels.channel(f"127.0.0.1:{port}")
    try:
        assert await check(channel)
        await server.stop(grace=None)
        away = time.monotonic()
        while time.monotonic() - away < 20:  # calls keep failing while it is away: the back-off grows
            assert not await check(channel)
            await asyncio.sleep(0.2)
        server = await serve(port)
        back = time.monotonic()
        while not await check(channel):
            assert time.monotonic() - back < 5, "no call got through 5s after the peer was back"
            await asyncio.sleep(0.05)
        assert time.monotonic() - back < 1.5, f"reached again {time.monotonic() - back:.1f}s after its return"
    finally:
        await channels.close()
        await server.stop(grace=None)


async def test_a_channel_that_fails_is_replaced_at_most_once_a_second_and_the_new_one_reaches_the_peer() -> None:
    port = free_port()
    channels = Channels(redis=None)  # type: ignore[arg-type]
    address = f"127.0.0.1:{port}"
    first = channels.channel(address)
    assert not await check(first)  # nobody listens yet
    unavailable = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert not channels.failed(address, unavailable), "a channel younger than a second is kept"
    await asyncio.sleep(1.1)
    rejected = grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert not channels.failed(address, rejected), "an answer from the peer is no reason to reconnect"
    assert channels.failed(address, unavailable)
    server = await serve(port)
    try:
        second = channels.channel(address)
        assert second is not first and await check(second)
    finally:
        await server.stop(None)
        await channels.close()
