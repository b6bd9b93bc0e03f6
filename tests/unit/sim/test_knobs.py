"""Sim knobs: where they come from and how bad values are refused (no processes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sim.knobs import Knobs
from sim.services import order_from_json


def test_the_knobs_file_beats_flags_which_beat_the_environment(tmp_path: Path) -> None:
    knobs_file = tmp_path / "knobs.json"
    knobs_file.write_text(json.dumps({"risk-monitor": {"never_ready": True}, "exchange": {"stall": True}}))
    env = {"SIM_START_DELAY": "2", "SIM_AUDIT_DROP": "0.5", "SIM_KNOBS_FILE": str(knobs_file)}
    knobs = Knobs.load("risk-monitor", {"audit_drop": 0.25, "stall": None}, env=env)
    assert knobs == Knobs(start_delay=2.0, audit_drop=0.25, never_ready=True)
    assert knobs.describe() == "start_delay=2.0, never_ready=True, audit_drop=0.25"
    assert Knobs.load("trading-engine", {}, env=env) == Knobs(start_delay=2.0, audit_drop=0.5)


def test_a_missing_knobs_file_means_no_knobs_from_it(tmp_path: Path) -> None:
    assert Knobs.load("exchange", {}, env={"SIM_KNOBS_FILE": str(tmp_path / "absent.json")}) == Knobs()


@pytest.mark.parametrize(("values", "message"), [
    ({"never_ready": "maybe"}, "knob never_ready='maybe': expected true or false"),
    ({"audit_drop": 1.5}, "knob audit_drop must be between 0 and 1"),
    ({"crash_after": -1}, "knob crash_after=-1: must not be negative"),
    ({"stal": True}, "unknown knob(s) stal; known: start_delay, never_ready"),
])
def test_bad_knobs_are_refused_naming_the_knob(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^knobs: " + re.escape(message)):
        Knobs.parse(values)


def test_a_malformed_order_is_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        order_from_json(b"\xff{")
    with pytest.raises(ValueError, match="missing field\\(s\\): price"):
        order_from_json(json.dumps({"order_id": "o1", "symbol": "X", "side": "BUY", "quantity": 1}).encode())
    with pytest.raises(ValueError, match="side 'HOLD' is not BUY or SELL"):
        order_from_json(json.dumps({"order_id": "o1", "symbol": "X", "side": "HOLD", "quantity": 1,
                                    "price": 1}).encode())
    order = order_from_json(json.dumps({"order_id": "o1", "symbol": "X", "side": "sell", "quantity": 2,
                                        "price": 3.5}).encode())
    assert (order.order_id, order.quantity, order.price) == ("o1", 2.0, 3.5)


def test_every_knob_has_a_command_line_flag() -> None:
    from sim.cli import build_parser

    opts = build_parser().parse_args(["run", "risk-monitor", "--grpc-port", "1", "--http-port", "2",
                                      "--last-words", "risk_report"])
    assert all(hasattr(opts, name) for name in Knobs.names()), [n for n in Knobs.names() if not hasattr(opts, n)]
    assert Knobs.load("risk-monitor", {n: getattr(opts, n) for n in Knobs.names()}, env={}).last_words == "risk_report"


def test_both_down_needs_failures_of_both_peers_close_together() -> None:
    from sim.services import BOTH_DOWN_WINDOW, both_down

    assert both_down({"check": 100.0, "execute": 103.0}, now=103.0)
    assert not both_down({"check": 0.0, "execute": 103.0}, now=103.0), "the exchange alone"
    assert not both_down({"check": 100.0, "execute": 0.0}, now=100.5), "the risk monitor alone"
    assert not both_down({"check": 100.0, "execute": 100.0 + BOTH_DOWN_WINDOW + 1}, now=100.0 + BOTH_DOWN_WINDOW + 1)
    assert Knobs.parse({"forget_when_both_down": "yes"}).forget_when_both_down is True
