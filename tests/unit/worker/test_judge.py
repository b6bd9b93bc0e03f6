"""The judge on a plain dict (the worker gives it faust's changelogged table): watches meet rows in
either order, repeats count once, ticks fire deadlines; the inbox codec round trip."""

from __future__ import annotations

import json

import pytest

from agent.errors import DecodeError
from agent.expectations import Verdict, Watch
from agent.worker import judge as inbox
from agent.worker.judge import Judge, Row, RowsMessage, TickMessage, WatchMessage, routing_key, row_keys

T0 = 1_800_000_000.0
GRACE = 1.0


def watch(**overrides: object) -> Watch:
    fields: dict = {"execution_id": "e1", "correlation_id": "c1", "name": "back", "kind": "appears",
                    "injected_at": T0, "deadline": T0 + 10, "target_service": "risk-monitor",
                    "event_type": "service_ready", "service": "risk-monitor", "attribution": "any"}
    fields.update(overrides)
    return Watch(**fields)


def row(at: float, kind: str = "service_ready", service: str = "risk-monitor", identity: str = "") -> Row:
    return Row(service, kind, T0 + at, "", {}, identity)


class Verdicts(list[tuple[str, Verdict]]):
    async def __call__(self, watch: Watch, verdict: Verdict) -> None:
        self.append((watch.name, verdict))


@pytest.fixture
def verdicts() -> Verdicts:
    return Verdicts()


async def test_a_watch_passes_on_its_event_and_leaves_the_table(verdicts: Verdicts) -> None:
    table: dict = {}
    judge = Judge(table, verdicts, GRACE)
    w = watch()
    key = routing_key(w)
    await judge.on_watch(key, w, now=T0 + 1)
    assert list(table[key]) == ["c1/back"] and verdicts == []
    await judge.on_rows(key, [row(0.5, kind="heartbeat"), row(3.0)], now=T0 + 3)
    assert [(name, v.status) for name, v in verdicts] == [("back", "PASSED")]
    assert verdicts[0][1].time_to_recover == 3.0
    assert table == {}, "a decided watch leaves the table"


async def test_events_that_arrive_before_their_watch_are_replayed_to_it(verdicts: Verdicts) -> None:
    judge = Judge({}, verdicts, GRACE)
    for key in row_keys(row(2.0)):
        await judge.on_rows(key, [row(-5.0, kind="service_ready"), row(2.0)], now=T0 + 2)
    await judge.on_watch("svc:risk-monitor", watch(), now=T0 + 2.5)
    assert [v.status for _, v in verdicts] == ["PASSED"] and verdicts[0][1].time_to_recover == 2.0, \
        "the event from before the injection is not recovery"


async def test_a_repeated_delivery_counts_once(verdicts: Verdicts) -> None:
    table: dict = {}
    judge = Judge(table, verdicts, GRACE)
    once = watch(name="once", kind="count", max_count=1, min_count=None)
    await judge.on_watch("svc:risk-monitor", once, now=T0)
    twice = [row(1.0, identity="/risk#7"), row(1.0, identity="/risk#7")]
    await judge.on_rows("svc:risk-monitor", twice, now=T0 + 1)
    await judge.on_tick(list(table), watermark=T0 + 20, now=T0 + 12)
    assert [(v.status, v.count) for _, v in verdicts] == [("PASSED", 1)]


async def test_a_tick_past_the_deadline_decides_and_tells_a_silent_trail_from_a_failure(verdicts: Verdicts) -> None:
    table: dict = {}
    judge = Judge(table, verdicts, GRACE)
    await judge.on_watch("svc:risk-monitor", watch(name="quiet"), now=T0)
    await judge.on_tick(list(table), watermark=T0 + 5, now=T0 + 10.5)
    assert verdicts == [], "the grace period is not over"
    await judge.on_tick(list(table), watermark=T0 + 5, now=T0 + 11.5)
    assert [(n, v.status) for n, v in verdicts] == [("quiet", "INCONCLUSIVE")]
    assert "silent" in verdicts[0][1].reason

    await judge.on_watch("svc:risk-monitor", watch(name="down", injected_at=T0 + 20, deadline=T0 + 30), now=T0 + 20)
    await judge.on_rows("svc:risk-monitor", [row(21.0, kind="heartbeat")], now=T0 + 21)
    await judge.on_tick(list(table), watermark=T0 + 40, now=T0 + 32)
    assert [(n, v.status) for n, v in verdicts][1:] == [("down", "FAILED")]
    assert "did send audit events" in verdicts[1][1].reason and table == {}


