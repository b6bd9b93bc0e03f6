"""The agent as a user runs it: ``coordinator serve`` in a subprocess, pointed at the real stack."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.processes import terminate

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AgentProcess:
    """``coordinator serve`` (or another long-running command, e.g. ``("worker", "--loglevel", "info")``)."""

    env: dict[str, str]
    log: Path
    command: tuple[str, ...] = ("serve", "--http-port", "0")
    ready: str = r"listening on (http://\S+)"
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    _offset: int = field(default=0)

    def start(self, timeout: float = 30.0) -> AgentProcess:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        handle = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *self.command],
            env={**os.environ, **self.env, "COORDINATOR_LOG_FORMAT": "json"}, cwd=ROOT,
            stdout=handle, stderr=handle,
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(self.ready, self.output())
            if found:
                self.url = found.group(1) if found.groups() else ""
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"the agent did not start:\n{self.output()[-3000:]}")

    def output(self) -> str:
        with open(self.log, "rb") as handle:
            handle.seek(self._offset)
            return handle.read().decode(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace=60)
