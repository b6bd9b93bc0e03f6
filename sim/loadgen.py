"""The load generator: submits orders at a steady rate and checks, end to end, that each one is
filled exactly once. It is the trading desk's view: an order without a fill after ``loss_timeout``
is reported as ``order_lost``, a second fill as ``duplicate_fill`` (audit events, service
``load-generator``), whatever the services in between say about themselves.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from sim import kafka_security
from sim.runtime import Service, correlation_of
from sim.services import FILLS_TOPIC, INBOUND_TOPIC, remember

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD")


class LoadGenerator(Service):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate = float(self.config.extra.get("rate", 20.0))
        self.topic = str(self.config.extra.get("orders_topic") or INBOUND_TOPIC)
        self.loss_timeout = float(self.config.extra.get("loss_timeout", 15.0))
        self.sent: dict[str, float] = {}  # order id -> sent at, until filled or lost
        self.filled: OrderedDict[str, None] = OrderedDict()
        self._consumer: AIOKafkaConsumer | None = None

    async def start_work(self) -> None:
        # fills are read from the end, with no group: only this process's orders matter
        self._consumer = AIOKafkaConsumer(**kafka_security.options(self.config.kafka), enable_auto_commit=False)
        await self._consumer.start()
        for _ in range(100):
            found = self._consumer.partitions_for_topic(FILLS_TOPIC)
            if found:
                break
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 - no public call for one topic
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"topic {FILLS_TOPIC} does not exist")
        partitions = [TopicPartition(FILLS_TOPIC, p) for p in sorted(found)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolved now, so no fill of ours can come before the start position
            await self._consumer.position(tp)
        self.spawn(self._fills(self._consumer), "fills")
        self.spawn(self._submit(), "orders")
        self.spawn(self._sweep(), "lost orders")

    async def stop_work(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def status(self) -> dict[str, Any]:
        return {"outstanding": len(self.sent), "rate": self.rate}

    async def _submit(self) -> None:
        period = 1.0 / self.rate if self.rate > 0 else None
        n = 0
        next_at = time.monotonic()
        while period is not None:
            if self.ready and not self.knobs.stall:
                order_id = str(uuid.uuid4())
                order = {"order_id": order_id, "symbol": SYMBOLS[n % len(SYMBOLS)],
                         "side": "BUY" if n % 2 == 0 else "SELL", "quantity": 1 + n % 5,
                         "price": 100.0 + (n % 17), "client_id": self.name}
                assert self.producer is not None
                await self.producer.send(self.topic, json.dumps(order).encode(), key=order_id.encode(),
                                         headers=[("content-type", b"application/json")])
                self.sent[order_id] = time.time()
                self.count("orders_sent")
                n += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _fills(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            try:
                order_id = str(json.loads(record.value or b"")["order_id"])
            except (ValueError, KeyError, TypeError):
                continue
            if order_id in self.filled:
                self.count("duplicate_fills")
                await self.audit("duplicate_fill", correlation_of(record.headers), status="error", order_id=order_id)
            elif self.sent.pop(order_id, None) is not None:
                remember(self.filled, order_id)
                self.count("orders_filled")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for order_id, sent_at in list(self.sent.items()):
                if now - sent_at > self.loss_timeout:
                    del self.sent[order_id]
                    self.count("orders_lost")
                    await self.audit("order_lost", status="error", order_id=order_id,
                                     reason=f"no fill within {self.loss_timeout:g}s of submission")
