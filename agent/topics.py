"""The topics contract (``topics/asyncapi.yaml``) and ``coordinator topics apply``.

Topics are created from the AsyncAPI document's Kafka channel bindings: partitions, replicas
(capped at the number of brokers and at ``topic_replication_factor``) and topic configuration;
with three replicas or more, ``min.insync.replicas`` is 2 unless the contract says otherwise.
Applying is idempotent: existing topics are left as they are, and any difference from the contract
(partition count) is reported, never changed behind the user's back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agent import kafkaio
from agent.errors import ContractError, Unavailable
from agent.kafkaio import diagnose
from agent.settings import Settings

_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TopicSpec:
    channel: str
    name: str
    partitions: int
    replicas: int
    config: dict[str, str] = field(default_factory=dict)
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyOutcome:
    topic: str
    action: str  # created | exists | drift
    detail: str = ""


def contract_path() -> Path:
    configured = os.environ.get("COORDINATOR_TOPICS_CONTRACT")
    if configured:
        return Path(configured)
    for candidate in (_ROOT / "topics" / "asyncapi.yaml", Path.cwd() / "topics" / "asyncapi.yaml"):
        if candidate.exists():
            return candidate
    raise ContractError("topics contract not found; set COORDINATOR_TOPICS_CONTRACT to topics/asyncapi.yaml")


def load_contract(path: Path | None = None, settings: Settings | None = None) -> list[TopicSpec]:
    path = path or contract_path()
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"cannot read topics contract '{path}': {exc}") from exc
    if not isinstance(doc, dict) or not str(doc.get("asyncapi", "")).startswith("3."):
        raise ContractError(f"'{path}' is not an AsyncAPI 3 document")
    names = settings.topics.by_channel() if settings else {}
    messages = doc.get("components", {}).get("messages", {})
    specs = []
    for channel_id, channel in (doc.get("channels") or {}).items():
        binding = ((channel.get("bindings") or {}).get("kafka")) or {}
        where = f"{path}: channels.{channel_id}"
        if "partitions" not in binding:
            raise ContractError(f"{where}.bindings.kafka has no 'partitions'")
        refs = [m.get("$ref", "").rsplit("/", 1)[-1] for m in (channel.get("messages") or {}).values()]
        for ref in refs:
            if ref not in messages:
                raise ContractError(f"{where}.messages refers to unknown message '{ref}'")
        specs.append(TopicSpec(
            channel=channel_id,
            name=names.get(channel_id) or binding.get("topic") or channel["address"],
            partitions=int(binding["partitions"]),
            replicas=int(binding.get("replicas", 1)),
            config={k: _config_value(v) for k, v in (binding.get("topicConfiguration") or {}).items()},
            messages=tuple(messages[ref].get("x-protobuf-message", ref) for ref in refs),
        ))
    return specs


async def apply(settings: Settings, specs: list[TopicSpec] | None = None) -> list[ApplyOutcome]:
    specs = specs if specs is not None else load_contract(settings=settings)
    admin = kafkaio.admin(settings, purpose="topics")
    try:
        await admin.start()
    except KafkaError as exc:  # "Unable to bootstrap" says nothing: ask the broker why
        why = await diagnose(settings.kafka_bootstrap_servers, settings.kafka)
        await admin.close()
        raise Unavailable(f"Kafka at {settings.kafka_bootstrap_servers}: {why or exc}") from exc
    try:
        cluster = await admin.describe_cluster()
        brokers = max(1, len(cluster.get("brokers", [])))
        existing = await _partition_counts(admin)
        outcomes: list[ApplyOutcome] = []
        for spec in specs:
            if spec.name in existing:
                outcomes.append(_compare(spec, existing[spec.name]))
                continue
            replicas = min(spec.replicas, brokers, settings.topic_replication_factor)
            config = dict(spec.config)
            if replicas >= 3:  # acks=all then waits for two copies: losing one broker loses nothing
                config.setdefault("min.insync.replicas", "2")
            topic = NewTopic(spec.name, spec.partitions, replicas, topic_configs=config)
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                outcomes.append(ApplyOutcome(spec.name, "exists", "created concurrently by another client"))
                continue
            outcomes.append(ApplyOutcome(spec.name, "created", f"{spec.partitions} partitions, rf {replicas}"))
        return outcomes
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    names = [n for n in await admin.list_topics() if not n.startswith("__")]
    if not names:
        return {}
    described = await admin.describe_topics(names)
    return {d["topic"]: len(d.get("partitions", [])) for d in described if not d.get("error_code")}


def _compare(spec: TopicSpec, partitions: int) -> ApplyOutcome:
    if partitions != spec.partitions:
        return ApplyOutcome(spec.name, "drift",
                            f"has {partitions} partitions, the contract says {spec.partitions}; left unchanged")
    return ApplyOutcome(spec.name, "exists", f"{partitions} partitions")


def _config_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
