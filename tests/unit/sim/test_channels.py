"""The sim's gRPC channels get back to a peer that was away for twenty seconds within about a second of
its return (real gRPC servers and channels on loopback; gRPC's default back-off took many seconds), and
replacing a channel never ends the calls on it early: an order whose call was cancelled was lost."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.devstack.procs import free_port
from sim._proto.sim.v1 import trading_pb2
from sim.knobs import Knobs
from sim.runtime import Channels, Config, own_address
from sim.services import TradingEngine


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


async def reaches(channel: grpc.aio.Channel, within: float = 5.0) -> None:
    """A call gets through within ``within`` seconds (a new channel's first connection takes longer
    than one call's deadline on a busy machine)."""
    deadline = time.monotonic() + within
    while not await check(channel):
        assert time.monotonic() < deadline, f"no call got through {within:g}s after the channel was made"
        await asyncio.sleep(0.05)


async def test_a_channel_reaches_a_peer_back_from_a_twenty_second_absence_within_about_a_second() -> None:
    port = free_port()
    server = await serve(port)
    channels = Channels(redis=None)  # type: ignore[arg-type] - the address is given, not looked up
    channel = channels.channel(f"127.0.0.1:{port}")
    try:
        await reaches(channel)
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
        assert second is not first
        await reaches(second)
    finally:
        await server.stop(None)
        await channels.close()


class Silent(health.aio.HealthServicer):
    """A peer that takes calls and never answers them: they stay in flight until their deadline."""

    async def Check(self, request: health_pb2.HealthCheckRequest,  # noqa: N802 - gRPC method name
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        await asyncio.sleep(60)
        return health_pb2.HealthCheckResponse()


async def test_a_call_in_flight_on_a_replaced_channel_ends_by_its_own_deadline_not_by_cancellation() -> None:
    port = free_port()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Silent(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    address = f"127.0.0.1:{port}"
    channels = Channels(redis=None)  # type: ignore[arg-type]
    try:
        stub = health_pb2_grpc.HealthStub(channels.channel(address))
        in_flight = asyncio.ensure_future(stub.Check(health_pb2.HealthCheckRequest(), timeout=2.5))
        await asyncio.sleep(1.1)
        late = grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata())
        assert channels.failed(address, late)
        # a CancelledError here ended the caller's task (an order lost); an RpcError is retried
        outcome = (await asyncio.gather(in_flight, return_exceptions=True))[0]
        assert isinstance(outcome, grpc.aio.AioRpcError), f"the call ended with {outcome!r}"
        assert outcome.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await channels.close()
        await server.stop(grace=None)


async def test_the_engine_retries_a_call_that_a_channel_close_cancelled_and_the_order_goes_on() -> None:
    engine = TradingEngine(Config(name="trading-engine", kafka="127.0.0.1:9", redis_url="redis://127.0.0.1:9",
                                  grpc_port=0, http_port=0), Knobs())
    order = trading_pb2.Order(order_id="o-1")
    engine.pending[order.order_id] = (time.time(), "")
    attempts: list[int] = []

    async def cancelled_once(_: trading_pb2.Order) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise asyncio.CancelledError  # what awaiting a call raises when its channel is closed under it
        return "answered"

    try:
        assert await engine._call(time.time() + 5, cancelled_once, order) == "answered"  # noqa: SLF001
        assert len(attempts) == 2

        async def forever(_: trading_pb2.Order) -> str:
            await asyncio.sleep(60)
            return "never"

        stopping = asyncio.ensure_future(engine._call(time.time() + 5, forever, order))  # noqa: SLF001
        await asyncio.sleep(0.1)
        stopping.cancel()  # the order's own task being stopped still stops
        try:
            await stopping
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("a cancelled order task kept going")
    finally:
        await engine.redis.aclose()


class Registry:
    """The registry's one read the channels make (``hgetall``), counted, failing when told to."""

    def __init__(self) -> None:
        self.reads = 0
        self.error: Exception | None = None

    async def hgetall(self, key: str) -> dict[str, str]:
        self.reads += 1
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return {"host": "risk-monitor", "grpc_port": "9001"} if key.endswith("risk-monitor") else {}


async def test_a_peers_address_is_read_once_a_second_and_kept_while_the_registry_cannot_be_read() -> None:
    import redis.asyncio as aioredis

    registry = Registry()
    channels = Channels(redis=registry)  # type: ignore[arg-type]
    found = await asyncio.gather(*(channels.address("risk-monitor") for _ in range(50)))
    assert set(found) == {"risk-monitor:9001"} and registry.reads == 1, "a burst of calls reads it once"
    assert await channels.address("exchange") is None, "not registered"
    registry.error = aioredis.ConnectionError("Error -3 connecting to redis:6379. Temporary failure in name resolution")
    await asyncio.sleep(1.1)
    assert await channels.address("risk-monitor") == "risk-monitor:9001", "the last address known, while it fails"
    try:
        await Channels(redis=registry).address("risk-monitor")  # type: ignore[arg-type]
    except LookupError as exc:
        assert "the registry cannot be read" in str(exc), exc
    else:
        raise AssertionError("no address known and none readable: a LookupError the caller retries")


async def test_a_peer_that_moved_is_dialled_at_its_new_address_and_the_old_channel_is_closed() -> None:
    registry = Registry()
    channels = Channels(redis=registry)  # type: ignore[arg-type]
    try:
        first = await channels.address("risk-monitor")
        assert first == "risk-monitor:9001"
        old = channels.channel(first)
        registry.hgetall = moved  # type: ignore[method-assign] - the container came back elsewhere
        await asyncio.sleep(1.1)
        assert await channels.address("risk-monitor") == "10.89.0.7:9001"
        assert channels.channel("10.89.0.7:9001") is not old
        await asyncio.sleep(0)  # the old channel's close has started
        assert old.get_state() is grpc.ChannelConnectivity.SHUTDOWN or channels._closing  # noqa: SLF001
        assert first not in channels._channels, "the channel to the old address is retired"  # noqa: SLF001
    finally:
        await channels.close()


async def moved(key: str) -> dict[str, str]:
    return {"host": "10.89.0.7", "grpc_port": "9001"}


def test_advertise_ip_is_the_address_toward_redis() -> None:
    assert own_address("redis://127.0.0.1:6379/0") == "127.0.0.1"
    assert own_address("rediss://user:secret@localhost:6380/0?ssl_ca_certs=/x") == "127.0.0.1"
