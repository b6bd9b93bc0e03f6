"""Following the project's topics from outside the engine, one way for every reader: ``coordinator
run`` waiting for its result, the demo's running commentary, the live page and the API's
``WatchExecution`` all read results, progress, chaos events, verdicts and audit events through a
``Follower``.

A follower reads the topics it is given from a chosen point (their end, or a time) and hands back
each record decoded into what it is, an ``Update`` of one kind:

==========  ==========================  ===============================
kind        topic                       message
==========  ==========================  ===============================
progress    results                     ``ExecutionProgress``
result      results                     ``ScenarioResult``
chaos       chaos events                ``ChaosEvent``
verdict     verdicts                    ``ExpectationVerdict``
audit       audit events                ``AuditEvent``
==========  ==========================  ===============================

A record it cannot decode, or of another type (a later event kind on the results topic), is
skipped: the agent dead-letters the bad records it reads itself; a reader only follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from agent import codec, kafkaio
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import DecodeError
from agent.settings import Settings

S = events_pb2
PROGRESS, RESULT, CHAOS, VERDICT, AUDIT = "progress", "result", "chaos", "verdict", "audit"
#: the event types of the results topic a follower reads, by their CloudEvents type
_ON_RESULTS = {codec.ce_type_of(S.ExecutionProgress): (PROGRESS, S.ExecutionProgress),
               codec.ce_type_of(S.ScenarioResult): (RESULT, S.ScenarioResult)}


@dataclass(frozen=True, slots=True)
class Update:
    """One record of a followed topic, decoded."""

    kind: str
    message: Any
    record: ConsumerRecord

    @property
    def headers(self) -> dict[str, str]:
        return codec.headers_to_dict(self.record.headers)

    @property
    def written_ms(self) -> int | None:
        """When the record was written (the broker's or producer's timestamp), if it says."""
        return int(self.record.timestamp) if self.record.timestamp and self.record.timestamp > 0 else None


def decode(record: ConsumerRecord, settings: Settings) -> Update | None:
    """The update a record of one of the project's topics is, or None (undecodable, or not followed)."""
    topics = settings.topics
    try:
        if record.topic == topics.scenario_results:
            found = _ON_RESULTS.get(codec.headers_to_dict(record.headers).get("ce_type", ""))
            if found is None:
                return None
            kind, cls = found
            return Update(kind, codec.decode_event(record.value, record.headers, cls), record)
        single = {topics.chaos_events: (CHAOS, S.ChaosEvent), topics.verdicts: (VERDICT, S.ExpectationVerdict),
                  topics.audit_events: (AUDIT, S.AuditEvent)}.get(record.topic)
        if single is None:
            return None
        return Update(single[0], codec.decode_event(record.value, record.headers, single[1]), record)
    except DecodeError:
        return None


class Follower:
    """Reads ``topics`` (the project's own, by their configured names) from a point the caller
    chooses. With ``key``, only that key's partition of each topic is read and only its records
    are handed back (an execution's progress and result are keyed by its id).

        async with Follower(settings, [settings.topics.scenario_results], purpose="cli") as follower:
            await follower.from_end()
            ...publish a request...
            for update in await follower.poll():
                ...

    Entering raises what starting a consumer raises (``KafkaConnectionError`` when no broker answers)
    and ``LookupError`` naming a topic that did not show up within ``topic_timeout`` seconds."""

    def __init__(self, settings: Settings, topics: Sequence[str], *, purpose: str, key: str | None = None,
                 topic_timeout: float = 30.0) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.key = key.encode() if key is not None else None
        self.topic_timeout = topic_timeout
        self.consumer = kafkaio.consumer(settings, purpose=purpose)
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> Follower:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the consumer and take the topics' partitions (what entering does)."""
        await kafkaio.started(self.consumer)
        try:
            for topic in self.topics:
                found = await kafkaio.topic_partitions(self.consumer, topic, timeout=self.topic_timeout)
                self.partitions.extend(found if self.key is None else [_partition_of(self.key, found)])
            self.consumer.assign(self.partitions)
        except BaseException:
            await self.consumer.stop()
            raise

    async def stop(self) -> None:
        await self.consumer.stop()

    async def from_end(self) -> None:
        """Read only what is written from now on (the end offsets are resolved before this returns,
        so that a request published next is not missed)."""
        await self.consumer.seek_to_end(*self.partitions)
        for tp in self.partitions:
            await self.consumer.position(tp)

    async def since(self, ms: int) -> None:
        """Read from the first record written at or after ``ms`` (epoch milliseconds), per partition;
        a partition with nothing since then is read from its end as it was before the lookup (read
        after it, the end would skip a record written in between)."""
        ends = await self.consumer.end_offsets(self.partitions)
        found = await self.consumer.offsets_for_times(dict.fromkeys(self.partitions, max(0, ms)))
        for tp in self.partitions:
            at = found.get(tp)
            self.consumer.seek(tp, at.offset if at is not None else ends[tp])

    async def poll(self, timeout_ms: int = 500, max_records: int | None = None) -> list[Update]:
        """What came since the last poll, waiting up to ``timeout_ms`` for something."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return self._decoded(batch)

    async def read_to_end(self) -> list[Update]:
        """Everything up to the end offsets as they are now (a history replayed, then done)."""
        ends = await self.consumer.end_offsets(self.partitions)
        out: list[Update] = []
        while await self._behind(ends):
            out.extend(self._decoded(await self.consumer.getmany(*self.partitions, timeout_ms=500)))
        return out

    async def _behind(self, ends: dict[TopicPartition, int]) -> bool:
        for tp in self.partitions:
            if await self.consumer.position(tp) < ends[tp]:
                return True
        return False

    def _decoded(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> list[Update]:
        out = []
        for records in batch.values():
            for record in records:
                if self.key is not None and record.key != self.key:
                    continue
                update = decode(record, self.settings)
                if update is not None:
                    out.append(update)
        return out


def _partition_of(key: bytes, partitions: list[TopicPartition]) -> TopicPartition:
    """The partition a producer's default partitioner puts ``key`` in (as the agent's producer did)."""
    ids = [tp.partition for tp in partitions]
    return TopicPartition(partitions[0].topic, int(DefaultPartitioner()(key, ids, ids)))
