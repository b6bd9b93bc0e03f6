from __future__ import annotations

import json

import pytest

from agent.logs import configure_logging, get_logger, redact
from agent.settings import Settings, to_seconds


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_KAFKA_BOOTSTRAP_SERVERS", "10.0.0.5:9092")
    monkeypatch.setenv("COORDINATOR_TOPICS__SCENARIO_RESULTS", "team-a.results.v1")
    monkeypatch.setenv("COORDINATOR_READY_CHECK_TIMEOUT", "750ms")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "10.0.0.5:9092"
    assert settings.topics.scenario_results == "team-a.results.v1"
    assert settings.topics.scenario_requests == "coordinator.scenario-requests.v1"
    assert settings.ready_check_timeout == 0.75


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600),
                                                ("1e-3s", 0.001),
                                                (12, 12.0), ("1.5", 1.5)])
def test_durations_are_normalised_to_seconds(text: object, seconds: float) -> None:
    assert to_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", -3, True, "", None])
def test_bad_durations_name_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        to_seconds(bad)


def test_secrets_never_reach_the_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    get_logger("test").info("connecting", redis_url="redis://app:hunter2@cache:6379/0",
                            headers={"Authorization": "Bearer abc.def"}, api_token="s3cr3t")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "hunter2" not in line and "abc.def" not in line and "s3cr3t" not in line
    assert record["redis_url"] == "redis://app:***@cache:6379/0"
    assert record["event"] == "connecting"


def test_redaction_leaves_ordinary_values_alone() -> None:
    assert redact({"target": "risk-monitor", "n": 3}) == {"target": "risk-monitor", "n": 3}


def test_redis_url_is_hidden_from_settings_repr() -> None:
    settings = Settings(redis_url="redis://:pw@h:1/0")
    assert "pw" not in repr(settings)


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    from agent.devstack.stack import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
