"""Schedules without Kafka or Redis: the document, its ticks, jitter, windows and the requests ticks
make (the agents firing them: tests/integration/test_schedules.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import codec, schedules
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.errors import ScenarioError
from agent.settings import Settings

DOC = """\
apiVersion: coordinator/v1
kind: Schedule
metadata: {name: nightly, labels: {team: trading}}
spec:
  scenario: restart-risk-monitor-during-trading
  parameters: {observation: 5s, attempts: 3}
  every: 20s
  jitter: 5s
"""


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_document_becomes_the_schedule_the_topic_carries() -> None:
    one = schedules.load_schedule(DOC, "nightly.yaml", requester="cli:ops")
    assert (one.name, one.scenario_name, one.requester, dict(one.labels)) == (
        "nightly", "restart-risk-monitor-during-trading", "cli:ops", {"team": "trading"})
    assert dict(one.parameters) == {"observation": "5s", "attempts": "3"}
    assert one.interval.ToSeconds() == 20 and one.jitter.ToSeconds() == 5 and one.updated_at.seconds > 0
    assert schedules.describe(one) == "every 20s (jitter 5s)"


def test_a_scenario_file_is_read_relative_to_the_schedule_and_sent_inline(tmp_path: Path) -> None:
    (tmp_path / "gated.yaml").write_text("apiVersion: coordinator/v1\n")
    one = schedules.load_schedule(DOC.replace("restart-risk-monitor-during-trading", "gated.yaml"), base=tmp_path)
    assert one.scenario_yaml == "apiVersion: coordinator/v1\n"
    with pytest.raises(ScenarioError, match="cannot read"):
        schedules.load_schedule(DOC.replace("restart-risk-monitor-during-trading", "gone.yaml"), base=tmp_path)
    with pytest.raises(ScenarioError, match="names a scenario of its catalog, not a file"):  # over the API
        schedules.load_schedule(DOC.replace("restart-risk-monitor-during-trading", "/etc/passwd.yaml"))


def test_every_problem_is_reported_with_its_line_and_field_path() -> None:
    broken = DOC.replace("every: 20s", "every: 20s\n  cron: '61 * * * *'").replace(
        "jitter: 5s", "jitter: 5s\n  window: {start: '25:00', end: '05:00'}\n  pased: true")
    with pytest.raises(ScenarioError) as caught:
        schedules.load_schedule(broken, "nightly.yaml")
    said = {(i.line, i.path, i.message) for i in caught.value.issues}
    assert (8, "spec.cron", "'61 * * * *' is not a five-field cron expression (minute hour day month weekday)") \
        in said, said
    assert (10, "spec.window.start", "expected a time of day as HH:MM (UTC), got '25:00'") in said, said
    assert any(p == "spec.pased" and "unknown field 'pased'; did you mean 'paused'?" in m for _, p, m in said), said
    with pytest.raises(ScenarioError, match="give exactly one of 'every'"):
        schedules.load_schedule(DOC.replace("  every: 20s\n", ""))
    with pytest.raises(ScenarioError, match=r"jitter \(30s\) must be shorter than the interval \(20s\)"):
        schedules.load_schedule(DOC.replace("jitter: 5s", "jitter: 30s"))


def test_interval_ticks_are_aligned_to_the_epoch_so_every_agent_counts_the_same() -> None:
    one = schedules.load_schedule(DOC)
    start = at("2026-12-06T20:00:05")
    assert schedules.ticks(one, start, start + 60) == [at("2026-12-06T20:00:20"), at("2026-12-06T20:00:40"),
                                                      at("2026-12-06T20:01:00")]
    assert schedules.ticks(one, at("2026-12-06T20:00:20"), at("2026-12-06T20:00:20")) == []
    assert len(schedules.ticks(one, start, start + 120)) == 6


def test_cron_ticks_are_in_utc() -> None:
    one = schedules.load_schedule(DOC.replace("every: 20s", "cron: '30 2 * * 1-5'").replace("jitter: 5s", ""))
    # Friday 4 December 2026 -> the next weekday 02:30 is Monday the 7th
    assert schedules.ticks(one, at("2026-12-04T03:00:00"), at("2026-12-08T03:00:00")) == [
        at("2026-12-07T02:30:00"), at("2026-12-08T02:30:00")]
    assert schedules.describe(one) == "cron 30 2 * * 1-5"


def test_jitter_is_the_same_for_a_tick_everywhere_and_within_its_bound() -> None:
    one = schedules.load_schedule(DOC)
    delays = [schedules.jitter_of(one, at("2026-12-06T20:00:00") + 20 * k) for k in range(200)]
    assert all(0 <= d < 5 for d in delays) and len(set(delays)) > 150
    assert schedules.jitter_of(one, at("2026-12-06T20:00:00")) == delays[0]
    assert schedules.jitter_of(schedules.load_schedule(DOC.replace("  jitter: 5s\n", "")), 0.0) == 0.0


def test_a_window_may_span_midnight() -> None:
    night = schedules.load_schedule(DOC + "  window: {start: '22:00', end: '02:00'}\n")
    assert [schedules.in_window(night, at(f"2026-12-06T{t}")) for t in ("21:59:59", "22:00:00", "01:59:00",
                                                                          "02:00:00")] == [False, True, True, False]
    day = schedules.load_schedule(DOC + "  window: {start: '09:00', end: '17:00'}\n")
    assert schedules.in_window(day, at("2026-12-06T12:00:00")) and not schedules.in_window(day, at("2026-12-06T18:00"))
    assert schedules.describe(day) == "every 20s (jitter 5s), 09:00-17:00 UTC"


def test_a_tick_makes_an_ordinary_request_whose_id_names_the_tick() -> None:
    one = schedules.load_schedule(DOC)
    request = schedules.request_for(one, at("2026-12-06T20:00:20"))
    assert request.request_id == f"schedule-nightly-{int(at('2026-12-06T20:00:20') * 1000)}"
    assert request.scenario_name == "restart-risk-monitor-during-trading"
    assert request.requester == "schedule:nightly"
    assert dict(request.labels) == {"team": "trading", "schedule": "nightly", "schedule-tick": "2026-12-06T20:00:20Z"}
    assert request.parameters["observation"].string_value == "5s"


def test_the_topic_folds_to_the_latest_schedule_of_each_name_and_a_tombstone_deletes() -> None:
    settings = Settings()
    one = schedules.load_schedule(DOC)
    found: dict[str, S.Schedule] = {}
    event = schedules.encode(one, settings, source="/test")
    schedules.fold(found, event.key, event.value, event.headers)
    one.paused = True
    event = schedules.encode(one, settings, source="/test")
    schedules.fold(found, event.key, event.value, event.headers)
    assert found["nightly"].paused is True
    schedules.fold(found, b"bad", b"\xff not a schedule", [("content-type", b"application/json")])
    assert set(found) == {"nightly"}
    schedules.fold(found, b"nightly", None, None)
    assert found == {}
    assert codec.ce_type_of(S.Schedule) == "coordinator.v1.Schedule"


async def test_a_tick_s_request_is_retried_through_a_kafka_outage_while_the_tick_can_still_be_caught_up() -> None:
    import time
    from types import SimpleNamespace

    from aiokafka.errors import KafkaConnectionError

    sent: list[str] = []
    failures = iter([KafkaConnectionError("broker away"), KafkaConnectionError("broker away")])

    async def request(message: S.ScenarioRequest) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        sent.append(message.request_id)

    scheduler = schedules.Scheduler(Settings(), SimpleNamespace(publisher=SimpleNamespace(request=request)))
    one = schedules.load_schedule(DOC)
    tick = time.time()
    await scheduler._publish(schedules.request_for(one, tick), tick)
    assert sent == [f"schedule-nightly-{schedules.tick_ms(tick)}"]
    failures = iter([KafkaConnectionError("broker away")])
    with pytest.raises(KafkaConnectionError):  # too late to catch the tick up: the outage is said
        await scheduler._publish(schedules.request_for(one, tick - 120), tick - 120)
