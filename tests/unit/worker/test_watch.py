"""How one expectation of one injection is decided from audit events (no Kafka)."""

from __future__ import annotations

from agent.expectations import FAILED, INCONCLUSIVE, PASSED, AuditObservation, Watch

T0 = 1_800_000_000.0  # the injection
CID = "4e7d9c1a-0000-4000-8000-00000000000a"
GRACE = 2.0


def watch(**overrides: object) -> Watch:
    fields: dict = {"execution_id": "e1", "correlation_id": CID, "name": "back", "kind": "appears",
                    "injected_at": T0, "deadline": T0 + 10, "target_service": "risk-monitor",
                    "event_type": "service_ready", "service": "risk-monitor", "attribution": "any"}
    fields.update(overrides)
    return Watch(**fields)


def event(at: float, kind: str = "service_ready", service: str = "risk-monitor", cid: str = "", **meta: str
          ) -> AuditObservation:
    return AuditObservation(service=service, event_type=kind, timestamp=T0 + at, correlation_id=cid, metadata=meta)


def test_a_recovery_event_within_the_deadline_passes_at_once_with_its_time_to_recover() -> None:
    w = watch()
    assert w.observe(event(4.25), GRACE)
    verdict = w.decide(now=T0 + 4.3, watermark=T0 + 4.25, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED
    assert verdict.time_to_recover == 4.25
    assert verdict.first_seen_at == T0 + 4.25
    assert w.decide(now=T0 + 100, watermark=T0 + 100, grace=GRACE) is None, "decided once"


def test_the_same_event_after_the_deadline_fails_and_says_both_times() -> None:
    w = watch()
    w.observe(event(11.0), GRACE)
    assert w.decide(now=T0 + 11.5, watermark=T0 + 11.0, grace=GRACE) is None, "grace for late events"
    verdict = w.decide(now=T0 + 12.1, watermark=T0 + 11.0, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert "11.000s after the injection" in verdict.reason
    assert "after the deadline" in verdict.reason and "T" in verdict.reason
    assert verdict.first_seen_at == T0 + 11.0 and verdict.time_to_recover == 11.0
    assert verdict.expected.startswith("'service_ready from risk-monitor' by ")


def test_a_silent_audit_trail_gives_inconclusive_not_failed() -> None:
    w = watch()
    verdict = w.decide(now=T0 + 12.5, watermark=T0 - 30, grace=GRACE)
    assert verdict is not None and verdict.status == INCONCLUSIVE
    assert "silent" in verdict.reason


def test_a_missing_recovery_on_a_live_trail_fails() -> None:
    w = watch()
    w.observe(event(3, kind="risk_report"), GRACE)
    verdict = w.decide(now=T0 + 12.5, watermark=T0 + 12, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert verdict.reason.startswith("no 'service_ready from risk-monitor' by the deadline")


def test_an_event_with_another_correlation_id_changes_nothing() -> None:
    w = watch(attribution="correlation-id")
    assert not w.observe(event(2, cid="0000aaaa-0000-4000-8000-000000000000"), GRACE)
    assert w.first_seen is None and w.count == 0
    assert w.observe(event(3, cid=CID), GRACE)


def test_target_window_attributes_a_restarted_service_that_does_not_know_the_id() -> None:
    w = watch(attribution="target-window", kind="time_to_recover", deadline=T0 + 15)
    assert not w.observe(event(-1), GRACE), "before the injection"
    assert not w.observe(event(2, service="trading-engine"), GRACE), "another service"
    assert w.observe(event(6.5), GRACE)
    verdict = w.decide(now=T0 + 7, watermark=T0 + 7, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED and verdict.time_to_recover == 6.5


def test_absent_fails_on_a_match_and_passes_only_on_a_live_trail() -> None:
    bad = watch(kind="absent", event_type="order_lost", service="", target_service="risk-monitor")
    bad.observe(event(5, kind="order_lost", service="audit-correlator", cid=CID), GRACE)
    verdict = bad.decide(now=T0 + 5, watermark=T0 + 5, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    good = watch(kind="absent", event_type="order_lost", service="")
    assert good.decide(now=T0 + 12.5, watermark=T0 + 10.5, grace=GRACE).status == PASSED  # type: ignore[union-attr]
    silent = watch(kind="absent", event_type="order_lost", service="")
    assert silent.decide(now=T0 + 12.5, watermark=T0 + 9, grace=GRACE).status == INCONCLUSIVE  # type: ignore[union-attr]


def test_count_bounds() -> None:
    w = watch(kind="count", event_type="order_filled", service="trading-engine", min_count=2, max_count=3)
    for at in (1, 2, 3):
        w.observe(event(at, kind="order_filled", service="trading-engine"), GRACE)
    assert w.decide(now=T0 + 4, watermark=T0 + 4, grace=GRACE) is None
    w.observe(event(4, kind="order_filled", service="trading-engine"), GRACE)
    verdict = w.decide(now=T0 + 4, watermark=T0 + 4, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED and "more than 3" in verdict.reason
    few = watch(kind="count", event_type="order_filled", service="trading-engine", min_count=2, max_count=-1)
    few.observe(event(1, kind="order_filled", service="trading-engine"), GRACE)
    verdict = few.decide(now=T0 + 13, watermark=T0 + 11, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED and "fewer than 2" in verdict.reason


def test_order_needs_the_sequence_in_order_by_the_deadline() -> None:
    w = watch(kind="order", event_type="", sequence=["service_started", "service_ready"])
    assert not w.observe(event(1, kind="service_ready"), GRACE), "out of order"
    assert w.observe(event(2, kind="service_started"), GRACE)
    assert w.observe(event(3, kind="service_ready"), GRACE)
    verdict = w.decide(now=T0 + 3, watermark=T0 + 3, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED
    stuck = watch(kind="order", event_type="", sequence=["service_started", "service_ready"])
    stuck.observe(event(2, kind="service_started"), GRACE)
    verdict = stuck.decide(now=T0 + 13, watermark=T0 + 12, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED and "after 1 of 2" in verdict.reason


def test_metadata_must_match() -> None:
    w = watch(match={"venue": "sim-exchange"})
    assert not w.observe(event(1, venue="other"), GRACE)
    assert w.observe(event(2, venue="sim-exchange"), GRACE)


def test_watches_survive_serialisation() -> None:
    w = watch()
    w.observe(event(1), GRACE)
    assert Watch.from_dict(w.to_dict()) == w


def test_recent_observations_are_bounded_per_key() -> None:
    from agent.worker.judge import RECENT_PER_KEY, Judge, Row

    judge = Judge({}, None, GRACE)  # type: ignore[arg-type]
    judge.remember("svc:a", [Row("a", "up", T0 + i / 1000, "", {}) for i in range(RECENT_PER_KEY + 5)])
    kept = list(judge.recent["svc:a"])
    assert len(kept) == RECENT_PER_KEY
    assert kept[-1].at == T0 + (RECENT_PER_KEY + 4) / 1000, "the newest are kept"


def test_a_bucket_wants_the_event_types_its_watches_can_use() -> None:
    from agent.worker.judge import _event_types

    ready = watch(kind="appears", event_type="service_ready").to_dict()
    order = watch(kind="order", event_type="", sequence=["a", "b"]).to_dict()
    anything = watch(kind="count", event_type="").to_dict()
    assert _event_types({"1": ready, "2": order}) == {"service_ready", "a", "b"}
    assert _event_types({"1": ready, "3": anything}) is None, "a watch of any type takes every event"


def test_an_audit_row_takes_the_correlation_id_from_the_header_and_the_time_from_the_record() -> None:
    from agent import codec
    from agent._proto.coordinator.v1 import events_pb2
    from agent.worker.judge import Row, row_from

    event = events_pb2.AuditEvent(id="1", service_name="risk-monitor", event_type="service_ready",
                                  metadata={"region": "eu"})
    out = codec.encode_event(event, key="k", source="/t", correlation_id="cid-1")
    row = row_from(out.value, out.headers, 1_700_000_000_500)
    ce_id = codec.headers_to_dict(out.headers)["ce_id"]
    assert row == ("risk-monitor", "service_ready", 1_700_000_000.5, "cid-1", {"region": "eu"}, f"/t#{ce_id}", "")
    assert row.observation().correlation_id == "cid-1" and row.observation().event_id == f"/t#{ce_id}"
    bare = row_from(event.SerializeToString(), [], 1_700_000_000_500)  # no CloudEvents headers: the payload's
    assert bare.identity == "risk-monitor#1"
    assert Row(*list(bare)[:5]).observation().event_id == "", "a row from an older worker still reads"


def test_window_attribution_counts_a_loss_reported_by_any_service_inside_the_window() -> None:
    def no_loss(attribution: str) -> Watch:
        return watch(kind="absent", event_type="order_lost", service="", attribution=attribution)

    reported_elsewhere = event(3.0, kind="order_lost", service="load-generator")
    system_wide = no_loss("window")
    assert system_wide.observe(reported_elsewhere, GRACE)
    verdict = system_wide.decide(now=T0 + 3.1, watermark=T0 + 3.0, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert not no_loss("any").observe(reported_elsewhere, GRACE), "any: only the target's events or the id"
    assert not no_loss("window").observe(event(-1.0, kind="order_lost", service="load-generator"), GRACE), \
        "before the injection"
    assert not watch(kind="absent", event_type="order_lost", service="trading-engine", attribution="window"
                     ).observe(reported_elsewhere, GRACE), "the expectation's service still filters"


def test_an_event_delivered_twice_counts_once_for_every_kind_of_expectation() -> None:
    def twice(w: Watch, *events: AuditObservation) -> Watch:
        for e in events:
            w.observe(e, GRACE)
            w.observe(e, GRACE)  # the same event (same identity) delivered again
        return w

    ready = AuditObservation("risk-monitor", "service_ready", T0 + 1, event_id="/sim/risk-monitor#a")
    once = twice(watch(kind="count", min_count=None, max_count=1), ready)
    verdict = once.decide(now=T0 + 13, watermark=T0 + 12, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED and verdict.count == 1, verdict

    other = AuditObservation("risk-monitor", "service_ready", T0 + 2, event_id="/sim/risk-monitor#b")
    two_events = twice(watch(kind="count", min_count=None, max_count=1), ready, other)
    verdict = two_events.decide(now=T0 + 3, watermark=T0 + 2, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED and "2 times" in verdict.reason

    no_ids = AuditObservation("risk-monitor", "service_ready", T0 + 1)
    counted = twice(watch(kind="count", min_count=None, max_count=5), no_ids)
    assert counted.count == 2, "without an identity every delivery counts"

    stopping, started = (AuditObservation("risk-monitor", kind, T0 + at, event_id=f"s#{kind}")
                         for at, kind in ((1, "service_stopping"), (2, "service_started")))
    ordered = watch(kind="order", sequence=["service_stopping", "service_started", "service_stopping"])
    for e in (stopping, started, stopping):  # the first 'service_stopping' delivered again, late
        ordered.observe(e, GRACE)
    assert len(ordered.sequence_seen) == 2, "a repeated 'service_stopping' does not complete the sequence"
    assert Watch.from_dict(ordered.to_dict()).counted_ids == ["s#service_stopping", "s#service_started"]


def test_a_silent_service_is_inconclusive_and_one_that_spoke_of_other_things_fails() -> None:
    silent = watch()
    silent.hear("risk-monitor", T0 - 5)  # its last words before the injection
    silent.hear("trading-engine", T0 + 3)  # another service is no evidence about this one
    verdict = silent.decide(now=T0 + 13, watermark=T0 + 12, grace=GRACE)
    assert verdict is not None and verdict.status == INCONCLUSIVE, verdict
    assert "no audit event from risk-monitor since the injection" in verdict.reason
    assert "the last one at" in verdict.reason and "silent service" in verdict.reason

    spoke = watch()
    assert spoke.hear("risk-monitor", T0 + 3)
    assert not spoke.observe(event(3.5, kind="risk_report"), GRACE), "not the expected type"
    verdict = spoke.decide(now=T0 + 13, watermark=T0 + 12, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert "no 'service_ready from risk-monitor' by the deadline" in verdict.reason
    assert "risk-monitor did send audit events since the injection" in verdict.reason

    quiet_but_absent = watch(kind="absent", event_type="order_lost")
    verdict = quiet_but_absent.decide(now=T0 + 13, watermark=T0 + 12, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED, "absence is judged as before"


def test_an_expectation_of_any_event_from_a_service_passes_on_whatever_it_says() -> None:
    anything = watch(event_type="")
    assert anything.observe(event(2.0, kind="risk_report"), GRACE)
    verdict = anything.decide(now=T0 + 2.1, watermark=T0 + 2.0, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED and "'event from risk-monitor'" in verdict.reason


def old_or_new(at: float, instance: str, kind: str = "risk_report") -> AuditObservation:
    return AuditObservation(service="risk-monitor", event_type=kind, timestamp=T0 + at, instance=instance)


def test_the_last_words_of_the_process_a_fault_ended_are_not_recovery() -> None:
    w = watch(kind="time_to_recover", event_type="risk_report", ended_instance="4242")
    assert w.observe(old_or_new(0.086, "4242"), GRACE) and w.old_words == 1 and w.first_seen is None, \
        "sent by the process being stopped: noted, not counted"
    assert w.decide(now=T0 + 1, watermark=T0 + 1, grace=GRACE) is None
    assert w.observe(old_or_new(4.0, "5151"), GRACE)
    verdict = w.decide(now=T0 + 4.1, watermark=T0 + 4.0, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED and verdict.time_to_recover == 4.0


def test_last_words_delivered_or_replayed_again_are_counted_once_in_the_reason() -> None:
    w = watch(kind="time_to_recover", event_type="risk_report", ended_instance="4242")
    last = AuditObservation(service="risk-monitor", event_type="risk_report", timestamp=T0 + 0.1, instance="4242",
                            event_id="risk-monitor#e1")
    assert w.observe(last, GRACE)
    for _ in range(3):  # redelivered, and replayed from the worker's buffer when the watch arrived
        assert not w.observe(last, GRACE), "nothing new learnt from a repeat"
    other = AuditObservation(service="risk-monitor", event_type="risk_report", timestamp=T0 + 0.2, instance="4242",
                             event_id="risk-monitor#e2")
    assert w.observe(other, GRACE) and w.old_words == 2
    verdict = w.decide(now=T0 + 13, watermark=T0 + 13, grace=GRACE)
    assert verdict is not None and "2 matching event(s) came from the incarnation the fault ended" in verdict.reason


def test_a_service_that_only_spoke_through_its_old_incarnation_is_silent_and_the_verdict_says_so() -> None:
    w = watch(kind="time_to_recover", event_type="risk_report", ended_instance="4242")
    w.observe(old_or_new(0.1, "4242"), GRACE)
    w.observe(old_or_new(0.2, "4242", kind="service_stopping"), GRACE)
    verdict = w.decide(now=T0 + 13, watermark=T0 + 13, grace=GRACE)
    assert verdict is not None and verdict.status == INCONCLUSIVE
    assert "no audit event from risk-monitor since the injection" in verdict.reason
    assert "1 matching event(s) came from the incarnation the fault ended (risk-monitor 4242" in verdict.reason


def test_events_without_an_instance_and_rules_of_absence_are_unchanged() -> None:
    anonymous = watch(kind="appears", event_type="risk_report", ended_instance="4242")
    assert anonymous.observe(old_or_new(0.1, ""), GRACE), "an event that does not say where it came from counts"
    lost = watch(kind="absent", event_type="order_lost", service="risk-monitor", ended_instance="4242")
    assert lost.observe(old_or_new(0.1, "4242", kind="order_lost"), GRACE), "what the old process lost is lost"
    verdict = lost.decide(now=T0 + 0.2, watermark=T0 + 0.2, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED


def test_an_audit_row_reads_the_instance_from_the_payload_or_its_metadata() -> None:
    from agent._proto.coordinator.v1 import events_pb2
    from agent.worker.judge import row_from

    field = events_pb2.AuditEvent(id="1", service_name="a", event_type="x", instance="77")
    meta = events_pb2.AuditEvent(id="2", service_name="a", event_type="x", metadata={"instance": "78"})
    assert row_from(field.SerializeToString(), [], 1).instance == "77"
    assert row_from(meta.SerializeToString(), [], 1).instance == "78"


def stable(**overrides: object) -> Watch:
    fields: dict = {"kind": "stable", "event_type": "", "stable_for": 10.0, "since": "service_ready",
                    "down": ["process_exited", "service_stopping", "service_started"], "deadline": T0 + 60 + 10,
                    "ended_instance": "4242"}
    fields.update(overrides)
    return watch(**fields)


def up_or_down(at: float, kind: str, instance: str = "5151", **meta: str) -> AuditObservation:
    return AuditObservation(service="risk-monitor", event_type=kind, timestamp=T0 + at, instance=instance,
                            metadata=meta)


def test_a_service_that_stays_up_after_it_came_back_passes_once_the_period_is_over() -> None:
    w = stable()
    w.observe(up_or_down(0.2, "service_stopping", instance="4242"), GRACE)  # the fault itself
    w.observe(up_or_down(0.5, "process_exited", instance="4242", platform="supervisor", exit_status="0"), GRACE)
    assert w.observe(up_or_down(3.0, "service_ready"), GRACE)
    assert w.decide(now=T0 + 14.5, watermark=T0 + 14.5, grace=GRACE) is None, "the grace period is not over"
    verdict = w.decide(now=T0 + 15.1, watermark=T0 + 14.5, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED, verdict
    assert "stayed up for 10.000s after its 'service_ready'" in verdict.reason and verdict.time_to_recover == 3.0


def test_a_crash_after_recovery_fails_stable_at_once_and_names_the_exit() -> None:
    w = stable()
    w.observe(up_or_down(3.0, "service_ready"), GRACE)
    assert w.observe(up_or_down(7.5, "process_exited", platform="supervisor", exit_status="3"), GRACE)
    verdict = w.decide(now=T0 + 7.6, watermark=T0 + 7.5, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert "went down 4.500s after its 'service_ready'" in verdict.reason
    assert "process_exited (exit status 3)" in verdict.reason


def test_a_service_that_never_comes_up_fails_stable_and_a_silent_one_is_inconclusive() -> None:
    w = stable()
    w.observe(up_or_down(5.0, "heartbeat"), GRACE)
    verdict = w.decide(now=T0 + 80, watermark=T0 + 80, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED and "never came up" in verdict.reason
    quiet = stable()
    quiet.observe(up_or_down(5.0, "process_started", platform="supervisor"), GRACE)
    verdict = quiet.decide(now=T0 + 80, watermark=T0 + 80, grace=GRACE)
    assert verdict is not None and verdict.status == INCONCLUSIVE, "the platform speaking is not the service"
    pods = stable(since="pod_ready")  # up means Ready, as the platform says: its words are the evidence
    pods.observe(up_or_down(5.0, "process_exited", platform="kubernetes"), GRACE)
    verdict = pods.decide(now=T0 + 80, watermark=T0 + 80, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED and "never came up" in verdict.reason


def test_a_stable_expectation_names_one_service_and_reads_for() -> None:
    from agent.errors import ScenarioError
    from agent.scenario import load_scenario

    doc = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: s}
spec:
  targets: {rm: {driver: supervisor, selector: {program: risk-monitor}}}
  steps: [{name: restart-it, fault: restart, target: rm}]
  expectations:
    - {name: stays-up, after: restart-it, event: {service: risk-monitor}, stable: {for: 30s, within: 20s}}
"""
    scenario = load_scenario(doc, "s.yaml")
    rule = scenario.spec.expectations[0]
    assert rule.kind == "stable" and rule.deadline == 50.0 and rule.stable is not None
    assert rule.stable.for_ == 30.0 and rule.stable.down == ["process_exited", "service_stopping", "service_started"]
    try:
        load_scenario(doc.replace("event: {service: risk-monitor}", "event: {type: service_ready}"), "s.yaml")
    except ScenarioError as exc:
        assert "a stable expectation watches one service" in str(exc)
    else:
        raise AssertionError("a stable expectation without a service was accepted")


def gated(**overrides: object) -> Watch:
    """"risk reports resume", counted only after the risk monitor's service_ready."""
    fields: dict = {"kind": "appears", "event_type": "risk_report", "gate": "ready-again",
                    "gate_type": "service_ready"}
    fields.update(overrides)
    return watch(**fields)


def test_only_after_holds_what_comes_before_the_named_event_and_counts_what_follows() -> None:
    w = gated()
    assert w.observe(event(0.086, kind="risk_report"), GRACE), "the stopping process's report: held"
    assert w.first_seen is None and w.held_count == 1
    assert w.decide(now=T0 + 1, watermark=T0 + 1, grace=GRACE) is None
    assert w.observe(event(3.0), GRACE) and w.gate_at == T0 + 3.0, "service_ready opens it"
    assert w.first_seen is None, "the held report is older than the gate: still not counted"
    w.observe(event(4.0, kind="risk_report"), GRACE)
    verdict = w.decide(now=T0 + 4.1, watermark=T0 + 4.0, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED and verdict.time_to_recover == 4.0


def test_only_after_fails_naming_the_held_events_when_nothing_came_after_the_gate() -> None:
    w = gated()
    w.observe(event(0.086, kind="risk_report"), GRACE)
    w.observe(event(3.0), GRACE)
    verdict = w.decide(now=T0 + 13, watermark=T0 + 13, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert "1 matching event(s) came before 'ready-again' (service_ready at " in verdict.reason
    assert "and do not count" in verdict.reason


def test_only_after_counts_held_events_when_an_earlier_gate_event_arrives_late() -> None:
    w = gated()
    assert w.observe(event(5.0, kind="risk_report"), GRACE) and w.first_seen is None
    w.observe(event(4.0), GRACE)  # delivered after the report, stamped before it
    verdict = w.decide(now=T0 + 5.1, watermark=T0 + 5.0, grace=GRACE)
    assert verdict is not None and verdict.status == PASSED and verdict.first_seen_at == T0 + 5.0
    assert w.held_count == 0


def test_only_after_whose_event_never_came_fails_presence_and_leaves_absence_inconclusive() -> None:
    for kind, status in (("appears", FAILED), ("absent", INCONCLUSIVE)):
        w = gated(kind=kind)
        w.observe(event(1.0, kind="risk_report"), GRACE)
        verdict = w.decide(now=T0 + 13, watermark=T0 + 13, grace=GRACE)
        assert verdict is not None and verdict.status == status, kind
        assert verdict.reason.startswith("no 'risk_report from risk-monitor' after 'ready-again', which never came: "
                                         "no 'service_ready from risk-monitor' since the injection"), verdict.reason
        assert "1 matching event(s) came before 'ready-again' (which never came)" in verdict.reason


def test_only_after_ignores_a_gate_event_from_the_ended_incarnation_the_platform_or_another_match() -> None:
    w = gated(ended_instance="4242", gate_match={"phase": "warm"})
    assert not w.observe(AuditObservation("risk-monitor", "service_ready", T0 + 1, metadata={"phase": "warm"},
                                          instance="4242"), GRACE)
    assert not w.observe(event(1.5, phase="cold"), GRACE)
    assert not w.observe(event(1.6, phase="warm", platform="supervisor"), GRACE)
    assert not w.observe(event(-1.0, phase="warm"), GRACE), "before the injection"
    assert w.gate_at is None
    assert w.observe(event(2.0, phase="warm"), GRACE) and w.gate_at == T0 + 2.0


def test_a_held_event_delivered_twice_is_held_once_and_the_hold_is_bounded() -> None:
    from agent.expectations import MAX_HELD
    w = gated()
    once = AuditObservation("risk-monitor", "risk_report", T0 + 0.5, event_id="/sim/risk-monitor#1")
    assert w.observe(once, GRACE) and not w.observe(once, GRACE) and w.held_count == 1
    for i in range(MAX_HELD + 20):
        w.observe(event(1.0 + i / 1000, kind="risk_report"), GRACE)
    assert len(w.held) == MAX_HELD and w.held_count == MAX_HELD + 21
    assert Watch.from_dict(w.to_dict()) == w, "held events survive the table's JSON"


def test_only_after_still_names_the_ended_incarnations_words_as_such() -> None:
    w = gated(ended_instance="4242")
    assert w.observe(old_or_new(0.1, "4242"), GRACE) and w.old_words == 1 and w.held_count == 0
    w.observe(old_or_new(2.0, "5151", kind="service_ready"), GRACE)
    verdict = w.decide(now=T0 + 13, watermark=T0 + 13, grace=GRACE)
    assert verdict is not None and verdict.status == FAILED
    assert "came from the incarnation the fault ended (risk-monitor 4242" in verdict.reason
