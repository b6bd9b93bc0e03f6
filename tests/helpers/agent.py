"""The agent as a user runs it: ``coordinator serve`` (or ``worker``) in a subprocess, pointed at the
real stack (``agent.children.Child``, which the demo uses too)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.children import Child

ROOT = Path(__file__).resolve().parents[2]


class AgentProcess(Child):
    """``coordinator serve`` by default, or another long-running command with its ready line, e.g.
    ``AgentProcess(env, log, ("worker", "--loglevel", "info"), r"Ready")``."""

    def __init__(self, env: dict[str, str], log: Path,
                 command: tuple[str, ...] = ("serve", "--http-port", "0", "--grpc-port", "0"),
                 ready: str = r"listening on (http://\S+)") -> None:
        super().__init__(command=command, env=env, log=log, ready=ready, cwd=ROOT)

    @property
    def url(self) -> str:
        return self.found


@contextmanager
def worker_and_agent(env: dict[str, str], logs: Path) -> Iterator[tuple[AgentProcess, AgentProcess]]:
    """The stream worker, then ``coordinator serve``, on ``env``; both stopped afterwards."""
    worker = AgentProcess(env, logs / "worker.log", ("worker", "--loglevel", "info"), r"Ready").start(timeout=90)
    try:
        agent = AgentProcess(env, logs / "agent.log").start()
        try:
            yield worker, agent
        finally:
            agent.stop()
    finally:
        worker.stop()
