"""The README's first command, as a user runs it: ``coordinator demo`` from start to teardown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_the_demo_runs_the_flagship_prints_a_passing_verdict_with_time_to_recover_and_leaves_nothing(
    tmp_path: Path
) -> None:
    done = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--dir", str(tmp_path / "demo")], cwd=ROOT,
                          capture_output=True, text=True, timeout=220)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "FAULT    restart risk-monitor (correlation id " in out
    assert "AUDIT    risk-monitor: service_ready" in out
    assert "VERDICT  risk-monitor-ready-again: PASSED" in out
    assert "VERDICT: PASSED" in out
    assert "time to recover: " in out
    trail = re.search(r"orders during the run, from the audit trail: ([1-9]\d*) accepted, ([1-9]\d*) filled, "
                      r"0 reported lost by the trading engine", out)
    assert trail, out
    assert re.search(r"the load generator's own count: [1-9]\d* sent, [1-9]\d* fills received", out), out
    assert out.rstrip().endswith("everything stopped; nothing left running")
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True)
    assert leftovers.stdout == "", f"processes left running: {leftovers.stdout}"