def test_the_inbox_codec_round_trips_every_message_and_refuses_anything_else() -> None:
    w = watch()
    assert inbox.decode(inbox.encode(WatchMessage(w))) == WatchMessage(w)
    rows = [row(1.0, identity="/x#1"), row(2.0)]
    assert inbox.decode(inbox.encode(RowsMessage({"svc:a": rows}, 1.5, 2.5))) == RowsMessage({"svc:a": rows}, 1.5, 2.5)
    # the earlier form: one routing key's rows, the key in the record's key
    assert inbox.decode(json.dumps({"kind": "rows", "rows": rows}).encode()) == RowsMessage({"": rows})
    assert inbox.decode(inbox.encode(TickMessage(T0))) == TickMessage(T0)
    for bad in (b"{", b'{"kind": "what"}', b'{"kind": "rows", "rows": [[1]]}',
                b'{"kind": "rows", "keys": {"k": [[1]]}}', b'{"kind": "rows", "keys": [1]}', b"[]"):
        with pytest.raises(DecodeError):
            inbox.decode(bad)


def test_the_worker_refuses_faust_or_aiokafka_releases_whose_internals_it_was_not_built_on() -> None:
    from agent.errors import ConfigError
    from agent.worker.app import check_versions

    check_versions()  # the installed ones
    check_versions({"faust": "0.15.9", "aiokafka": "0.14.2"})
    with pytest.raises(ConfigError, match=r"faust >= 0.15.3, < 0.16 .*found 0.16.0"):
        check_versions({"faust": "0.16.0", "aiokafka": "0.14.0"})
    with pytest.raises(ConfigError, match="found 0.13.1"):
        check_versions({"faust": "0.15.3", "aiokafka": "0.13.1"})


async def test_the_ended_incarnations_words_heard_before_the_watch_are_kept_with_it(verdicts: Verdicts) -> None:
    table: dict = {}
    judge = Judge(table, verdicts, GRACE)
    last_words = Row("risk-monitor", "service_ready", T0 + 0.1, "", {}, "/rm#1", "4242")
    await judge.on_rows("svc:risk-monitor", [last_words], now=T0 + 0.1)
    await judge.on_watch("svc:risk-monitor", watch(ended_instance="4242"), now=T0 + 1)
    assert table["svc:risk-monitor"]["c1/back"]["old_words"] == 1, "what the watch learnt on arrival is stored"
    await judge.on_tick(list(table), watermark=T0 + 20, now=T0 + 12)
    [(_, verdict)] = verdicts
    assert verdict.status == "INCONCLUSIVE" and "came from the incarnation the fault ended" in verdict.reason


async def test_the_worker_also_says_whether_the_target_reacted_at_all(verdicts: Verdicts) -> None:
    from agent._proto.coordinator.v1 import events_pb2
    from agent.worker.judge import watches_from

    event = events_pb2.ChaosEvent(execution_id="e1", correlation_id="c1", service="risk-monitor",
                                  type=events_pb2.CHAOS_EVENT_TYPE_INJECTED, expectations=[events_pb2.Expectation(
                                      name="back", kind=events_pb2.EXPECTATION_KIND_APPEARS, event_type="service_ready",
                                      service="risk-monitor")])
    event.injected_at.FromSeconds(int(T0))
    event.expectations[0].within.FromSeconds(10)
    back, reaction = watches_from(event)
    assert (reaction.name, reaction.deadline, reaction.service) == ("@reaction", back.deadline, "risk-monitor")
    table: dict = {}
    judge = Judge(table, verdicts, GRACE)
    await judge.on_watch(routing_key(reaction), reaction, now=T0)
    await judge.on_rows("svc:risk-monitor", [Row("risk-monitor", "process_started", T0 + 1, "", {"platform": "x"})],
                        now=T0 + 1)
    assert verdicts == [], "the platform speaking about it is not the service reacting"
    await judge.on_rows("svc:risk-monitor", [row(2.0, kind="heartbeat")], now=T0 + 2)
    assert [(n, v.status) for n, v in verdicts] == [("@reaction", "PASSED")]
    assert watches_from(events_pb2.ChaosEvent(service="x", type=events_pb2.CHAOS_EVENT_TYPE_INJECTED)) == [], \
        "no expectations: nobody waits for a reaction"


async def test_a_recovery_that_came_after_the_deadline_is_reported_late_and_the_verdict_stands(
    verdicts: Verdicts
) -> None:
    table: dict = {}
    late: list[tuple[str, float]] = []

    async def publish_late(w: Watch, at: float) -> None:
        late.append((w.late_message(at), at))

    judge = Judge(table, verdicts, GRACE, late=30.0, publish_late=publish_late)
    await judge.on_watch("svc:risk-monitor", watch(), now=T0)
    await judge.on_rows("svc:risk-monitor", [row(1.0, kind="heartbeat")], now=T0 + 1)
    await judge.on_tick(list(table), watermark=T0 + 12, now=T0 + 11.5)
    assert [(n, v.status) for n, v in verdicts] == [("back", "FAILED")]
    assert table["svc:risk-monitor"]["c1/back"]["late_until"] == T0 + 41.5, "kept to report late evidence"
    await judge.on_rows("svc:risk-monitor", [row(14.0)], now=T0 + 14)
    assert len(verdicts) == 1, "the verdict stands"
    [(message, at)] = late
    assert at == T0 + 14.0 and "4.000s after the deadline" in message and table == {}


