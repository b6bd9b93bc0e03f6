"""The configuration-service client against a small real HTTP server (the ecosystem's API shape)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.config_service import ConfigService, parse_answer
from agent.policy import PolicySource
from agent.settings import Settings
from tests.helpers.config_server import ConfigServer as Server


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = Server()
    await running.start()
    yield running
    await running.stop()


def answer(key: str, value: Any, kind: str) -> dict[str, Any]:
    return {"key": key, "value": value, "type": kind, "environment": "staging", "last_updated": "2026-11-21T06:00:00Z"}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_values_are_typed_cached_for_the_ttl_and_asked_for_by_environment(server: Server) -> None:
    server.values = {"max_concurrent_executions": answer("max_concurrent_executions", "3", "number"),
                     "dry": answer("dry", "true", "boolean"),
                     "allowed_targets": answer("allowed_targets", json.dumps(["risk-*"]), "json")}
    clock = Clock()
    service = ConfigService(f"http://127.0.0.1:{server.port}", "staging", ttl=30, clock=clock)
    try:
        limit = await service.get("max_concurrent_executions")
        assert limit is not None and limit.value == 3.0 and limit.environment == "staging"
        assert (await service.get("dry")).value is True  # type: ignore[union-attr]
        assert (await service.get("allowed_targets")).value == ["risk-*"]  # type: ignore[union-attr]
        await service.get("max_concurrent_executions")
        assert server.hits["max_concurrent_executions"] == 1, "cached within the TTL"
        clock.now += 31
        await service.get("max_concurrent_executions")
        assert server.hits["max_concurrent_executions"] == 2, "asked again after the TTL"
        assert set(server.environments) == {"staging"}
    finally:
        await service.aclose()


async def test_the_policy_follows_the_service_and_falls_back_to_local_settings_when_it_is_absent_or_down(
    server: Server
) -> None:
    settings = Settings(allowed_targets=["*"], max_concurrent_executions=20)
    clock = Clock()
    service = ConfigService(f"http://127.0.0.1:{server.port}", ttl=10, clock=clock)
    policy = PolicySource(settings, service)

    def now() -> tuple[list[str], int]:
        return list(policy.current.allowed_targets), policy.current.max_concurrent_executions

    try:
        await policy.refresh()  # nothing configured there: 404s
        assert now() == (["*"], 20)

        server.values = {"allowed_targets": answer("allowed_targets", "risk-monitor, trading-*", "string"),
                         "max_concurrent_executions": answer("max_concurrent_executions", 2, "number")}
        clock.now += 11
        await policy.refresh()
        assert now() == (["risk-monitor", "trading-*"], 2)
        assert settings.allowed_targets == ["*"], "the settings themselves never change"
        assert policy.current.refused("exchange", "toxiproxy", {"proxy": "x"}) is not None

        server.values = {"allowed_targets": 503, "max_concurrent_executions": answer("max_concurrent_executions",
                                                                                    "lots", "number")}
        clock.now += 11
        await policy.refresh()
        assert now() == (["*"], 20), "errors: local values"

        server.values = {"allowed_targets": answer("allowed_targets", ["exchange"], "json")}
        clock.now += 11
        await policy.refresh()
        assert now()[0] == ["exchange"]
        await server.stop()  # the service goes away
        clock.now += 11
        await policy.refresh()
        assert now()[0] == ["*"], "down: the local allow-list again"
    finally:
        await service.aclose()


def test_unusable_answers_say_what_is_wrong() -> None:
    from agent.errors import ConfigValueError as ConfigError

    for body, message in [({"key": "k"}, "the answer has no value"),
                          (answer("k", "many", "number"), "value 'many' is not a number"),
                          (answer("k", "{", "json"), "value '{' is not a json"),
                          (answer("k", 1, "yaml"), "unknown type 'yaml'")]:
        with pytest.raises(ConfigError, match=message):
            parse_answer("k", body)
    assert ConfigService(None).base_url is None
