"""The local stack's optional parts as the CLI names them, and the Collector's configuration."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent import cli
from agent.devstack import stack


def test_the_cli_offers_every_optional_part_and_every_part_of_the_stack() -> None:
    assert cli._EXTRAS == stack.EXTRAS  # noqa: SLF001 - kept apart so that the CLI starts fast
    assert set(cli._PARTS) == {"kafka", "kafka-2", "kafka-3", *stack.COMPONENTS[1:], *stack.EXTRAS}  # noqa: SLF001


def test_the_collector_writes_logs_and_spans_to_the_topics_the_stack_tells_the_worker() -> None:
    config = yaml.safe_load(stack._otel_config(["127.0.0.1:9092"], 4317, 4318, Path("/s/otel/traces.jsonl")))  # noqa: SLF001
    assert config["receivers"]["otlp"]["protocols"] == {"grpc": {"endpoint": "127.0.0.1:4317"},
                                                        "http": {"endpoint": "127.0.0.1:4318"}}
    kafka = config["exporters"]["kafka"]
    assert kafka["brokers"] == ["127.0.0.1:9092"]
    assert (kafka["logs"]["topic"], kafka["traces"]["topic"]) == (stack.OTLP_LOGS_TOPIC, stack.OTLP_SPANS_TOPIC)
    assert {kafka["logs"]["encoding"], kafka["traces"]["encoding"]} == {"otlp_proto"}
    for pipeline in config["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(config["receivers"])
        assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert config["service"]["telemetry"]["metrics"] == {"level": "none"}, "no metrics port to clash between stacks"
    assert config["exporters"]["file"]["path"] == "/s/otel/traces.jsonl"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["kafka", "file"], "spans to the file too"
