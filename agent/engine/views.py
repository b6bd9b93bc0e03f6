"""What the engine's queries answer with: an execution as the API shows it, list filters, and the
updates of one execution read back from the results topic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from agent import codec, vocabulary
from agent._proto.coordinator.v1 import coordinator_service_pb2 as api
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import Unavailable
from agent.kafkaio import client_options, topic_partitions
from agent.settings import Settings
from agent.store import ExecutionRecord

S = events_pb2


def execution(record: ExecutionRecord, result: bytes | None) -> api.Execution:
    """The API's view of an execution record, with its stored result when there is one."""
    out = api.Execution(execution_id=record.execution_id, request_id=record.request_id,
                        scenario_name=record.scenario_name, labels=record.labels,
                        status=_status(record.status))  # type: ignore[arg-type]
    if record.started_at:
        out.started_at.FromNanoseconds(int(record.started_at * 1e9))
    if record.ended_at:
        out.ended_at.FromNanoseconds(int(record.ended_at * 1e9))
    if result:
        out.result.ParseFromString(result)
        out.status = out.result.status
    return out


def _status(name: str) -> int:
    try:
        return vocabulary.status_value(name)
    except ValueError:
        return S.EXECUTION_STATUS_UNSPECIFIED


def matches(record: ExecutionRecord, status: int, scenario_name: str, labels: dict[str, str]) -> bool:
    if status and record.status != vocabulary.status_name(status):
        return False
    if scenario_name and record.scenario_name != scenario_name:
        return False
    return all(record.labels.get(k) == v for k, v in labels.items())


async def follow(settings: Settings, execution: api.Execution) -> AsyncIterator[api.WatchExecutionResponse]:
    """Progress from the results topic (the execution's partition, from its start), then the result.
    An ended execution replays its progress, then its stored result."""
    topic = settings.topics.scenario_results
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = await topic_partitions(consumer, topic, timeout=5)
    except (KafkaError, OSError, LookupError) as exc:
        await consumer.stop()
        raise Unavailable(f"kafka: {exc}") from exc
    try:
        ids = [tp.partition for tp in partitions]
        tp = TopicPartition(topic, int(DefaultPartitioner()(execution.execution_id.encode(), ids, ids)))
        consumer.assign([tp])
        started_ms = int(execution.started_at.ToMilliseconds()) - 1000
        found = await consumer.offsets_for_times({tp: max(0, started_ms)})
        if found.get(tp) is not None:
            consumer.seek(tp, found[tp].offset)
        else:
            await consumer.seek_to_end(tp)
        if execution.HasField("result"):
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for update in _read(await consumer.getmany(tp, timeout_ms=500), execution.execution_id):
                    if update.HasField("progress"):
                        yield update
            yield api.WatchExecutionResponse(result=execution.result)
            return
        while True:
            for update in _read(await consumer.getmany(tp, timeout_ms=500), execution.execution_id):
                yield update
                if update.HasField("result"):
                    return
    finally:
        await consumer.stop()


def _read(batch: dict[TopicPartition, list[Any]], execution_id: str) -> list[api.WatchExecutionResponse]:
    out = []
    for records in batch.values():
        for record in records:
            if record.key != execution_id.encode():
                continue
            kind = codec.headers_to_dict(record.headers).get("ce_type")
            try:
                if kind == codec.ce_type_of(S.ExecutionProgress):
                    out.append(api.WatchExecutionResponse(
                        progress=codec.decode_event(record.value, record.headers, S.ExecutionProgress)))
                elif kind == codec.ce_type_of(S.ScenarioResult):
                    out.append(api.WatchExecutionResponse(
                        result=codec.decode_event(record.value, record.headers, S.ScenarioResult)))
            except Exception:  # noqa: BLE001, S112 - an undecodable record is not this watcher's problem
                continue
    return out