async def test_a_watch_kept_for_late_evidence_leaves_when_the_period_is_over(verdicts: Verdicts) -> None:
    table: dict = {}
    late: list[float] = []

    async def publish_late(w: Watch, at: float) -> None:
        late.append(at)

    judge = Judge(table, verdicts, GRACE, late=5.0, publish_late=publish_late)
    await judge.on_watch("svc:risk-monitor", watch(), now=T0)
    await judge.on_rows("svc:risk-monitor", [row(1.0, kind="heartbeat")], now=T0 + 1)
    await judge.on_tick(list(table), watermark=T0 + 12, now=T0 + 11.5)
    await judge.on_tick(list(table), watermark=T0 + 17, now=T0 + 17)
    assert table == {} and late == []


async def test_platform_events_heard_before_the_watch_do_not_count_as_the_service_reacting(
    verdicts: Verdicts
) -> None:
    table: dict = {}
    judge = Judge(table, verdicts, GRACE)
    started = Row("risk-monitor", "process_started", T0 + 0.3, "", {"platform": "supervisor"}, "p#1", "5151")
    await judge.on_rows("svc:risk-monitor", [started], now=T0 + 0.3)
    await judge.on_watch("svc:risk-monitor", watch(name="@reaction", kind="reaction", event_type=""), now=T0 + 1)
    assert verdicts == [], "the platform's event is not the service's"
    await judge.on_rows("svc:risk-monitor", [row(0.5, kind="service_started")], now=T0 + 1.1)
    assert [(n, v.status) for n, v in verdicts] == [("@reaction", "PASSED")]
    assert "0.500s after the injection" in verdicts[0][1].reason


async def test_only_after_reaches_the_watch_from_the_chaos_event_and_its_bucket_hears_the_gate(
        verdicts: Verdicts) -> None:
    from agent._proto.coordinator.v1 import events_pb2
    from agent.worker.judge import watches_from

    kind = events_pb2.EXPECTATION_KIND_APPEARS
    event = events_pb2.ChaosEvent(
        execution_id="e1", correlation_id="c1", service="risk-monitor", type=events_pb2.CHAOS_EVENT_TYPE_INJECTED,
        expectations=[events_pb2.Expectation(name="ready", kind=kind, event_type="service_ready",
                                             service="risk-monitor", match={"phase": "warm"}),
                      events_pb2.Expectation(name="reports", kind=kind, event_type="risk_report",
                                             service="risk-monitor", only_after="ready")])
    event.injected_at.FromSeconds(int(T0))
    for e in event.expectations:
        e.within.FromSeconds(10)
    _, reports, _ = watches_from(event)
    assert (reports.gate, reports.gate_type, reports.gate_match) == ("ready", "service_ready", {"phase": "warm"})
    judge = Judge({}, verdicts, GRACE)
    await judge.on_watch(routing_key(reports), reports, now=T0)
    await judge.on_rows("svc:risk-monitor", [row(0.1, kind="risk_report")], now=T0 + 0.1)
    await judge.on_rows("svc:risk-monitor", [Row("risk-monitor", "service_ready", T0 + 2, "", {"phase": "warm"})],
                        now=T0 + 2)
    assert verdicts == [], "the report before ready is held"
    await judge.on_rows("svc:risk-monitor", [row(3.0, kind="risk_report")], now=T0 + 3)
    assert [(n, v.status, v.time_to_recover) for n, v in verdicts] == [("reports", "PASSED", 3.0)]


def test_rows_too_many_for_one_inbox_record_go_in_several_each_small_enough_in_order() -> None:
    from agent.worker.judge import RowsMessage, decode, encode_rows

    rows = {f"svc:s{k}": [Row(f"s{k}", "take_order", 1000.0 + i, "", {"span.name": "take_order", "n": str(i)},
                              f"otlp-span#{k}-{i}") for i in range(400)] for k in range(5)}
    values = encode_rows(RowsMessage(rows, 1.0, 2.0), limit=20_000)
    assert len(values) > 5 and all(len(v) <= 20_000 for v in values)
    back: dict[str, list[Row]] = {}
    for value in values:
        message = decode(value)
        assert isinstance(message, RowsMessage) and (message.fetched_at, message.routed_at) == (1.0, 2.0)
        for key, part in message.by_key.items():
            back.setdefault(key, []).extend(part)
    assert back == rows, "every row once, in order per key"
    [alone] = encode_rows(RowsMessage({"svc:s": [Row("s", "log", 1.0, "", {"big": "x" * 50_000}, "i")]}, 0, 0),
                          limit=20_000)
    [row] = decode(alone).by_key["svc:s"]  # type: ignore[union-attr]
    assert row.metadata == {"big": "x" * 256} and row.identity == "i"
