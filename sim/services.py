"""The sim's services: exchange, risk monitor and trading engine.

Order flow (JSON on Kafka, ``correlation-id`` header carried from each input to what it causes):

    load generator -> orders.inbound.v1 -(coordinator relay)-> orders.v1 -> trading engine
    trading engine -> risk monitor CheckOrder (gRPC) -> exchange ExecuteOrder (gRPC, through the
    Toxiproxy proxy engine-to-exchange when one is given) -> fills.v1 -> trading engine, risk monitor
    risk monitor -> risk.reports.v1 every report interval

Audit events: service_started/ready/stopping (every service); order_accepted, order_rejected,
order_duplicate_ignored, order_filled, duplicate_fill, order_lost (engine); order_executed (exchange);
risk_report, risk_alert (risk monitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter, OrderedDict
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from sim import kafka_security
from sim._proto.sim.v1 import trading_pb2, trading_pb2_grpc
from sim.runtime import CORRELATION_HEADER, Channels, Service, correlation_of, log

ORDERS_TOPIC = "orders.v1"
INBOUND_TOPIC = "orders.inbound.v1"
FILLS_TOPIC = "fills.v1"
RISK_TOPIC = "risk.reports.v1"
TOPICS = (INBOUND_TOPIC, ORDERS_TOPIC, FILLS_TOPIC, RISK_TOPIC)

P = trading_pb2
#: a killed member holds its partitions until its session times out: the broker's minimum (6 s), so a
#: restarted service gets them back soon
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
_SIDES = {"BUY": P.SIDE_BUY, "SELL": P.SIDE_SELL}


def order_from_json(value: bytes | None) -> trading_pb2.Order:
    """An order from the orders topic; ValueError names what is wrong."""
    try:
        data = json.loads(value or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("order_id", "symbol", "side", "quantity", "price") if k not in data]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    side = _SIDES.get(str(data["side"]).upper())
    if side is None:
        raise ValueError(f"side {data['side']!r} is not BUY or SELL")
    try:
        quantity, price = float(data["quantity"]), float(data["price"])
    except (TypeError, ValueError) as exc:
        raise ValueError("quantity and price must be numbers") from exc
    if quantity <= 0 or price <= 0:
        raise ValueError("quantity and price must be positive")
    return P.Order(order_id=str(data["order_id"]), symbol=str(data["symbol"]), side=side, quantity=quantity,  # type: ignore[arg-type]
                   price=price, client_id=str(data.get("client_id", "")))


def order_to_json(order: trading_pb2.Order) -> bytes:
    return json.dumps({"order_id": order.order_id, "symbol": order.symbol, "side": P.Side.Name(order.side)[5:],
                       "quantity": order.quantity, "price": order.price, "client_id": order.client_id}).encode()


def headers_for(correlation_id: str) -> list[tuple[str, bytes]]:
    headers = [("content-type", b"application/json")]
    if correlation_id:
        headers.append((CORRELATION_HEADER, correlation_id.encode()))
    return headers


async def _hang_until_deadline(context: grpc.aio.ServicerContext) -> None:
    remaining = context.time_remaining()
    await asyncio.sleep(min(remaining if remaining is not None else 30.0, 30.0))
    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "stalled")


# -- exchange -------------------------------------------------------------------------------------
class Exchange(Service, trading_pb2_grpc.ExchangeServiceServicer):
    grpc_services = (P.DESCRIPTOR.services_by_name["ExchangeService"].full_name,)

    def add_servicers(self, server: grpc.aio.Server) -> None:
        trading_pb2_grpc.add_ExchangeServiceServicer_to_server(self, server)

    async def ExecuteOrder(self, request: trading_pb2.ExecuteOrderRequest,  # noqa: N802 - gRPC method name
                           context: grpc.aio.ServicerContext) -> trading_pb2.ExecuteOrderResponse:
        await self.require_ready(context)
        if self.knobs.stall:
            await _hang_until_deadline(context)
        await self.answer("ExecuteOrder", context)
        order = request.order
        fill = P.Fill(fill_id=str(uuid.uuid4()), order_id=order.order_id, symbol=order.symbol, side=order.side,
                      quantity=order.quantity, price=order.price)
        assert self.producer is not None
        body = json.dumps({"fill_id": fill.fill_id, "order_id": fill.order_id, "symbol": fill.symbol,
                           "side": P.Side.Name(fill.side)[5:], "quantity": fill.quantity, "price": fill.price})
        await self.producer.send(FILLS_TOPIC, body.encode(), key=order.order_id.encode(),
                                 headers=headers_for(request.correlation_id))
        self.count("orders_executed")
        await self.audit("order_executed", request.correlation_id, order_id=order.order_id, fill_id=fill.fill_id)
        return P.ExecuteOrderResponse(fill=fill)


# -- risk monitor ---------------------------------------------------------------------------------
class RiskMonitor(Service, trading_pb2_grpc.RiskMonitorServiceServicer):
    grpc_services = (P.DESCRIPTOR.services_by_name["RiskMonitorService"].full_name,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions: dict[str, float] = {}
        self.exposure = 0.0
        self.fills_seen = 0
        self.limit = float(self.config.extra.get("exposure_limit", 5_000_000.0))
        self.max_order = float(self.config.extra.get("max_order_notional", 1_000_000.0))
        self.interval = float(self.config.extra.get("report_interval", 1.0))
        self._last_correlation = ""
        self._consumer: AIOKafkaConsumer | None = None

    def add_servicers(self, server: grpc.aio.Server) -> None:
        trading_pb2_grpc.add_RiskMonitorServiceServicer_to_server(self, server)

    async def CheckOrder(self, request: trading_pb2.CheckOrderRequest,  # noqa: N802
                         context: grpc.aio.ServicerContext) -> trading_pb2.CheckOrderResponse:
        await self.require_ready(context)
        if self.knobs.stall:
            await _hang_until_deadline(context)
        await self.answer("CheckOrder", context)
        notional = request.order.quantity * request.order.price
        if notional > self.max_order:
            return P.CheckOrderResponse(approved=False, reason=f"notional {notional:.2f} over {self.max_order:.2f}")
        return P.CheckOrderResponse(approved=True)

    async def GetRiskReport(self, request: trading_pb2.GetRiskReportRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> trading_pb2.GetRiskReportResponse:
        return P.GetRiskReportResponse(positions=self.positions, gross_exposure=self.exposure, limit=self.limit,
                                       fills_seen=self.fills_seen)

    async def start_work(self) -> None:
        self._consumer = AIOKafkaConsumer(FILLS_TOPIC, **kafka_security.options(self.config.kafka),
                                          group_id="risk-monitor",
                                          auto_offset_reset="latest", enable_auto_commit=True, **GROUP_TIMEOUTS)
        await self._consumer.start()
        self.spawn(self._consume(self._consumer), "fills")
        self.spawn(self._report_loop(), "reports")

    async def stop_work(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def status(self) -> dict[str, Any]:
        return {"gross_exposure": self.exposure, "fills_seen": self.fills_seen}

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            if self.knobs.stall:
                continue
            try:
                fill = json.loads(record.value or b"")
                signed = float(fill["quantity"]) * (1 if fill["side"] == "BUY" else -1)
                symbol = str(fill["symbol"])
                price = float(fill["price"])
            except (ValueError, KeyError, TypeError):
                continue
            self.positions[symbol] = self.positions.get(symbol, 0.0) + signed
            self.exposure = sum(abs(q) for q in self.positions.values()) * price
            self.fills_seen += 1
            self._last_correlation = correlation_of(record.headers) or self._last_correlation

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.ready or self.knobs.stall or self.producer is None:
                continue
            correlation, self._last_correlation = self._last_correlation, ""
            report = {"service": self.name, "at": time.time(), "positions": self.positions,
                      "gross_exposure": self.exposure, "limit": self.limit, "fills_seen": self.fills_seen}
            await self.producer.send(RISK_TOPIC, json.dumps(report).encode(), key=self.name.encode(),
                                     headers=headers_for(correlation))
            await self.audit("risk_report", correlation, gross_exposure=round(self.exposure, 2),
                             fills_seen=self.fills_seen)
            if self.exposure > self.limit:
                await self.audit("risk_alert", correlation, status="alert", gross_exposure=round(self.exposure, 2),
                                 limit=self.limit)


# -- trading engine -------------------------------------------------------------------------------
class TradingEngine(Service, trading_pb2_grpc.TradingEngineServiceServicer):
    grpc_services = (P.DESCRIPTOR.services_by_name["TradingEngineService"].full_name,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order_timeout = float(self.config.extra.get("order_timeout", 10.0))
        self.exchange_address = self.config.extra.get("exchange_address") or ""
        self.pending: dict[str, tuple[float, str]] = {}  # order id -> (accepted at, correlation id)
        self.seen: OrderedDict[str, None] = OrderedDict()  # recent order ids, for duplicates
        self.filled: OrderedDict[str, None] = OrderedDict()
        self.channels = Channels(self.redis)
        self._consumer: AIOKafkaConsumer | None = None
        self._inflight = asyncio.Semaphore(200)
        #: failed calls to peers since the last summary, by peer and cause (logged every few seconds)
        self._failures: Counter[tuple[str, str]] = Counter()
        #: when a call to each peer last failed (the latent bug of the knob forget_when_both_down)
        self._failed_at = {"check": 0.0, "execute": 0.0}
        self._last_fill = time.time()

    def add_servicers(self, server: grpc.aio.Server) -> None:
        trading_pb2_grpc.add_TradingEngineServiceServicer_to_server(self, server)

    async def SubmitOrder(self, request: trading_pb2.SubmitOrderRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext) -> trading_pb2.SubmitOrderResponse:
        await self.require_ready(context)
        metadata = dict(context.invocation_metadata() or ())
        accepted, reason = await self.take(request.order, str(metadata.get(CORRELATION_HEADER, "")))
        return P.SubmitOrderResponse(accepted=accepted, reason=reason)

    async def GetStrategyStatus(self, request: trading_pb2.GetStrategyStatusRequest,  # noqa: N802
                                context: grpc.aio.ServicerContext) -> trading_pb2.GetStrategyStatusResponse:
        c = self.counters
        return P.GetStrategyStatusResponse(orders_accepted=c.get("orders_accepted", 0),
                                           orders_filled=c.get("orders_filled", 0), orders_pending=len(self.pending),
                                           orders_lost=c.get("orders_lost", 0),
                                           duplicates_ignored=c.get("duplicates_ignored", 0))

    def status(self) -> dict[str, Any]:
        return {"pending": len(self.pending)}

    async def start_work(self) -> None:
        self._consumer = AIOKafkaConsumer(ORDERS_TOPIC, FILLS_TOPIC, **kafka_security.options(self.config.kafka),
                                          group_id="trading-engine", auto_offset_reset="latest",
                                          enable_auto_commit=True, **GROUP_TIMEOUTS)
        await self._consumer.start()
        self.spawn(self._consume(self._consumer), "orders and fills")
        self.spawn(self._sweep(), "lost orders")

    async def stop_work(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        await self.channels.close()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            if record.topic == FILLS_TOPIC:
                await self._on_fill(record)
                continue
            correlation = correlation_of(record.headers)
            with self.span("take_order", record.headers, correlation, **{"messaging.kafka.offset": record.offset}):
                try:
                    order = order_from_json(record.value)
                except ValueError as exc:
                    self.count("orders_rejected")
                    await self.audit("order_rejected", correlation, status="error",
                                     reason=f"malformed order: {exc}", offset=record.offset)
                    continue
                await self.take(order, correlation)

    async def take(self, order: trading_pb2.Order, correlation: str) -> tuple[bool, str]:
        """Accept an order once (duplicates are recognised and ignored) and start processing it."""
        if order.order_id in self.seen:
            self.count("duplicates_ignored")
            await self.audit("order_duplicate_ignored", correlation, order_id=order.order_id)
            return False, "duplicate order id"
        remember(self.seen, order.order_id)
        self.pending[order.order_id] = (time.time(), correlation)
        self.count("orders_accepted")
        await self.audit("order_accepted", correlation, order_id=order.order_id, symbol=order.symbol)
        if not self.knobs.stall:
            self.spawn_order(order, correlation)
        return True, ""

    def spawn_order(self, order: trading_pb2.Order, correlation: str) -> None:
        task = asyncio.ensure_future(self._process(order, correlation))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _process(self, order: trading_pb2.Order, correlation: str) -> None:
        """Risk check, then the exchange, each retried with back-off until the order times out."""
        async with self._inflight:
            give_up = self.pending.get(order.order_id, (time.time(), ""))[0] + self.order_timeout
            check = await self._call(give_up, self._check, order)
            if check is None:
                return  # lost: the sweeper reports it
            if not check.approved:
                self.pending.pop(order.order_id, None)
                self.count("orders_rejected")
                await self.audit("order_rejected", correlation, status="rejected", order_id=order.order_id,
                                 reason=check.reason)
                return
            await self._call(give_up, self._execute, order, correlation)

    async def _call(self, give_up: float, call: Any, *args: Any) -> Any:
        delay = 0.1
        name = call.__name__.strip("_")
        while order_id_pending(self, args[0]) and time.time() < give_up:
            try:
                return await call(*args)
            except grpc.aio.AioRpcError as exc:
                log.debug("call failed, retrying: %s", exc)
                self._failures[(name, exc.code().name)] += 1
            except LookupError as exc:
                log.debug("call failed, retrying: %s", exc)
                self._failures[(name, "no address")] += 1
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this order's task is being stopped
                log.debug("call cancelled (its channel was closed), retrying")  # not the order's end
                await asyncio.sleep(min(delay, max(0.0, give_up - time.time())))
                delay = min(delay * 2, 1.0)
                continue
            now = self._failed_at[name] = time.time()
            if self.knobs.forget_when_both_down and both_down(self._failed_at, now):
                self.pending.pop(args[0].order_id, None)  # the latent bug: forgotten, said nowhere
                self.count("orders_forgotten")
                return None
            await asyncio.sleep(min(delay, max(0.0, give_up - time.time())))
            delay = min(delay * 2, 1.0)
        return None

    async def _check(self, order: trading_pb2.Order) -> trading_pb2.CheckOrderResponse:
        address = await self.channels.address("risk-monitor")
        if address is None:
            raise LookupError("risk-monitor is not registered")
        stub = trading_pb2_grpc.RiskMonitorServiceStub(self.channels.channel(address))
        try:
            return await stub.CheckOrder(P.CheckOrderRequest(order=order), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            self.channels.failed(address, exc)
            raise

    async def _execute(self, order: trading_pb2.Order, correlation: str) -> trading_pb2.ExecuteOrderResponse:
        address = self.exchange_address or await self.channels.address("exchange")
        if not address:
            raise LookupError("exchange is not registered")
        stub = trading_pb2_grpc.ExchangeServiceStub(self.channels.channel(address))
        try:
            return await stub.ExecuteOrder(P.ExecuteOrderRequest(order=order, correlation_id=correlation), timeout=3.0)
        except grpc.aio.AioRpcError as exc:
            self.channels.failed(address, exc)
            raise

    async def _on_fill(self, record: ConsumerRecord) -> None:
        try:
            fill = json.loads(record.value or b"")
            order_id = str(fill["order_id"])
        except (ValueError, KeyError, TypeError):
            return
        correlation = correlation_of(record.headers)
        if order_id in self.filled:
            self.count("duplicate_fills")
            await self.audit("duplicate_fill", correlation, status="error", order_id=order_id)
            return
        self._last_fill = time.time()
        accepted = self.pending.pop(order_id, None)
        if accepted is None:
            return  # not ours (another engine's, or from before a restart)
        remember(self.filled, order_id)
        self.count("orders_filled")
        await self.audit("order_filled", correlation or accepted[1], order_id=order_id,
                         latency_ms=round((time.time() - accepted[0]) * 1000, 1))

    async def _sweep(self) -> None:
        said = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            if time.monotonic() - said >= 2.0:
                said = time.monotonic()
                self._say_failures()
            if self.knobs.stall:
                continue  # a stuck engine does not notice its own losses; the trading desk does
            now = time.time()
            lost = 0
            for order_id, (accepted_at, correlation) in list(self.pending.items()):
                if now - accepted_at > self.order_timeout:
                    del self.pending[order_id]
                    self.count("orders_lost")
                    lost += 1
                    await self.audit("order_lost", correlation, status="error", order_id=order_id,
                                     reason=f"no fill within {self.order_timeout:g}s")
            if lost:
                log.warning("%d order(s) lost (no fill within %gs); %d pending; the last fill came %.1fs ago",
                            lost, self.order_timeout, len(self.pending), now - self._last_fill)

    def _say_failures(self) -> None:
        """What failed since the last summary, one line (a call per order would flood the log)."""
        if self._failures:
            log.warning("calls to peers failing, retried: %s",
                        ", ".join(f"{peer} {cause} x{n}" for (peer, cause), n in self._failures.most_common()))
            self._failures.clear()


#: seconds within which failures of both the risk check and the exchange count as "both down"
BOTH_DOWN_WINDOW = 5.0


def both_down(failed_at: dict[str, float], now: float, window: float = BOTH_DOWN_WINDOW) -> bool:
    """Have calls to both peers failed within ``window`` seconds of ``now``?"""
    return all(now - at <= window for at in failed_at.values())


def order_id_pending(engine: TradingEngine, order: trading_pb2.Order) -> bool:
    return order.order_id in engine.pending


def remember(recent: OrderedDict[str, None], key: str, limit: int = 100_000) -> None:
    recent[key] = None
    if len(recent) > limit:
        with contextlib.suppress(KeyError):
            recent.popitem(last=False)


SERVICES: dict[str, type[Service]] = {"exchange": Exchange, "risk-monitor": RiskMonitor,
                                      "trading-engine": TradingEngine}
