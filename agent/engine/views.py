"""What the engine's queries answer with: an execution as the API shows it, list filters, and the
updates of one execution read back from the results topic."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka.errors import KafkaError

from agent import vocabulary
from agent._proto.coordinator.v1 import coordinator_service_pb2 as api
from agent._proto.coordinator.v1 import events_pb2
from agent.errors import Unavailable
from agent.follow import PROGRESS, Follower
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
    follower = Follower(settings, [settings.topics.scenario_results], purpose="watch", key=execution.execution_id,
                        topic_timeout=5)
    try:
        await follower.start()
    except (KafkaError, OSError, LookupError) as exc:
        raise Unavailable(f"kafka: {exc}") from exc
    try:
        await follower.since(int(execution.started_at.ToMilliseconds()) - 1000)
        if execution.HasField("result"):
            for update in await follower.read_to_end():
                if update.kind == PROGRESS:
                    yield api.WatchExecutionResponse(progress=update.message)
            yield api.WatchExecutionResponse(result=execution.result)
            return
        while True:
            for update in await follower.poll():
                if update.kind == PROGRESS:
                    yield api.WatchExecutionResponse(progress=update.message)
                else:
                    yield api.WatchExecutionResponse(result=update.message)
                    return
    finally:
        await follower.stop()
