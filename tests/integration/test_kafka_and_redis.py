from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from agent import codec, topics
from agent._proto.coordinator.v1 import events_pb2
from agent.settings import Settings
from tests.helpers.kafka import produce, read_at


async def test_an_event_published_to_the_broker_reads_back_with_headers_intact(topics_applied: Settings) -> None:
    settings = topics_applied
    correlation_id = str(uuid.uuid4())
    event = events_pb2.ChaosEvent(correlation_id=correlation_id, type=events_pb2.CHAOS_EVENT_TYPE_INJECTED,
                                  target="trading-engine", fault="kill")
    out = codec.encode_event(event, key=correlation_id, source="/coordinator/test", correlation_id=correlation_id)
    sent = await produce(settings.kafka_bootstrap_servers, settings.topics.chaos_events, out.value,
                         key=out.key, headers=out.headers)

    record = await read_at(settings.kafka_bootstrap_servers, settings.topics.chaos_events, sent.partition, sent.offset)

    assert record.key == correlation_id.encode()
    assert list(record.headers) == out.headers
    assert codec.headers_to_dict(record.headers)["correlation-id"] == correlation_id
    assert codec.decode_event(record.value, record.headers, events_pb2.ChaosEvent) == event


async def test_a_json_event_reads_back_as_the_same_message(topics_applied: Settings) -> None:
    settings = topics_applied
    request = events_pb2.ScenarioRequest(request_id=str(uuid.uuid4()), scenario_name="kill-trading-engine")
    out = codec.encode_event(request, key=request.request_id, source="/t", content_type=codec.CONTENT_JSON)
    sent = await produce(settings.kafka_bootstrap_servers, settings.topics.scenario_requests, out.value,
                         key=out.key, headers=out.headers)
    record = await read_at(settings.kafka_bootstrap_servers, settings.topics.scenario_requests,
                           sent.partition, sent.offset)
    assert record.value.startswith(b"{")
    assert codec.decode_event(record.value, record.headers, events_pb2.ScenarioRequest) == request


async def test_redis_keeps_what_is_written(settings: Settings) -> None:
    client = aioredis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
    key = f"test:{uuid.uuid4()}"
    try:
        await client.hset(key, mapping={"correlation_id": "c-1", "owner": "coordinator-1"})
        await client.expire(key, 30)
        assert await client.hgetall(key) == {"correlation_id": "c-1", "owner": "coordinator-1"}
        assert 0 < await client.ttl(key) <= 30
    finally:
        await client.delete(key)
        await client.aclose()


async def test_topics_apply_creates_the_contract_and_is_idempotent(settings: Settings) -> None:
    renamed = settings.model_copy(update={"topics": settings.topics.model_copy(
        update={"dead_letters": f"test.dead-letters.{uuid.uuid4().hex[:8]}"})})
    first = {o.topic: o.action for o in await topics.apply(renamed)}
    second = await topics.apply(renamed)

    assert first[renamed.topics.dead_letters] == "created"
    assert {o.action for o in second} == {"exists"}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([renamed.topics.dead_letters, renamed.topics.chaos_events])
        partitions = {d["topic"]: len(d["partitions"]) for d in described}
        configs = await admin.describe_configs([_topic_resource(renamed.topics.dead_letters)])
    finally:
        await admin.close()
    assert partitions == {renamed.topics.dead_letters: 3, renamed.topics.chaos_events: 6}
    entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
    assert entries["retention.ms"] == "2592000000"
    assert entries["cleanup.policy"] == "delete"


def _topic_resource(name: str):  # noqa: ANN202
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    return ConfigResource(ConfigResourceType.TOPIC, name)


async def test_a_record_written_while_a_follower_positions_itself_is_read_not_skipped(
    stack_env: dict[str, str]
) -> None:
    """``Follower.since`` looks up the first record at or after a time, and seeks a partition with none to
    its end. A record written between the lookup and the reading of the ends was skipped (the live page
    then never showed a verdict written as it connected); now the ends are read first."""
    from agent.follow import VERDICT, Follower
    from tests.helpers.engine import applied_settings, engine_env

    settings = await applied_settings(engine_env(stack_env, "http://127.0.0.1:1/RPC2"))
    verdict = events_pb2.ExpectationVerdict(execution_id=str(uuid.uuid4()), expectation_name="written-meanwhile",
                                            status=events_pb2.VERDICT_STATUS_PASSED)
    out = codec.encode_event(verdict, key=verdict.execution_id, source="/t")
    async with Follower(settings, [settings.topics.verdicts], purpose="test") as follower:
        lookup = follower.consumer.offsets_for_times

        async def written_right_after_the_lookup(*args: object, **kwargs: object) -> object:
            found = await lookup(*args, **kwargs)
            await produce(settings.kafka_bootstrap_servers, settings.topics.verdicts, out.value, key=out.key,
                          headers=out.headers)
            return found

        follower.consumer.offsets_for_times = written_right_after_the_lookup  # type: ignore[method-assign]
        await follower.since(int(time.time() * 1000) - 60_000)
        read = []
        deadline = time.monotonic() + 15
        while not read and time.monotonic() < deadline:
            read = await follower.poll(timeout_ms=500)
    assert [(u.kind, u.message.expectation_name) for u in read] == [(VERDICT, "written-meanwhile")]
