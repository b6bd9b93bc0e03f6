"""Run the agent's own commands as real subprocesses, as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agent.children import terminate


@contextmanager
def coordinator_serve(env: dict[str, str], *args: str, timeout: float = 20.0) -> Iterator[str]:
    """Start ``coordinator serve --http-port 0``; yield its base URL; SIGTERM it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--http-port", "0", "--grpc-port", "0", *args],
        env={**os.environ, **env, "COORDINATOR_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                yield found.group(1)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"coordinator serve did not start: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        terminate(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
