"""The demo's live display, without a stack: what a user reads while the flagship runs."""

from __future__ import annotations


def test_a_loss_by_the_hundred_is_one_line_and_a_count() -> None:
    """The live display folds repeats: the first order_lost is shown, the rest counted in one line."""
    import io

    from agent._proto.coordinator.v1 import events_pb2
    from agent.demo import _Commentary, _Printer

    out = io.StringIO()
    say = _Printer(out)
    follow = _Commentary("r-1", say)
    follow.execution_id, follow.injected_at = "e-1", 1000.0
    for i in range(300):
        event = events_pb2.AuditEvent(service_name="trading-engine", event_type="order_lost")
        event.timestamp.FromNanoseconds(int((1003.0 + i / 100) * 1e9))
        follow._show(event)
    follow.flush()
    lines = out.getvalue().splitlines()
    assert lines == ["AUDIT    trading-engine: order_lost (+3.000s after the fault)",
                     "AUDIT    trading-engine: order_lost x299 more (+3.0s .. +6.0s after the fault)"], lines
