"""What the relay sends for one event under each relay fault (pure logic, no Kafka)."""

from __future__ import annotations

import random

from agent.relay import apply_faults

CID = "6f1c2d3e-0000-4000-8000-000000000001"
ORIGINAL = [("ce_type", b"orders.v1.Order"), ("correlation-id", b"upstream-id")]


def _fault(kind: str, **params: object) -> dict[str, dict]:
    return {CID: {"fault": kind, "parameters": params}}


def _headers(out: object) -> dict[str, bytes]:
    return dict(out.headers)  # type: ignore[attr-defined]


def test_without_faults_events_pass_unchanged() -> None:
    [out] = apply_faults(b"v", ORIGINAL, {}, random.Random(1))
    assert (out.delay, out.value, out.headers) == (0.0, b"v", ORIGINAL)


def test_duplicates_are_tagged_with_the_injection_and_keep_the_original_id() -> None:
    outs = apply_faults(b"v", ORIGINAL, _fault("duplicate-events", copies=2), random.Random(1))
    assert [o.value for o in outs] == [b"v", b"v", b"v"]
    for out in outs:
        assert _headers(out)["correlation-id"] == CID.encode()
        assert _headers(out)["original-correlation-id"] == b"upstream-id"
        assert _headers(out)["ce_type"] == b"orders.v1.Order"


def test_a_traced_injection_puts_its_trace_context_on_what_it_touches() -> None:
    injection = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    fault = {CID: {"fault": "duplicate-events", "parameters": {"copies": 1}, "traceparent": injection}}
    outs = apply_faults(b"v", [*ORIGINAL, ("traceparent", upstream.encode())], fault, random.Random(1))
    assert len(outs) == 2
    for out in outs:
        assert _headers(out)["traceparent"] == injection.encode()
        assert _headers(out)["original-traceparent"] == upstream.encode()
    [untraced] = apply_faults(b"v", ORIGINAL, _fault("delay-events", delay=0.1), random.Random(1))
    assert "traceparent" not in _headers(untraced)


def test_dropped_events_are_not_sent() -> None:
    assert apply_faults(b"v", ORIGINAL, _fault("drop-events"), random.Random(1)) == []


def test_delay_postpones_and_corrupt_damages() -> None:
    [late] = apply_faults(b"v", [], _fault("delay-events", delay=1.5), random.Random(1))
    assert late.delay == 1.5
    [bad] = apply_faults(b"0123456789abcdef", [], _fault("corrupt-events", mode="truncate"), random.Random(1))
    assert bad.value == b"01234567"
    [flipped] = apply_faults(b"0123456789abcdef", [], _fault("corrupt-events", mode="flip-bits"), random.Random(1))
    assert flipped.value != b"0123456789abcdef" and len(flipped.value) == 16


def test_probability_and_header_match_choose_the_events_affected() -> None:
    rng = random.Random(7)
    outs = [apply_faults(b"v", [], _fault("drop-events", probability=0.5), rng) for _ in range(1000)]
    dropped = sum(1 for o in outs if not o)
    assert 400 < dropped < 600
    kept = apply_faults(b"v", [("venue", b"a")], _fault("drop-events", match_headers={"venue": "b"}), rng)
    assert len(kept) == 1 and "correlation-id" not in _headers(kept[0])


def test_faults_compose() -> None:
    faults = {**_fault("duplicate-events", copies=1), "7f1c2d3e-0000-4000-8000-000000000002": {
        "fault": "delay-events", "parameters": {"delay": 2}}}
    outs = apply_faults(b"v", [], faults, random.Random(1))
    assert [o.delay for o in outs] == [2.0, 2.0]
