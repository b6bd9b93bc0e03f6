"""Our own long-running commands (``coordinator serve``, ``coordinator worker``) as child processes:
started with a log file, ready when a line of the log says so, stopped with SIGTERM (SIGKILL after
a grace period). The demo uses them; so do the integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


class ChildFailed(RuntimeError):
    """A child exited, or did not become ready, in time; the message ends with its log's tail."""


@dataclass
class Child:
    #: arguments to ``coordinator`` (``python -m agent.cli``)
    command: tuple[str, ...]
    env: dict[str, str]
    log: Path
    #: a regular expression that a ready child writes to its log; its first group is kept in ``found``
    ready: str
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    found: str = ""
    _offset: int = field(default=0)

    def start(self, timeout: float = 30.0) -> Child:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as handle:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", *self.command],
                env={**os.environ, **self.env, "COORDINATOR_LOG_FORMAT": "json"}, cwd=self.cwd,
                stdout=handle, stderr=handle, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            matched = re.search(self.ready, self.output())
            if matched:
                self.found = matched.group(1) if matched.groups() else ""
                return self
            if self.proc.poll() is not None:
                raise ChildFailed(f"'{' '.join(self.command)}' exited ({self.proc.returncode}):\n"
                                  f"{self.output()[-3000:]}")
            time.sleep(0.1)
        raise ChildFailed(f"'{' '.join(self.command)}' not ready within {timeout:g}s:\n{self.output()[-3000:]}")

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

    def stop(self, grace: float = 60.0) -> None:
        if self.proc is not None:
            terminate(self.proc, grace)


def terminate(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; a process already gone is fine."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
